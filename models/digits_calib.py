"""Write ``digits_calib.npz``: calibration images for the bundled digits CNN, from its training split.

Lossy passes that take calibration data (prune-channels, Wanda, activation-weighted k-means) must not see the
images their accuracy is measured on. This takes the first 256 images of the training split that
``train_digits.py`` used (scikit-learn's ``load_digits``, the same ``train_test_split`` and normalization;
numpy and scikit-learn only, no torch), checks that the same split reproduces ``digits_heldout.npz`` and
``digits_labels.npy`` exactly, and writes one array keyed ``input`` [256, 1, 8, 8] float32.

Run: ``python models/digits_calib.py``. The README's lossy examples use ``--calib models/digits_calib.npz``
and measure accuracy on ``digits_heldout.npz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLES = 256


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training images, held-out images, held-out labels), normalized as train_digits.py does."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x_train, x_test, _, y_test = train_test_split(images, labels, test_size=450, random_state=0, stratify=labels)
    mean, std = x_train.mean(), x_train.std()
    return (
        ((x_train - mean) / std)[:, None].astype(np.float32),
        ((x_test - mean) / std)[:, None].astype(np.float32),
        y_test,
    )


def main() -> None:
    x_train, x_test, y_test = split()
    if not (np.allclose(x_test, np.load(HERE / "digits_heldout.npz")["input"], atol=1e-6)):
        raise SystemExit("the split does not reproduce digits_heldout.npz (scikit-learn changed?)")
    if not np.array_equal(y_test, np.load(HERE / "digits_labels.npy")):
        raise SystemExit("the split does not reproduce digits_labels.npy")
    np.savez(HERE / "digits_calib.npz", input=x_train[:SAMPLES])
    print(f"wrote {HERE / 'digits_calib.npz'}: {SAMPLES} training-split images")


if __name__ == "__main__":
    main()
