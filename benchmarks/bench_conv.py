"""Winograd convolution vs onnxruntime's Conv: per layer, whole models, and the estimator's picks.

All timings: 1 intra-op thread, every contender in the same process, runs interleaved (A, B, C, A, B, C, ...),
medians. The primary figure is the thread CPU time of the calling thread (onnxruntime with 1 thread computes on
it): on a shared machine it leaves out the time the thread waited for a core, which otherwise favours whatever
runs shorter (a run shorter than a scheduler time slice is rarely preempted). Wall-clock medians are printed too.

    python benchmarks/bench_conv.py                       # everything
    python benchmarks/bench_conv.py --only layers         # per-layer table (ORT vs WinogradConv vs im2col)
    python benchmarks/bench_conv.py --only models --models vgg16,resnet18 --runs 10
    python benchmarks/bench_conv.py --only picks          # estimator pick vs measured, layer by layer
    python benchmarks/bench_conv.py --hardware profile.json --json out.json

Sections:
- layers: 3x3 stride-1 layers 64@56x56, 128@28x28, 256@14x14, 512@7x7 (batch 1): onnxruntime's Conv as a
  one-node model (its NCHWc kernel plus the layout changes around it) and as one layer inside a chain of three
  (the marginal cost, no layout change), the WinogradConv op per tile (one-node model; in a chain), and the native
  im2col GEMM (conv::Im2colConv, timed outside onnxruntime). Ratios are onnxruntime / contender (> 1: faster).
- models: VGG-16, ResNet-18, ResNet-50, MobileNetV2 (224x224) and a YOLOv8n-style detector (320x320), batch 1,
  random He-initialised weights: the original in plain onnxruntime vs `fuse-bn,select-conv` (runtime registered),
  and the two uniform plans (`select-conv(algorithm=winograd)` and plain `fuse-bn`: onnxruntime's Conv everywhere).
  Also the Reorder nodes onnxruntime adds around the WinogradConv nodes (NCHW <-> NCHWc, as it breaks onnxruntime's
  NCHWc chain) and their time (each timed alone on its tensor, thread CPU).
- picks: every 3x3 stride-1 layer of those models, timed alone (onnxruntime's Conv in a chain, WinogradConv per
  tile): the measured fastest vs the estimator's choice.

Goals: WinogradConv >= 1.5x onnxruntime's Conv on 64@56, 128@28, 256@14; VGG-16 >= 1.4x, ResNet-18 >= 1.2x,
no model below 0.98x; the estimator picks the measured-faster algorithm on >= 90% of the 3x3 layers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import builders  # noqa: E402
from onnxcomp import estimator, hardware, runtime  # noqa: E402
from onnxcomp.api import optimize  # noqa: E402
from onnxcomp.ops import DOMAIN  # noqa: E402
from onnxcomp.passes_api import load_pass_library  # noqa: E402

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]
TILES = (2, 4, 6)
MODELS = {
    "vgg16": lambda: builders.vgg16(batch=1),
    "resnet18": lambda: builders.resnet(depth=18, width=1.0, num_classes=1000, image_size=224, batch=1),
    "resnet50": lambda: builders.resnet50(batch=1),
    "mobilenetv2": lambda: builders.mobilenet("v2", num_classes=1000, image_size=224, batch=1),
    "yolov8n": lambda: builders.yolov8n(image_size=320, batch=1),
}


# ------------------------------------------------------------------------------------------------ timing
def session(model: onnx.ModelProto | bytes, native: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if native:
        runtime.register(so)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def interleaved(fns: dict, runs: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """name -> (median thread CPU seconds, median wall seconds), runs interleaved (order alternates)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        for n in names if i % 2 == 0 else names[::-1]:
            c0, w0 = time.thread_time(), time.perf_counter()
            fns[n]()
            cpu[n].append(time.thread_time() - c0)
            wall[n].append(time.perf_counter() - w0)
    return {n: (statistics.median(cpu[n]), statistics.median(wall[n])) for n in names}


