"""Train the bundled digits CNN and export it with its held-out data (dev-only; needs torch).

Trains a small residual CNN on scikit-learn's bundled ``load_digits`` (8x8 grayscale, 10 classes),
deterministically on CPU in a few seconds, and writes next to this file:

- ``digits_cnn.onnx``: input ``input`` float32 [N, 1, 8, 8], output ``logits`` [N, 10], opset 17,
  BatchNormalization kept as separate nodes after each Conv (so that fusion passes have work to do)
- ``digits_heldout.npz``: one array keyed ``input``, the 450 held-out images, normalized as in training
- ``digits_labels.npy``: int64 labels of those images

Run: ``.venv/bin/python models/train_digits.py`` (install torch into the dev venv first). torch is never a
dependency of onnxcomp; only the files this script writes are used by the package and its tests.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
OPSET = 17


class DigitsCNN(nn.Module):
    """Conv-BN-Relu stem, one residual block, a strided Conv-BN-Relu, Flatten, two-layer FC head."""

    def __init__(self, channels: int = 32, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        wide = 2 * channels
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.down = nn.Sequential(
            nn.Conv2d(channels, wide, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(wide), nn.ReLU()
        )
        self.fc1 = nn.Linear(wide * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(x + y)
        x = self.down(x)
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed split (1,347 train / 450 held-out), images scaled to [0, 1] then standardized."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=450, random_state=0, stratify=labels)
    mean, std = x_train.mean(), x_train.std()
    x_train = ((x_train - mean) / std)[:, None].astype(np.float32)
    x_test = ((x_test - mean) / std)[:, None].astype(np.float32)
    return x_train, y_train, x_test, y_test


def train(x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> DigitsCNN:
    torch.manual_seed(SEED)
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x_train) + 63) // 64))
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for i in range(0, len(xs), 64):
            idx = perm[i : i + 64]
            xb = xs[idx]
            # light augmentation: random shifts by up to one pixel
            dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), ys[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xs):.4f}")
    return model.eval()


def export(model: DigitsCNN, path: Path) -> None:
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
    # TrainingMode.PRESERVE keeps BatchNormalization nodes (EVAL mode would fold them into the Convs);
    # the model is in eval mode, so BN uses its running statistics
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=OPSET,
        dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    producers = {out: n.op_type for n in proto.graph.node for out in n.output}
    bn_after_conv = sum(
        1 for n in proto.graph.node if n.op_type == "BatchNormalization" and producers.get(n.input[0]) == "Conv"
    )
    if bn_after_conv != 4:
        raise RuntimeError(f"expected 4 Conv->BatchNormalization pairs, got {bn_after_conv}: {ops}")
    print(f"exported {path.name}: opset {proto.opset_import[0].version}, ir {proto.ir_version}, ops {ops}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data()
    model = train(x_train, y_train, args.epochs)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())
    print(f"trained in {time.perf_counter() - start:.1f}s; torch held-out accuracy {torch_acc:.4f}")

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "digits_cnn.onnx"
    export(model, onnx_path)
    np.savez(out / "digits_heldout.npz", input=x_test)
    np.save(out / "digits_labels.npy", y_test)

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ort_logits = session.run(["logits"], {"input": x_test})[0]
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    n_params = sum(p.numel() for p in model.parameters())
    max_diff = np.abs(torch_logits - ort_logits).max()
    print(f"params {n_params:,d}; onnxruntime held-out accuracy {ort_acc:.4f} ({len(y_test)} images)")
    print(f"max |torch - ort| logit difference {max_diff:.2e}")
    if ort_acc != torch_acc:
        raise RuntimeError("onnxruntime and torch accuracies differ")


if __name__ == "__main__":
    main()
