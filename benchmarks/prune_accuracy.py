"""Accuracy of the bundled digits CNN after structured pruning at 30% and 50% of its FLOPs removed.

Criteria compared at the same FLOPs (``target_flops``, found by bisection): random filters (mean over
seeds), L1 filter norm (Li et al. 2017), BatchNorm |gamma| (Network Slimming), and the data-driven
prune-channels (LASSO channel selection + least-squares reconstruction, He et al. 2017), plus L1 followed
by the three corrections of prune-filters(reconstruct=true) (bias shift, BatchNorm statistics re-estimated,
least squares) and prune-channels without reconstruction. Calibration data: 512 images
of the model's training split (scikit-learn's bundled digits, split and normalized exactly as in
models/train_digits.py); accuracy: the 450 held-out images (models/digits_heldout.npz).

    .venv/bin/python benchmarks/prune_accuracy.py [--targets 0.3,0.5,0.7] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def training_images(n: int):
    """The digits training split as models/train_digits.py makes it (no torch needed)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_train, _, _, _ = train_test_split(images, digits.target, test_size=450, random_state=0, stratify=digits.target)
    mean, std = x_train.mean(), x_train.std()
    return ((x_train - mean) / std)[:n, None].astype(np.float32)


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--targets", default="0.3,0.5,0.7")
    parser.add_argument("--seeds", type=int, default=5, help="seeds averaged for the random criterion")
    parser.add_argument("--calib", type=int, default=512, help="training images used as calibration data")
    args = parser.parse_args()

    import numpy as np
    import onnx

    from models import DIGITS_HELDOUT, DIGITS_LABELS, DIGITS_MODEL
    from onnxcomp.api import optimize
    from onnxcomp.passes_api import load_pass_library
    from onnxcomp.verify import run_model

    load_pass_library()
    model = onnx.load(str(DIGITS_MODEL))
    x_test = np.load(DIGITS_HELDOUT)["input"]
    y_test = np.load(DIGITS_LABELS)
    calib = {"input": training_images(args.calib)}

    def accuracy(m) -> float:
        return float((run_model(m, {"input": x_test})["logits"].argmax(1) == y_test).mean())

    targets = [float(t) for t in args.targets.split(",")]
    exact = "round_to=1"  # channel counts not rounded: every criterion lands on the same FLOPs
    methods = [
        ("random filters", f"prune-filters(target_flops={{t}},criterion=random,{exact})", True),
        ("L1 filter norm", f"prune-filters(target_flops={{t}},criterion=l1,{exact})", False),
        ("BN |gamma|", f"prune-filters(target_flops={{t}},criterion=bn,{exact})", False),
        ("prune-channels (LASSO + least squares)", f"prune-channels(target_flops={{t}},{exact})", False),
        ("L1 + bias correction", f"prune-filters(target_flops={{t}},reconstruct=true,correction=bias,{exact})", False),
        (
            "L1 + BatchNorm re-estimation",
            f"prune-filters(target_flops={{t}},reconstruct=true,correction=bn,{exact})",
            False,
        ),
        ("L1 + least-squares reconstruction", f"prune-filters(target_flops={{t}},reconstruct=true,{exact})", False),
        ("prune-channels, no reconstruction", f"prune-channels(target_flops={{t}},reconstruct=false,{exact})", False),
    ]
    print(f"digits CNN: {accuracy(model):.2%} held-out accuracy unpruned ({len(y_test)} images)")
    cols = "".join(f"{f'{t:.0%} FLOPs removed':>24s}" for t in targets)
    print(f"{'method':42s}{cols}")
    for label, spec, random in methods:
        cells = []
        for t in targets:
            accs, removed = [], []
            for seed in range(args.seeds if random else 1):
                pruned, report = optimize(model, spec.format(t=t), calib=calib, seed=seed)
                accs.append(accuracy(pruned))
                removed.append(report.passes[0].counters.get("flops_removed", 0.0))
            spread = f" ±{statistics.stdev(accs):.1%}" if len(accs) > 1 else ""
            cells.append(f"{statistics.mean(accs):.2%}{spread} ({statistics.mean(removed):.1%})")
        print(f"{label:42s}" + "".join(f"{c:>24s}" for c in cells))
    print("cells: held-out accuracy (FLOPs actually removed)")


if __name__ == "__main__":
    main()