# ------------------------------------------------------------------------------------------------ layers
def chain(c: int, m: int, h: int, depth: int, op: str, tile: int = 4, seed: int = 0) -> onnx.ModelProto:
    """depth 3x3 convolutions (pads 1, He-initialised, bias), c -> m -> m ...; op Conv or WinogradConv."""
    rng = np.random.default_rng(seed)
    nodes, inits, cin, x = [], [], c, "X"
    for i in range(depth):
        w = (rng.standard_normal((m, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
        b = (rng.standard_normal(m) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        if op == "Conv":
            nodes.append(helper.make_node("Conv", [x, f"W{i}", f"B{i}"], [f"Y{i}"], pads=[1, 1, 1, 1]))
        else:
            nodes.append(
                helper.make_node(
                    "WinogradConv",
                    [x, f"W{i}", f"B{i}"],
                    [f"Y{i}"],
                    domain=DOMAIN,
                    pads=[1, 1, 1, 1],
                    tile=tile,
                )
            )
        x, cin = f"Y{i}", m
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, m, h, h])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(g, opset_imports=opsets)


def bench_layers(runs: int) -> list[dict]:
    print("\n## Per layer (3x3, stride 1, pads 1, batch 1): ms (thread CPU), ratio = onnxruntime one-node / contender")
    hdr = f"{'layer':>10} | {'ORT 1-node':>10} {'ORT chain':>10} |"
    hdr += "".join(f" {'F' + str(t) + ' 1-node':>11} {'ratio':>6} |" for t in TILES)
    hdr += f" {'F4 chain':>9} {'ratio':>6} | {'im2col':>8} {'ratio':>6}"
    print(hdr)
    rows = []
    for c, h in LAYERS:
        x = np.random.default_rng(1).standard_normal((1, c, h, h)).astype(np.float32)
        fns = {}
        for depth in (1, 3):
            s = session(chain(c, c, h, depth, "Conv"), native=False)
            fns[f"ort{depth}"] = lambda s=s, x=x: s.run(None, {"X": x})
        for t in TILES:
            s = session(chain(c, c, h, 1, "WinogradConv", t), native=True)
            fns[f"F{t}"] = lambda s=s, x=x: s.run(None, {"X": x})
        s = session(chain(c, c, h, 3, "WinogradConv", 4), native=True)
        fns["F4x3"] = lambda s=s, x=x: s.run(None, {"X": x})
        im2col_times: list[float] = []

        def im2col(c=c, h=h, times=im2col_times):
            times.append(hardware.time_kernel("im2col", c=c, h=h, w=h, m=c, a=3, runs=1)[0])

        fns["im2col"] = im2col
        t = interleaved(fns, runs)
        ort1 = t["ort1"][0]
        ort_chain = max((t["ort3"][0] - t["ort1"][0]) / 2, 1e-9)
        f4_chain = max((t["F4x3"][0] - t["F4"][0]) / 2, 1e-9)
        im = statistics.median(im2col_times)
        row = {"layer": f"{c}@{h}x{h}", "ort_1node_ms": ort1 * 1e3, "ort_chain_ms": ort_chain * 1e3}
        line = f"{row['layer']:>10} | {ort1 * 1e3:10.3f} {ort_chain * 1e3:10.3f} |"
        for tt in TILES:
            v = t[f"F{tt}"][0]
            row[f"winograd{tt}_ms"] = v * 1e3
            line += f" {v * 1e3:11.3f} {ort1 / v:5.2f}x |"
        row["winograd4_chain_ms"] = f4_chain * 1e3
        row["im2col_ms"] = im * 1e3
        line += f" {f4_chain * 1e3:9.3f} {ort_chain / f4_chain:5.2f}x | {im * 1e3:8.3f} {ort1 / im:5.2f}x"
        print(line, flush=True)
        row["wall_ms"] = {k: v[1] * 1e3 for k, v in t.items()}
        rows.append(row)
    print("(F4 chain ratio: vs onnxruntime's in-chain time, i.e. without its layout changes)")
    return rows


# ------------------------------------------------------------------------------------------------ models
def _optimized(model: onnx.ModelProto, spec: str, hw: str) -> onnx.ModelProto:
    out, _ = optimize(model, spec, hardware=hw)
    return out


def _reorders(model: onnx.ModelProto, native: bool, runs: int = 15) -> tuple[int, float]:
    """The ReorderInput/ReorderOutput nodes onnxruntime adds (NCHW <-> NCHWc) to the model, and their cost per
    run in ms: each is timed alone (thread CPU) on its tensor's shape. onnxruntime's profiler is not used: its
    per-node wall times include the waits of a shared machine."""
    import tempfile

    from onnxcomp import cost

    fixed = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    sized = cost.concrete(model, fixed)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*sized.graph.input, *sized.graph.value_info, *sized.graph.output]
    }
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        if native:
            runtime.register(so)
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False)
    total, count = 0.0, 0
    for node in opt.graph.node:
        if node.domain != "com.microsoft.nchwc" or not node.op_type.startswith("Reorder"):
            continue
        plain = node.input[0] if node.op_type == "ReorderInput" else node.output[0]
        shape = shapes.get(plain)
        if not shape or len(shape) != 4:
            continue
        count += 1
        total += _reorder_seconds(node.op_type, tuple(shape), runs)
    return count, total * 1e3


_REORDER_CACHE: dict[tuple, float] = {}


