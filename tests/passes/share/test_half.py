"""float16 weights (passes/share/_half.py): kmeans decodes them in front of the float16 layer; a weight of at most
2**bits distinct values decodes to itself, so the model's outputs equal the original's; the bytes the report gives
are the bytes written; the other weight passes skip float16 weights and say so."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.api import optimize
from tests.support.run import outputs


def _half_model(levels: int = 0, seed: int = 0) -> onnx.ModelProto:
    """x fp16 [N, 3, 7, 9] -> Conv -> Relu -> Flatten -> MatMul -> Gemm(transB=1) -> Gemm(transB=0), float16
    weights; ``levels`` > 0: each weight takes at most that many distinct values."""
    rng = np.random.default_rng(seed)

    def w(shape, scale):
        v = rng.standard_normal(shape) * scale
        if levels:
            v = rng.choice(np.linspace(-2 * scale, 2 * scale, levels), size=shape)
        return v.astype(np.float16)

    inits = {
        "wc": w((12, 3, 3, 3), 0.3),
        "bc": np.zeros(12, np.float16),
        "wm": w((12 * 5 * 7, 40), 0.05),
        "wg": w((24, 40), 0.2),
        "wh": w((24, 10), 0.2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
        helper.make_node("Gemm", ["m", "wg"], ["g"], name="gemm_t", transB=1),
        helper.make_node("Gemm", ["g", "wh"], ["y"], name="gemm"),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _feeds(n: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).standard_normal((n, 3, 7, 9)).astype(np.float16)}


@pytest.mark.parametrize("bits", [2, 4])
def test_few_valued_float16_weights_decode_exactly(bits):
    model = _half_model(levels=1 << bits)
    out, report = optimize(model, f"kmeans(bits={bits},group-size=0,min-params=0)")
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("CodebookDecode") == 4 and ops.count("Cast") == 4
    assert {i.name for i in out.graph.initializer}.isdisjoint({"wc", "wm", "wg", "wh"})
    np.testing.assert_array_equal(outputs(out, _feeds())["y"], outputs(model, _feeds())["y"])
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    by_name = {n.name: n for n in out.graph.node}
    params = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    for row, w in zip(report.passes[-1].layers, ("wc", "wm", "wg", "wh"), strict=True):
        assert row.extra["bytes_before"] == 2 * params[w]
        node = by_name[row.extra["node"]]
        assert row.extra["bytes_stored"] == sum(inits[i].nbytes for i in node.input)
    assert out.ByteSize() < model.ByteSize()


def test_continuous_float16_weights_within_the_codebook_reach():
    model = _half_model()
    out, report = optimize(model, "kmeans(bits=4,min-params=0)")
    for row in report.passes[-1].layers:
        assert row.error < 0.15, (row.name, row.error)
    got, ref = outputs(out, _feeds())["y"].astype(np.float32), outputs(model, _feeds())["y"].astype(np.float32)
    cosine = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cosine > 0.97


@pytest.mark.parametrize("spec", ["kmeans(bits=4,min-params=0)", "kmeans(target-bits=4,min-params=0)"])
def test_calibrated_and_budget_modes_on_float16_weights(spec):
    model = _half_model()
    calib = {"x": np.random.default_rng(3).standard_normal((48, 3, 7, 9)).astype(np.float16)}
    out, _ = optimize(model, spec, calib=calib)
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") >= 2
    got, ref = outputs(out, _feeds())["y"].astype(np.float32), outputs(model, _feeds())["y"].astype(np.float32)
    assert float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.95


@pytest.mark.parametrize(
    "spec", ["pow2(min-params=0)", "ternary(min-params=0)", "prune-weights(ratio=0.5,min-params=0)"]
)
def test_other_weight_passes_say_float16_weights_are_kmeans_only(spec):
    out, report = optimize(_half_model(), spec)
    reasons = {s.node: s.reason for s in report.passes[-1].skips}
    assert "is float16 (the com.onnxcomp ops are float32; kmeans compresses it)" in reasons["conv"], reasons
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in _half_model().graph.node]
