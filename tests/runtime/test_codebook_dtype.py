"""float16 and int8 codebooks (OPS.md "Codebook type"): a model whose codebooks are stored float16, or as int8
entries times float16 row scales (a Cast and a Mul in the model), computes exactly what the same model with those
values in float32 computes, under onnxruntime's plain path (the function bodies), the custom-op library and the
execution provider; another codebook type is refused with a message naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops
from onnxcomp.api import optimize
from onnxcomp.verify import run_model
from tests.runtime.eputil import ep_nodes, ep_session
from tests.support.compressed import custom_nodes, make_model, run, stored_inputs

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _matmul(rng, k, n, zeros=0.0):
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[rng.random(w.shape) < zeros] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    model = make_model(nodes, {"w": w}, [("x", ["b", k])], [("y", ["b", n])])
    return model, {"x": rng.standard_normal((5, k)).astype(np.float32)}


def _conv(rng, c, m, k, group=1):
    w = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group, pads=[1, 1, 1, 1])
    model = make_model([node], {"w": w}, [("x", [2, c, 9, 7])], [("y", None)])
    return model, {"x": rng.standard_normal((2, c, 9, 7)).astype(np.float32)}


def _gather(rng, v, d):
    table = rng.standard_normal((v, d)).astype(np.float32)
    node = helper.make_node("Gather", ["table", "ids"], ["y"], name="emb", axis=0)
    model = make_model([node], {"table": table}, [], [("y", None)])
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 3]))
    return model, {"ids": rng.integers(-v, v, size=(4, 3)).astype(np.int64)}


CASES = {
    "matmul-per-channel": (lambda r: _matmul(r, 37, 29), "kmeans(bits=4,group_size=1)", "CodebookMatMul"),
    "matmul-blocks": (lambda r: _matmul(r, 40, 12), "kmeans(bits=3,group_size=1,block_size=16)", "CodebookMatMul"),
    "sparse": (
        lambda r: _matmul(r, 40, 300, zeros=0.95),
        "kmeans(bits=3,group_size=4,sparse=always)",
        "SparseCodebookMatMul",
    ),
    "conv-depthwise": (
        lambda r: _conv(r, 16, 16, 5, group=16),
        "kmeans(bits=4,group_size=1,min_params=0)",
        "CodebookConv",
    ),
    "conv-8bit": (lambda r: _conv(r, 6, 10, 3), "kmeans(bits=8)", "CodebookConv"),
    "ternary-conv": (lambda r: _conv(r, 6, 10, 3), "ternary", "CodebookConv"),
    "gather": (lambda r: _gather(r, 1100, 5), "kmeans(bits=4,group_size=100)", "CodebookGather"),
}


def _as_float32_codebooks(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every codebook stored as one float32 initializer holding the same values: float16
    initializers converted, tables computed by a Cast and a Mul (int8 entries times row scales) evaluated."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.data_type == TensorProto.FLOAT16:
            out.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
            )
    for node in custom_nodes(out):
        for i, name in enumerate(node.input):
            parts = stored_inputs(out, name) if name else []
            if len(parts) == 2:  # Mul(Cast(scales), Cast(entries)), in float32 as onnxruntime's Mul
                value = np.multiply(*(p.astype(np.float32) for p in parts), dtype=np.float32)
                out.graph.initializer.append(numpy_helper.from_array(value, f"{name}_float32"))
                node.input[i] = f"{name}_float32"
    kept = [n for n in out.graph.node if n.domain != "" or n.op_type not in ("Cast", "Mul")]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


@pytest.mark.parametrize("dtype", ["float16", "int8"])
@pytest.mark.parametrize("case", list(CASES))
def test_small_codebook_runs_as_its_float32_values_everywhere(case, dtype, tmp_path):
    build, spec, op = CASES[case]
    model, feeds = build(np.random.default_rng(len(case)))
    option = f"codebook_dtype={dtype}"
    out, _ = optimize(model, spec.replace(")", f",{option})") if ")" in spec else f"{spec}({option})")
    onnx.checker.check_model(out)
    assert op in {n.op_type for n in custom_nodes(out)}
    # int8 is for k-means codebooks of <= 5 bits: ternary scales, Gather tables and 8-bit codebooks keep float16
    float16 = ("ternary-conv", "gather", "conv-8bit")
    stored = TensorProto.INT8 if dtype == "int8" and case not in float16 else TensorProto.FLOAT16
    assert any(t.data_type == stored for t in out.graph.initializer), f"no {dtype} codebook written"
    f32 = _as_float32_codebooks(out)
    assert all(t.data_type == TensorProto.FLOAT for t in f32.graph.initializer if t.name.endswith("codebook"))
    reference = run(ops.decode_model(out), feeds)
    # plain onnxruntime (ORT optimizations off): the function bodies Cast the codebook to float
    for a, b, r in zip(run(out, feeds), run(f32, feeds), reference, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, r)
    # the EP claims what it claims with the float32 table (an int8 one: computed when it compiles the node)
    assert bool(ep_nodes(out, feeds, tmp_path)) == bool(ep_nodes(f32, feeds, tmp_path))
    # the custom-op kernels, and the EP claiming every node it runs (min_weights 0)
    runs = {
        "ops": lambda m: list(run_model(m, feeds, runtime="ops").values()),
        "ep": lambda m: ep_session(m).run(None, feeds),
    }
    for how, runner in runs.items():
        for a, b, r in zip(runner(out), runner(f32), reference, strict=True):
            scale = max(1.0, float(np.abs(r).max()))
            if how == "ops" and stored == TensorProto.INT8:
                # a kernel reads a computed table as a run-time input (onnxruntime folds it only when it optimizes
                # the graph, off here): the same values through the run-time path, another summation order
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6 * scale)
            else:
                np.testing.assert_array_equal(a, b)  # the same float values through the same kernels
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=2e-6 * scale)


def test_float32_option_and_auto_fallback_write_float32():
    rng = np.random.default_rng(3)
    model, feeds = _matmul(rng, 30, 20)
    out, _ = optimize(model, "kmeans(bits=4,group_size=1,codebook_dtype=float32)")
    assert all(t.data_type != TensorProto.FLOAT16 for t in out.graph.initializer)
    # values past float16's range: auto must keep float32 (float16 would turn them into inf)
    big = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        {"w": (rng.standard_normal((30, 20)) * 1e5).astype(np.float32)},
        [("x", ["b", 30])],
        [("y", ["b", 20])],
    )
    out, _ = optimize(big, "kmeans(bits=4,group_size=0)")  # one codebook: float entries under auto
    books = [t for t in out.graph.initializer if t.name.endswith("_codebook")]
    assert books and all(t.data_type == TensorProto.FLOAT for t in books)
    np.testing.assert_allclose(run(out, feeds)[0], run(ops.decode_model(out), feeds)[0], rtol=1e-6)


def test_wrong_codebook_type_is_refused_naming_the_node():
    model, feeds = _matmul(np.random.default_rng(4), 16, 8)
    out, _ = optimize(model, "kmeans(bits=4,codebook_dtype=float16)")
    (node,) = custom_nodes(out)
    for i, t in enumerate(out.graph.initializer):
        if t.name == node.input[1]:
            ints = numpy_helper.to_array(t).astype(np.int32)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(ints, t.name))
    with pytest.raises(ValueError, match=f"{node.name}.*codebook' must be float32 or float16, got int32"):
        ops.validate_model(out)
    with pytest.raises(Exception, match="codebook' must be float32 or float16, got int32") as info:
        run_model(out, feeds, runtime="ops")
    assert node.name in str(info.value)
    # the EP claiming the node (min_weights 0) refuses it when it compiles the node
    with pytest.raises(Exception, match="codebook' must be float32 or float16, got int32") as info:
        ep_session(out, min_weights=0).run(None, feeds)
    assert node.name in str(info.value)
