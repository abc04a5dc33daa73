"""kmeans: error against bits, pruned zeros kept exactly zero, the sparse layout, weighted and refined codebooks,
option errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import builders
from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.compressed import (
    custom_nodes,
    decoded_weights,
    make_model,
    run,
)
from tests.support.run import assert_same_outputs


def _feeds(model: onnx.ModelProto, batch: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    return builders.random_inputs(model, batch=batch, seed=seed)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
def test_kmeans_error_falls_with_bits(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 96])], opset=17)
    out, report = optimize(model, f"kmeans(bits={bits})")
    (layer,) = report.passes[0].layers
    # Lloyd-Max quantizer of a Gaussian: distortion ~ 2.7 * 4**-bits (relative MSE), sqrt for Frobenius
    assert layer.error < 1.3 * np.sqrt(2.7 * 4.0**-bits) + 1e-3
    w_hat = next(iter(decoded_weights(out).values()))
    assert len(np.unique(w_hat)) <= 2**bits


def test_pruned_zeros_stay_exactly_zero_and_sparse_layout():
    model = builders.mlp(in_features=64, hidden=(128, 96))
    pruned, _ = optimize(model, "prune-weights(ratio=0.8)")
    out, report = optimize(pruned, "kmeans(bits=4)")
    dec = decoded_weights(out)
    orig = {n.output[0]: n for n in io.normalize(pruned).graph.node}
    w = _weights(pruned)
    for name, w_hat in dec.items():
        node = orig[name]
        if node.op_type == "Add":
            node = next(m for m in io.normalize(pruned).graph.node if m.output[0] in node.input)
        wo = w[node.input[1]]
        if node.op_type == "Gemm":
            wo = wo.T
        np.testing.assert_array_equal(w_hat == 0, wo == 0)
    formats = {layer.name: layer.extra["format"] for layer in report.passes[0].layers}
    assert any(f.startswith("sparse") for f in formats.values()), formats
    assert {n.op_type for n in custom_nodes(out)} >= {"SparseCodebookMatMul"}


def test_sparse_option():
    model = builders.mlp(in_features=64, hidden=(128,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.5)")
    never, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    always, _ = optimize(pruned, "kmeans(bits=4,sparse=always)")
    assert "SparseCodebookMatMul" not in {n.op_type for n in custom_nodes(never)}
    assert "SparseCodebookMatMul" in {n.op_type for n in custom_nodes(always)}
    auto, _ = optimize(pruned, "kmeans(bits=4)")  # 50% sparse: the EIE layout is larger at 4 bits
    assert "SparseCodebookMatMul" not in {n.op_type for n in custom_nodes(auto)}
    feeds = _feeds(model)
    assert_same_outputs(never, always, feeds, rtol=1e-5, atol=1e-6)


def test_kmeans_weighted_and_refined_codebooks_fit_the_outputs_better():
    model = builders.mlp(in_features=32, hidden=(64,))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 32)).astype(np.float32) * np.linspace(0.1, 10, 32).astype(np.float32)
    calib = {"input": x}
    ref = run(model, calib)[0]

    def err(spec, c=calib):
        out, _ = optimize(model, spec, calib=c)
        return float(np.linalg.norm(run(out, calib)[0] - ref))

    plain = err("kmeans(bits=2)", None)
    weighted = err("kmeans(bits=2,refine=false)")
    refined = err("kmeans(bits=2)")
    assert weighted < plain and refined < weighted


def test_bits_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError):
        optimize(builders.mlp(), "kmeans(bits=9)")
    with pytest.raises(UsageError):
        optimize(builders.mlp(), "pow2(bits=1)")


@pytest.mark.parametrize("spec", ["kmeans(bits=4)", "pow2", "ternary", "prune-weights(ratio=0.5)"])
def test_a_quantized_model_says_why_nothing_changed(spec):
    # onnxruntime's quantizer writes MatMulInteger / ConvInteger with int8 weights: no float weight is a target,
    # and the report says so instead of an unexplained "no change"
    from onnx import TensorProto

    w = numpy_helper.from_array(np.arange(-64, 64, dtype=np.int8).reshape(16, 8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    out, report = optimize(model, spec)
    (skip,) = report.passes[-1].skips
    assert skip.node == "(model)" and "quantized already (1 MatMulInteger)" in skip.reason
    assert [n.op_type for n in out.graph.node] == ["MatMulInteger"]


@pytest.mark.parametrize("spec", ["kmeans(bits=4)", "pow2", "ternary", "prune-weights(ratio=0.5)"])
def test_a_qdq_weight_says_it_is_quantized_already(spec):
    # a QDQ model's weight is an int8 constant read through DequantizeLinear (kept by fold-constants): the layer
    # is skipped as quantized, not as "not a constant"
    from onnx import TensorProto

    w = numpy_helper.from_array(np.arange(-64, 64, dtype=np.int8).reshape(16, 8), "wq")
    scale = numpy_helper.from_array(np.array(0.01, np.float32), "s")
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [w, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    out, report = optimize(model, spec)
    reasons = {s.node: s.reason for s in report.passes[-1].skips}
    assert reasons["mm"] == "the weight is quantized already (int8, read through DequantizeLinear)", reasons
    assert [n.op_type for n in out.graph.node] == ["DequantizeLinear", "MatMul"]
