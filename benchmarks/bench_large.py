"""A model over 2 GB through the default lossless pipeline: wall time, peak memory, round trip.

Builds (streaming to disk, deterministic) an MLP of ~600M float32 parameters with external data: an Identity,
then ``layers`` blocks MatMul [d, d] -> Add(bias) -> Relu, the first block with a per-channel Mul that
``fuse-affine`` folds into its weight. Then, each step in its own child process (peak RSS is that child's
``ru_maxrss``):

1. ``onnxcomp optimize model.onnx out.onnx --report ...`` (the default lossless pipeline, CLI);
2. the round trip: ``onnx.checker.check_model`` on the output's path, one onnxruntime run of the output and
   one of the input (each session from the file's path), outputs compared;
3. with ``--verify``: ``onnxcomp optimize ... --verify`` as well.

    .venv/bin/python benchmarks/bench_large.py [--params 6e8] [--dim 5000] [--dir /tmp/onnxcomp-large]
        [--keep] [--verify]

The machine's memory is shared: run it alone. It needs about 3x the model's size on disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALIGN = 4096


def build(path: Path, params: float, dim: int) -> dict[str, float]:
    """Write the MLP to ``path`` (+ ``path.data``) one tensor at a time; returns its layout."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    layers = max(1, round(params / (dim * dim)))
    data_name = path.name + ".data"
    inits: list[onnx.TensorProto] = []
    with open(path.parent / data_name, "wb") as f:

        def put(name: str, value: np.ndarray) -> str:
            pad = (-f.tell()) % ALIGN
            f.write(b"\0" * pad)
            offset = f.tell()
            f.write(np.ascontiguousarray(value, dtype=np.float32).tobytes())
            t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(value.shape))
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(value.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            return name

        nodes = [helper.make_node("Identity", ["x"], ["h0"], name="in_identity")]
        prev = "h0"
        for i in range(layers):
            rng = np.random.default_rng(i)
            w = put(f"w{i}", rng.standard_normal((dim, dim), dtype=np.float32) * np.float32(np.sqrt(2.0 / dim)))
            b = put(f"b{i}", rng.standard_normal(dim, dtype=np.float32) * np.float32(0.01))
            nodes.append(helper.make_node("MatMul", [prev, w], [f"mm{i}"], name=f"matmul{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", b], [f"add{i}"], name=f"add{i}"))
            act_in = f"add{i}"
            if i == 0:  # a per-channel scale: fuse-affine folds it into w0 and b0
                s = put("s0", rng.uniform(0.5, 1.5, dim).astype(np.float32))
                nodes.append(helper.make_node("Mul", [act_in, s], ["mul0"], name="mul0"))
                act_in = "mul0"
            nodes.append(helper.make_node("Relu", [act_in], [f"h{i + 1}"], name=f"relu{i}"))
            prev = f"h{i + 1}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out_identity"))
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    size = path.stat().st_size + (path.parent / data_name).stat().st_size
    return {"layers": layers, "params": layers * (dim * dim + dim) + dim, "bytes": size}


_CHILD = textwrap.dedent(
    """
    import resource, subprocess, sys, time
    t = time.perf_counter()
    rc = subprocess.run(sys.argv[1:]).returncode
    wall = time.perf_counter() - t
    print(f"CHILD rc={rc} wall={wall:.2f} maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
    """
)

_ROUND_TRIP = textwrap.dedent(
    """
    import sys, time, resource
    import numpy as np, onnx, onnxruntime as ort
    out, src, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = time.perf_counter()
    onnx.checker.check_model(out)  # by path: external data checked where it lies
    checker = time.perf_counter() - t
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    x = {"x": np.random.default_rng(7).standard_normal((1, dim)).astype(np.float32)}
    res = {}
    for name, p in (("output", out), ("input", src)):
        t = time.perf_counter()
        sess = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        res[name] = sess.run(None, x)[0]
        print(f"ORT {name}: session + run {time.perf_counter() - t:.2f} s")
        del sess
    a, b = res["input"], res["output"]
    err = float(np.abs(a - b).max() / max(1e-30, np.abs(a).max()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"ROUND checker={checker:.2f} rel_err={err:.3g} maxrss_kb={rss}")
    """
)