def _reorder_seconds(op: str, shape: tuple[int, ...], runs: int) -> float:
    """Thread CPU seconds of one onnxruntime ReorderInput (NCHW -> NCHWc) or ReorderOutput on a tensor."""
    key = (op, shape)
    if key not in _REORDER_CACHE:
        n, c, h, w = shape
        cp = -(-c // 16) * 16
        attrs = {"channels": c} if op == "ReorderOutput" else {}
        src = [n, c if op == "ReorderInput" else cp, h, w]
        dst = [n, cp if op == "ReorderInput" else c, h, w]
        g = helper.make_graph(
            [helper.make_node(op, ["X"], ["Y"], domain="com.microsoft.nchwc", **attrs)],
            "reorder",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, src)],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, dst)],
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft.nchwc", 1)]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        data = helper.make_model(g, opset_imports=opsets).SerializeToString()
        s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(src).astype(np.float32)
        _REORDER_CACHE[key] = interleaved({"r": lambda: s.run(None, {"X": x})}, runs)["r"][0]
    return _REORDER_CACHE[key]


def bench_models(names: list[str], runs: int, hw: str) -> list[dict]:
    load_pass_library()
    print("\n## Whole models (batch 1): ms (thread CPU), ratio = plain onnxruntime / variant")
    print(
        f"{'model':>12} | {'plain ORT':>9} | {'fuse-bn':>9} {'ratio':>6} | {'all-winograd':>12} {'ratio':>6} |"
        f" {'select-conv':>11} {'ratio':>6} | {'winograd layers':>15} | {'reorders (ms)':>14}"
    )
    rows = []
    for name in names:
        model = MODELS[name]()
        feeds = builders.random_inputs(model, batch=1)
        variants = {
            "plain": (model, False),
            "fuse-bn": (_optimized(model, "fuse-bn", hw), False),
            "all-winograd": (_optimized(model, "fuse-bn,select-conv(algorithm=winograd)", hw), True),
            "select-conv": (_optimized(model, "fuse-bn,select-conv", hw), True),
        }
        fns = {}
        for k, (m, native) in variants.items():
            s = session(m, native)
            fns[k] = lambda s=s, feeds=feeds: s.run(None, feeds)
        t = interleaved(fns, runs, warmup=2)
        plain = t["plain"][0]
        wl = sum(1 for n in variants["select-conv"][0].graph.node if n.op_type == "WinogradConv")
        convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
        n_re, re_ms = _reorders(variants["select-conv"][0], True)
        n_re0, re0_ms = _reorders(variants["fuse-bn"][0], False)
        row = {
            "model": name,
            "ms": {k: v[0] * 1e3 for k, v in t.items()},
            "wall_ms": {k: v[1] * 1e3 for k, v in t.items()},
            "winograd_layers": wl,
            "convs": convs,
            "reorders_select_conv": {"nodes": n_re, "ms": re_ms},
            "reorders_fuse_bn": {"nodes": n_re0, "ms": re0_ms},
        }
        print(
            f"{name:>12} | {plain * 1e3:9.2f} | {t['fuse-bn'][0] * 1e3:9.2f} {plain / t['fuse-bn'][0]:5.2f}x |"
            f" {t['all-winograd'][0] * 1e3:12.2f} {plain / t['all-winograd'][0]:5.2f}x |"
            f" {t['select-conv'][0] * 1e3:11.2f} {plain / t['select-conv'][0]:5.2f}x | {wl:>6} of {convs:>3} convs |"
            f" {n_re:>3}: {re_ms:6.2f} (was {n_re0}: {re0_ms:.2f})",
            flush=True,
        )
        rows.append(row)
    print("(reorders: onnxruntime's ReorderInput/ReorderOutput nodes in the select-conv model and their time per run,")
    print(" each timed alone; 'was': the same in the fuse-bn model, where every Conv is onnxruntime's NCHWc kernel)")
    return rows


# ------------------------------------------------------------------------------------------------ picks
def _layers_of(model: onnx.ModelProto) -> list[estimator.ConvShape]:
    from onnxcomp import cost

    m = cost.concrete(
        model, {i.name: (1, *[d.dim_value for d in i.type.tensor_type.shape.dim][1:]) for i in model.graph.input}
    )
    shapes = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    inits = {t.name: tuple(t.dims) for t in m.graph.initializer}
    out = []
    for node in m.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = inits.get(node.input[1])
        xs, ys = shapes.get(node.input[0]), shapes.get(node.output[0])
        if w is None or xs is None or ys is None:
            continue
        s = estimator.ConvShape(
            xs[0], xs[1], xs[2], xs[3], ys[1], w[2], w[3], ys[2], ys[3],
            tuple(attrs.get("strides", [1, 1])), tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)),
        )  # fmt: skip
        if s.winograd_eligible:
            out.append(s)
    return out


