"""Latency of the default lossless pipeline's output against the original, on the real models of the quality table.

Each model (benchmarks/quality_models.py: from PyPI wheels, never downloaded) runs as it was exported and after
``onnxcomp optimize``'s default pipeline (no lossy pass), in one process, onnxruntime with all graph optimizations and
1 intra-op thread, interleaved in blocks; the ratio is the median over blocks of the blocks' median ratio. The output
is checked against the original on the model's first evaluation input (largest absolute difference printed).
The pipeline's passes that changed something are listed (e.g. fuse-hardswish's chains on the layout detector).

    .venv/bin/python benchmarks/bench_lossless.py [--models layout_det,ocr_cls,ocr_det] [--blocks 5] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import numpy as np
    import onnx
    from quality_models import BENCHES

    from onnxcomp import bench as timing
    from onnxcomp.api import optimize
    from onnxcomp.pipeline import DEFAULT_PIPELINE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="layout_det,ocr_cls,ocr_det")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print(f"default pipeline: {DEFAULT_PIPELINE}; 1 intra-op thread, interleaved, median of {args.blocks} blocks")
    for key in args.models.split(","):
        bench = BENCHES[key]
        path = bench.path()
        if path is None:
            print(f"{key:12s} skipped: its wheel is not installed (pip install -e '.[bench]')", flush=True)
            continue
        model = bench.prepare(onnx.load(path))
        out, report = optimize(model)
        changed = [
            f"{p.name} {int(v)} {k}" for p in report.passes for k, v in p.counters.items() if k in ("fused", "removed")
        ]
        feeds = bench.evals()[0]
        runners = {"original": timing.model_runner(model, feeds), "default": timing.model_runner(out, feeds)}
        a, b = runners["original"](), runners["default"]()
        diff = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))
        got = [timing.interleaved(runners, runs=args.runs, warmup=1) for _ in range(args.blocks)]
        ratio = statistics.median(g["original"].median_ms / g["default"].median_ms for g in got)
        t0 = statistics.median(g["original"].median_ms for g in got)
        t1 = statistics.median(g["default"].median_ms for g in got)
        print(
            f"{key:12s} original {t0:8.2f} ms  default pipeline {t1:8.2f} ms  {ratio:5.2f}x  "
            f"max |diff| {diff:.2e}  ({', '.join(changed) or 'nothing changed'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
