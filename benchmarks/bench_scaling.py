"""How the default lossless pipeline scales with the node count (1k / 5k / 20k nodes).

Three deterministic graph families, built with onnx.helper at the given node count:

- ``identity``: x -> Identity x N -> Relu -> y (everything but the Relu is removed by ``eliminate``);
- ``conv``: residual blocks Conv -> BatchNormalization -> Relu -> Identity -> Mul(1) -> Conv -> BatchNormalization
  -> Add(residual) -> Tanh on a 1x8x6x6 tensor (fuse-bn, eliminate and cleanup all have work on every block);
- ``matmul``: MatMul -> Add(bias) -> Mul(per-channel scale) -> Tanh blocks on a 4x16 tensor (fuse-affine).
  (Tanh keeps the values finite through thousands of blocks: verification refuses an all-NaN/Inf reference.)

Each graph goes through ``onnxcomp.optimize`` with the default pipeline and ``--verify`` (onnxruntime runs
both models), then is saved; the table prints the wall time of every stage (the report's stage and pass
times), so a quadratic stage shows as a column that grows 16x from 5k to 20k nodes instead of 4x.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 1000,5000,20000] [--graphs identity,conv,matmul]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def identity_chain(n: int):
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i in range(n - 1):
        nodes.append(helper.make_node("Identity", [prev], [f"t{i}"], name=f"id{i}"))
        prev = f"t{i}"
    nodes.append(helper.make_node("Relu", [prev], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "identity_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_blocks(n: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 8
    nodes, inits, prev = [], [], "x"

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    one = const("one", np.ones((), np.float32))
    for b in range((n + 8) // 9):
        p = f"b{b}_"
        w1 = const(p + "w1", rng.standard_normal((c, c, 3, 3)) * 0.05)
        w2 = const(p + "w2", rng.standard_normal((c, c, 3, 3)) * 0.05)
        bn = []
        for k in (1, 2):
            bn.append(
                [
                    const(p + f"g{k}", rng.uniform(0.5, 1.5, c)),
                    const(p + f"beta{k}", rng.standard_normal(c) * 0.1),
                    const(p + f"mean{k}", rng.standard_normal(c) * 0.1),
                    const(p + f"v{k}", rng.uniform(0.5, 1.5, c)),
                ]
            )
        nodes += [
            helper.make_node("Conv", [prev, w1], [p + "c1"], name=p + "conv1", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [p + "c1", *bn[0]], [p + "n1"], name=p + "bn1"),
            helper.make_node("Relu", [p + "n1"], [p + "r1"], name=p + "relu1"),
            helper.make_node("Identity", [p + "r1"], [p + "i1"], name=p + "id"),
            helper.make_node("Mul", [p + "i1", one], [p + "m1"], name=p + "mul1"),
            helper.make_node("Conv", [p + "m1", w2], [p + "c2"], name=p + "conv2", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [p + "c2", *bn[1]], [p + "n2"], name=p + "bn2"),
            helper.make_node("Add", [p + "n2", prev], [p + "a"], name=p + "add"),
            helper.make_node("Tanh", [p + "a"], [p + "out"], name=p + "tanh"),  # bounded over thousands of blocks
        ]
        prev = p + "out"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "conv_blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def matmul_blocks(n: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d = 16
    nodes, inits, prev = [], [], "x"
    for b in range((n + 3) // 4):
        p = f"b{b}_"
        for name, value in (
            ("w", rng.standard_normal((d, d)) / np.sqrt(d)),
            ("bias", rng.standard_normal(d) * 0.1),
            ("s", rng.uniform(0.5, 1.5, d)),
        ):
            inits.append(numpy_helper.from_array(value.astype(np.float32), p + name))
        nodes += [
            helper.make_node("MatMul", [prev, p + "w"], [p + "mm"], name=p + "matmul"),
            helper.make_node("Add", [p + "mm", p + "bias"], [p + "ab"], name=p + "add"),
            helper.make_node("Mul", [p + "ab", p + "s"], [p + "ms"], name=p + "mul"),
            helper.make_node("Tanh", [p + "ms"], [p + "out"], name=p + "tanh"),
        ]
        prev = p + "out"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "matmul_blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, d])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


GRAPHS = {"identity": identity_chain, "conv": conv_blocks, "matmul": matmul_blocks}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--graphs", default=",".join(GRAPHS))
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args()

    import onnxruntime as ort

    from onnxcomp.api import optimize
    from onnxcomp.io import save_model
    from onnxcomp.passes_api import load_pass_library

    ort.set_default_logger_severity(3)
    load_pass_library()
    rows: list[tuple[str, int, int, dict[str, float]]] = []
    columns: list[str] = []
    for name in args.graphs.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            model = GRAPHS[name](n)
            nodes = len(model.graph.node)
            t0 = time.perf_counter()
            out, report = optimize(model, verify=not args.no_verify)
            times = dict(report.stages)
            for i, p in enumerate(report.passes):
                times[f"{i + 1}:{p.name}"] = p.seconds
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                save_model(out, Path(tmp) / "out.onnx", data=report.serialized)
                times["save"] = time.perf_counter() - t
            times["total"] = time.perf_counter() - t0
            for k in times:
                if k not in columns:
                    columns.append(k)
            rows.append((name, nodes, len(out.graph.node), times))
            print(f"{name} {nodes} nodes -> {len(out.graph.node)}: {times['total']:.2f} s", file=sys.stderr)

    short = {c: c.split(":")[-1].replace("onnxruntime ", "ort ").replace("shape inference", "shapes") for c in columns}
    widths = {c: max(6, len(short[c])) for c in columns}
    header = f"{'graph':9s} {'nodes':>6s} {'after':>6s} " + " ".join(f"{short[c]:>{widths[c]}s}" for c in columns)
    print("seconds per stage (pipeline order; pass columns are the default pipeline's passes in order)")
    print(header)
    print("-" * len(header))
    for name, nodes, after, times in rows:
        cells = " ".join(f"{times.get(c, 0.0):>{widths[c]}.2f}" for c in columns)
        print(f"{name:9s} {nodes:>6d} {after:>6d} {cells}")


if __name__ == "__main__":
    main()