def _child(cmd: list[str]) -> tuple[int, float, float, str]:
    """Run ``cmd`` under a watcher process; returns (rc, wall s, peak RSS GB of cmd, output)."""
    res = subprocess.run([sys.executable, "-c", _CHILD, *cmd], capture_output=True, text=True)
    line = next(x for x in res.stdout.splitlines() if x.startswith("CHILD"))
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return int(fields["rc"]), float(fields["wall"]), int(fields["maxrss_kb"]) / 2**20, res.stdout + res.stderr


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--params", type=float, default=6e8)
    parser.add_argument("--dim", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the model files")
    parser.add_argument("--verify", action="store_true", help="also run optimize --verify")
    parser.add_argument(
        "--proto-limit",
        type=int,
        default=None,
        help="lower io.PROTO_LIMIT (the in-memory serialization limit) to take the >2 GB path on a smaller model",
    )
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="onnxcomp-large-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src, out = work / "model.onnx", work / "out.onnx"
        t = time.perf_counter()
        info = build(src, args.params, args.dim)
        gb = info["bytes"] / 2**30
        print(
            f"model: {info['layers']} x MatMul[{args.dim}x{args.dim}] + bias, {info['params'] / 1e6:.0f}M params, "
            f"{gb:.2f} GiB with external data (built in {time.perf_counter() - t:.1f} s)"
        )
        onnxcomp = [sys.executable, "-m", "onnxcomp"]
        if args.proto_limit is not None:
            onnxcomp = [
                sys.executable,
                "-c",
                "import sys; from onnxcomp import io, cli; io.PROTO_LIMIT = int(sys.argv.pop(1)); sys.exit(cli.main())",
                str(args.proto_limit),
            ]
        rows = []
        rc, wall, rss, log = _child([*onnxcomp, "optimize", str(src), str(out), "--report", str(work / "r.json")])
        if rc != 0:
            print(log[-3000:])
            raise SystemExit(f"optimize failed (exit {rc})")
        report = json.loads((work / "r.json").read_text())
        rows.append(("optimize (default lossless)", wall, rss))
        passes = ", ".join(f"{p['name']} {p['counters']} {p['seconds']:.1f}s" for p in report["passes"])
        print(f"passes: {passes}")
        print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["stages"].items()))
        data = work / "out.onnx.data"
        out_bytes = out.stat().st_size + (data.stat().st_size if data.exists() else 0)
        where = "graph + out.onnx.data" if data.exists() else "one file"
        print(f"output: {out_bytes / 2**30:.2f} GiB ({out.stat().st_size:,} B {where})")
        if args.verify:
            rc, wall, rss, log = _child([*onnxcomp, "optimize", str(src), str(work / "v.onnx"), "--verify"])
            if rc != 0:
                print(log[-3000:])
                raise SystemExit(f"optimize --verify failed (exit {rc})")
            rows.append(("optimize --verify", wall, rss))
        res = subprocess.run(
            [sys.executable, "-c", _ROUND_TRIP, str(out), str(src), str(args.dim)], capture_output=True, text=True
        )
        if res.returncode != 0:
            print(res.stdout + res.stderr[-3000:])
            raise SystemExit("round trip failed")
        print("\n".join(x for x in res.stdout.splitlines() if x.startswith("ORT")))
        line = next(x for x in res.stdout.splitlines() if x.startswith("ROUND"))
        fields = dict(kv.split("=") for kv in line.split()[1:])
        print(f"round trip: onnx.checker.check_model(path) ok in {float(fields['checker']):.2f} s; onnxruntime output")
        print(f"  vs input: max |diff| / max |ref| = {float(fields['rel_err']):.3g}")
        rows.append(("round trip (checker + 2 ORT runs)", None, int(fields["maxrss_kb"]) / 2**20))
        print(f"\n{'step':36s} {'wall s':>8s} {'peak RSS GiB':>13s} {'x model':>8s}")
        for name, w, r in rows:
            print(f"{name:36s} {'' if w is None else f'{w:.1f}':>8s} {r:13.2f} {r / gb:8.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
