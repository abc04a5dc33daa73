"""Pass time of error-compensated 4-bit k-means on a 25M-parameter transformer with 128 calibration samples.

    python benchmarks/quality_speed.py

The model: 8 pre-norm transformer blocks, dim 512, 8 heads, MLP 2048 (models/builders.py, random weights;
25.2M parameters in 48 MatMul layers), 128 calibration sequences of 64 tokens. Plain (activation-weighted,
one-shot) k-means is timed in the same process as the baseline; the machine's 2 cores are shared, so the
ratio holds better than the absolute seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import builders  # noqa: E402
from onnxcomp.api import optimize  # noqa: E402


def main() -> None:
    model = builders.transformer_block(dim=512, num_heads=8, mlp_ratio=4.0, num_blocks=8, seq_len=64)
    params = builders.param_count(model)
    name = model.graph.input[0].name
    calib = {name: np.random.default_rng(0).standard_normal((128, 64, 512)).astype(np.float32)}
    print(f"transformer, {params / 1e6:.1f}M parameters, 128 x 64 calibration tokens")
    rows = []
    for label, spec in (
        ("plain 4-bit (weighted, one-shot)", "kmeans(bits=4,compensate=false,sequential=false)"),
        ("compensated 4-bit (default with --calib)", "kmeans(bits=4)"),
    ):
        t0 = time.perf_counter()
        _, report = optimize(model, spec, calib=calib)
        dt = time.perf_counter() - t0
        c = report.passes[-1].counters
        rows.append((label, dt, c.get("layers_compensated", 0), c.get("layers", 0)))
    print("| mode | seconds | layers compensated / encoded |")
    print("|---|---|---|")
    for label, dt, comp, layers in rows:
        print(f"| {label} | {dt:.1f} | {comp} / {layers} |")
    print(f"compensated / plain time: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
