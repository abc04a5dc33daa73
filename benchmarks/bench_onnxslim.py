"""onnxcomp's lossless fusion pipeline vs onnxslim on ResNet-50 (224x224, random weights, Conv+BN+Relu).

Prints two tables:
- optimization time of each tool on the same model (medians of interleaved runs): onnxcomp through its Python
  API (``onnxcomp.optimize``: it also infers the output's shapes, runs the onnx checker, loads the result in
  onnxruntime and costs both models for its report), onnxcomp's rewriting steps alone (normalize, import,
  fold, passes, export: the work onnxslim does), the passes alone, and ``onnxslim.slim(model)``;
- onnxruntime latency of the original and both outputs: 1 intra-op thread, graph optimizations enabled as
  deployed, sessions in one process, runs interleaved, medians and ratios vs the original.

Usage: python benchmarks/bench_onnxslim.py [--runs 5] [--latency-runs 40] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the bundled `models` package (an installed onnxcomp wins over the source tree)

PIPELINE = "fold-constants,eliminate(duplicate_nodes=false),fuse-bn,fuse-affine,eliminate"


def _copy(model):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _graph_only(model):
    """optimize()'s rewriting steps alone: normalize, import, fold, passes, export (no checks, no report)."""
    from onnxcomp import io
    from onnxcomp.fold import fold
    from onnxcomp.graph import export_model, import_model
    from onnxcomp.passes_api import PassContext
    from onnxcomp.pipeline import instantiate, parse_spec, run_passes

    graph = import_model(io.normalize(model))
    fold(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    run_passes(graph, instantiate(parse_spec(PIPELINE)), PassContext())
    return export_model(graph)


TOOLS = ("onnxcomp optimize", "onnxcomp graph", "onnxslim")


def _time_tools(model, runs: int):
    """Interleaved runs of the tools; returns per-tool lists of seconds and the last outputs."""
    import onnxslim

    from onnxcomp.api import optimize

    times: dict[str, list[float]] = {t: [] for t in (*TOOLS, "onnxcomp passes")}
    outs = {}
    for i in range(runs + 1):  # the first round warms caches and imports, and is not counted
        for tool in TOOLS if i % 2 == 0 else TOOLS[::-1]:
            m = _copy(model)  # onnxslim may modify its input; copying is not timed
            t0 = time.perf_counter()
            if tool == "onnxcomp optimize":
                out, report = optimize(m, PIPELINE)
                passes = sum(p.seconds for p in report.passes)
            elif tool == "onnxcomp graph":
                out = _graph_only(m)
            else:
                out = onnxslim.slim(m)
            dt = time.perf_counter() - t0
            outs[tool] = out
            if i:
                times[tool].append(dt)
                if tool == "onnxcomp optimize":
                    times["onnxcomp passes"].append(passes)
    return times, outs


def _max_error(reference, candidate, feeds) -> float:
    import numpy as np

    from onnxcomp.verify import run_model

    a, b = run_model(reference, feeds), run_model(candidate, feeds)
    return max(float(np.max(np.abs(a[k] - b[k])) / max(1.0, float(np.max(np.abs(a[k]))))) for k in a)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from models import builders
    from onnxcomp.bench import interleaved, model_runner
    from onnxcomp.passes_api import load_pass_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each tool")
    parser.add_argument("--latency-runs", type=int, default=40, help="timed onnxruntime runs of each model")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    load_pass_library()

    model = builders.resnet50(batch=args.batch, branch_gamma_scale=0.3, seed=0)
    ops = [n.op_type for n in model.graph.node]
    print(
        f"ResNet-50 {args.batch}x3x224x224: {len(ops)} nodes ({ops.count('Conv')} Conv, "
        f"{ops.count('BatchNormalization')} BatchNormalization), {model.ByteSize() / 1e6:.1f} MB"
    )

    times, outs = _time_tools(model, args.runs)
    feeds = {"input": np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)}
    base = statistics.median(times["onnxslim"])
    print(f"\nOptimization time (median of {args.runs} interleaved runs)")
    print(f"{'tool':<20}{'median s':>10}{'vs onnxslim':>13}{'nodes':>7}{'BN left':>9}{'max rel err':>13}")
    for tool in ("onnxcomp optimize", "onnxcomp graph", "onnxcomp passes", "onnxslim"):
        med = statistics.median(times[tool])
        out = outs["onnxcomp optimize" if tool == "onnxcomp passes" else tool]
        kinds = [n.op_type for n in out.graph.node]
        err = _max_error(model, out, feeds)
        print(
            f"{tool:<20}{med:>10.3f}{med / base:>12.2f}x{len(kinds):>7}{kinds.count('BatchNormalization'):>9}"
            f"{err:>13.2e}"
        )

    runners = {
        name: model_runner(m, feeds, threads=1, optimize=True)
        for name, m in (("original", model), ("onnxcomp", outs["onnxcomp optimize"]), ("onnxslim", outs["onnxslim"]))
    }
    timings = interleaved(runners, runs=args.latency_runs, warmup=3)
    ref = timings["original"].median_ms
    print(f"\nonnxruntime latency (1 thread, ORT_ENABLE_ALL, {args.latency_runs} interleaved runs)")
    print(f"{'model':<12}{'median ms':>11}{'p10':>9}{'p90':>9}{'vs original':>13}")
    for name, t in timings.items():
        print(f"{name:<12}{t.median_ms:>11.2f}{t.p10_ms:>9.2f}{t.p90_ms:>9.2f}{t.median_ms / ref:>12.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