def bench_picks(names: list[str], runs: int, hw_spec: str, margin: float = 0.1) -> list[dict]:
    hw = hardware.resolve(hw_spec)
    print(f"\n## Estimator pick vs measured, every 3x3 stride-1 layer (hardware {hw.name}; margin {margin})")
    print(
        f"{'model':>12} {'layer':>22} | {'ORT':>8} {'F2':>8} {'F4':>8} {'F6':>8} | {'measured':>9} | "
        f"{'pick':>9} {'ok':>3} | predicted us (im2col / F2 / F4)"
    )
    rows, seen = [], {}
    for name in names:
        for s in _layers_of(MODELS[name]()):
            key = (s.C, s.M, s.H, s.W, s.OH)
            if key not in seen:
                c, m, h = s.C, s.M, s.H
                x = np.random.default_rng(2).standard_normal((1, c, h, s.W)).astype(np.float32)
                fns = {}
                # onnxruntime's Conv in a chain (the marginal time of a layer) when C == M, else alone
                depth = 3 if c == m else 1
                so = session(_rect_chain(c, m, h, s.W, depth, "Conv"), False)
                fns["ort"] = lambda so=so, x=x: so.run(None, {"X": x})
                if depth == 3:
                    s1 = session(_rect_chain(c, m, h, s.W, 1, "Conv"), False)
                    fns["ort1"] = lambda s1=s1, x=x: s1.run(None, {"X": x})
                for t in TILES:
                    sw = session(_rect_chain(c, m, h, s.W, 1, "WinogradConv", t), True)
                    fns[f"F{t}"] = lambda sw=sw, x=x: sw.run(None, {"X": x})
                tt = interleaved(fns, runs)
                ort_t = (tt["ort"][0] - tt["ort1"][0]) / 2 if depth == 3 else tt["ort"][0]
                seen[key] = {"im2col": max(ort_t, 1e-9), **{f"winograd{t}": tt[f"F{t}"][0] for t in TILES}}
            meas = seen[key]
            costs = estimator.estimate(s, hw, ("im2col", "winograd2", "winograd4"))
            pick = estimator.choose(costs, margin)
            best = min(("im2col", "winograd2", "winograd4"), key=lambda a: meas[a])
            ok = (pick == "im2col") == (best == "im2col")  # the algorithm (direct vs Winograd) is what counts
            label = f"{s.C}->{s.M} {s.OH}x{s.OW}"
            rows.append({"model": name, "layer": label, "measured_s": meas, "best": best, "pick": pick, "ok": ok})
            print(
                f"{name:>12} {label:>22} | {meas['im2col'] * 1e3:8.3f} {meas['winograd2'] * 1e3:8.3f}"
                f" {meas['winograd4'] * 1e3:8.3f} {meas['winograd6'] * 1e3:8.3f} | {best:>9} | {pick:>9}"
                f" {'yes' if ok else 'NO':>3} | "
                + " / ".join(f"{costs[a].seconds * 1e6:.0f}" for a in ("im2col", "winograd2", "winograd4")),
                flush=True,
            )
    good = sum(r["ok"] for r in rows)
    print(f"estimator picked the measured-faster algorithm on {good} of {len(rows)} layers ({good / len(rows):.0%})")
    return rows


def _rect_chain(c: int, m: int, h: int, w: int, depth: int, op: str, tile: int = 4) -> onnx.ModelProto:
    model = chain(c, m, h, depth, op, tile)
    for vi in (*model.graph.input, *model.graph.output):
        vi.type.tensor_type.shape.dim[3].dim_value = w
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="layers,models,picks", help="comma list of: layers, models, picks")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of: {', '.join(MODELS)}")
    ap.add_argument("--runs", type=int, default=0, help="runs per contender (default 30 layers, 10 models)")
    ap.add_argument("--hardware", default="zen4-1t", help="hardware profile (name or probe file) for select-conv")
    ap.add_argument("--json", type=Path, help="write the tables as JSON")
    args = ap.parse_args()
    if not runtime.available():
        print("the native runtime is not built: python -m onnxcomp.runtime build", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown models {unknown}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    out: dict = {"kernel_set": hardware.kernel_isa(), "onnxruntime": ort.__version__}
    print(f"kernel set {out['kernel_set']}, onnxruntime {ort.__version__}, 1 thread")
    if "layers" in only:
        out["layers"] = bench_layers(args.runs or 30)
    if "models" in only:
        out["models"] = bench_models(names, args.runs or 10, args.hardware)
    if "picks" in only:
        out["picks"] = bench_picks(names, args.runs or 15, args.hardware)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
