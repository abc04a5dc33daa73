"""Latency of structurally pruned models in onnxruntime against the originals.

ResNet-style and MobileNet-style 224x224 models (models/builders.py) are pruned with
``prune-filters(target_flops=0.5, round_to=R)``; both models run in one process with 1 intra-op thread and
full onnxruntime graph optimizations, interleaved (A, B, A, B, ...), in several blocks: the speedup is the
median over blocks of the ratio of the blocks' medians (robust to bursts of load from other processes on a
shared machine); the times are the medians over blocks. The speedup is printed next to the FLOPs ratio
(FLOPs of onnxcomp.cost, batch 1); "efficiency" is speedup / FLOPs ratio (goal: >= 0.85, i.e. a 2x FLOPs cut
runs at least 1.7x faster).

    .venv/bin/python benchmarks/bench_prune.py [--models resnet18,resnet50,mobilenet_v2,mobilenet_v3]
        [--round-to 1,8,16] [--target 0.5] [--blocks 7] [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {
    "resnet18": lambda b: b.resnet(depth=18, width=1.0, num_classes=1000, image_size=224, batch=1),
    "resnet50": lambda b: b.resnet50(batch=1),
    "mobilenet_v2": lambda b: b.mobilenet(variant="v2", num_classes=1000, image_size=224, batch=1),
    "mobilenet_v3": lambda b: b.mobilenet(variant="v3_large", num_classes=1000, image_size=224, batch=1),
}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,mobilenet_v3")
    parser.add_argument("--round-to", default="1,8,16")
    parser.add_argument("--target", type=float, default=0.5, help="fraction of FLOPs to remove")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--blocks", type=int, default=7, help="interleaved blocks (median of their ratios)")
    parser.add_argument("--runs", type=int, default=10, help="runs of each model per block")
    args = parser.parse_args()

    from models import builders
    from onnxcomp import bench, cost
    from onnxcomp.api import optimize
    from onnxcomp.io import infer_shapes
    from onnxcomp.passes_api import load_pass_library

    load_pass_library()
    header = (
        f"{'model':14s} {'round_to':>8s} {'GFLOPs':>15s} {'FLOPs ratio':>11s} {'params':>17s} "
        f"{'ms orig':>8s} {'ms pruned':>9s} {'speedup':>8s} {'efficiency':>10s}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        model = MODELS[name](builders)
        feeds = builders.random_inputs(model, batch=1)
        before = cost.summarize(infer_shapes(model))
        for round_to in (int(r) for r in args.round_to.split(",")):
            t0 = time.perf_counter()
            spec = f"prune-filters(target_flops={args.target},round_to={round_to},criterion={args.criterion})"
            pruned, _ = optimize(model, spec)
            seconds = time.perf_counter() - t0
            after = cost.summarize(pruned)
            runners = {"orig": bench.model_runner(model, feeds), "pruned": bench.model_runner(pruned, feeds)}
            blocks = [bench.interleaved(runners, runs=args.runs, warmup=2 if b else 5) for b in range(args.blocks)]
            ms = {k: statistics.median(b[k].median_ms for b in blocks) for k in runners}
            speedup = statistics.median(b["orig"].median_ms / b["pruned"].median_ms for b in blocks)
            ratio = before.flops / after.flops
            print(
                f"{name:14s} {round_to:8d} {before.flops / 1e9:6.3f} -> {after.flops / 1e9:5.3f} "
                f"{ratio:11.2f} "
                f"{before.params / 1e6:6.2f}M -> {after.params / 1e6:5.2f}M "
                f"{ms['orig']:8.2f} {ms['pruned']:9.2f} {speedup:7.2f}x "
                f"{speedup / ratio:10.2f}   (pass {seconds:.1f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
