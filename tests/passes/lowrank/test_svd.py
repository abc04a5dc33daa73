"""lowrank: exact on weights of low rank, Eckart-Young error otherwise, shapes and skips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.api import optimize
from tests.support.run import assert_same_outputs, op_types, outputs


def _low_rank(rng, rows, cols, rank):
    return (rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))).astype(np.float32)


def _model(nodes, inputs, output, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, [output], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def mlp(w1, w2, b2, trans_b=False):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w1.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w2.shape[0] if trans_b else w2.shape[1]])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"], name="fc2", transB=int(trans_b), alpha=0.5, beta=2.0),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")]
    return _model(nodes, [x], y, inits)


def conv_model(w, b, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1], "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[0], "H2", "W2"])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)]
    return _model(nodes, [x], y, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])


@pytest.mark.parametrize("trans_b", [False, True])
def test_exact_rank_weights_lose_nothing(trans_b):
    rng = np.random.default_rng(0)
    w1 = _low_rank(rng, 97, 131, 9)
    w2 = _low_rank(rng, 131, 67, 5)
    m = mlp(w1, w2.T.copy() if trans_b else w2, rng.standard_normal(67).astype(np.float32), trans_b)
    out, rep = optimize(m, "lowrank(energy=1.0,max_param_ratio=0.9,min_params=100)")
    assert op_types(out) == ["MatMul", "MatMul", "Relu", "MatMul", "Gemm"]
    ranks = {r.name: r.extra["rank"] for r in rep.passes[0].layers}
    assert sorted(ranks.values()) == [5, 9]
    feeds = {"x": rng.standard_normal((3, 97)).astype(np.float32)}
    assert_same_outputs(m, out, feeds, rtol=1e-4, atol=1e-4)


def test_conv_factorization_keeps_strides_pads_and_bias():
    rng = np.random.default_rng(1)
    m_out, c, k = 24, 16, 3
    w = _low_rank(rng, m_out, c * k * k, 4).reshape(m_out, c, k, k)
    b = rng.standard_normal(m_out).astype(np.float32)
    m = conv_model(w, b, kernel_shape=[3, 3], pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])
    out, rep = optimize(m, "lowrank(rank=4,min_params=10)")
    assert op_types(out) == ["Conv", "Conv"]
    assert rep.passes[0].layers[0].params_after == 4 * (m_out + c * k * k)
    feeds = {"x": rng.standard_normal((2, c, 13, 11)).astype(np.float32)}
    assert_same_outputs(m, out, feeds, rtol=1e-4, atol=1e-4)


def test_error_matches_eckart_young_bound():
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((128, 96)).astype(np.float32)
    w2 = rng.standard_normal((96, 10)).astype(np.float32)
    m = mlp(w1, w2, np.zeros(10, np.float32))
    out, rep = optimize(m, "lowrank(rank=16,min_params=2000)")
    rec = next(r for r in rep.passes[0].layers if r.name.startswith("fc1"))
    s = np.linalg.svd(w1.astype(np.float64), compute_uv=False)
    expected = np.sqrt(np.sum(s[16:] ** 2) / np.sum(s**2))
    assert rec.error == pytest.approx(expected, rel=1e-6)
    # the factorized weight is the best rank-16 approximation: outputs differ by exactly that error on X = I
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    ab = [v for k, v in inits.items() if k.startswith("w1_")]
    u, v = sorted(ab, key=lambda t: t.shape[0], reverse=True)
    w_hat = u.astype(np.float64) @ v
    assert np.linalg.norm(w1 - w_hat) / np.linalg.norm(w1) == pytest.approx(expected, rel=1e-4)
    # on X = I the factorized model computes exactly the rank-16 weight: Y = 0.5 * relu(W_hat) @ W2 (+ 2 * 0)
    new = outputs(out, {"x": np.eye(128, dtype=np.float32)})["y"]
    np.testing.assert_allclose(new, 0.5 * np.maximum(w_hat, 0) @ w2, rtol=1e-4, atol=1e-4)


def test_skips_with_reasons():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    m = conv_model(w, np.zeros(8, np.float32), kernel_shape=[3, 3], group=2)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w[:, :2].copy(), "w"))
    m2 = mlp(
        rng.standard_normal((6, 5)).astype(np.float32),
        rng.standard_normal((5, 3)).astype(np.float32),
        np.zeros(3, np.float32),
    )
    _, rep = optimize(m, "lowrank(min_params=1)")
    assert "grouped" in rep.passes[0].skips[0].reason
    _, rep = optimize(m2, "lowrank")
    assert all("min-params" in s.reason for s in rep.passes[0].skips)
    full = rng.standard_normal((64, 64)).astype(np.float32)
    _, rep = optimize(
        mlp(full, rng.standard_normal((64, 3)).astype(np.float32), np.zeros(3, np.float32)),
        "lowrank(energy=1.0,min_params=100)",
    )
    assert any("keeps" in s.reason for s in rep.passes[0].skips)
    assert onnx.checker.check_model(m) is None


def test_weight_shared_by_two_layers_is_not_duplicated():
    # two MatMuls reading one weight: factorizing each would store two pairs of factors (a larger model)
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((64, 4)) @ rng.standard_normal((4, 64))).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y1"], name="a"),
            helper.make_node("MatMul", ["x2", "w"], ["y2"], name="b"),
        ],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 64]) for n in ("x", "x2")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 64]) for n in ("y1", "y2")],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out, rep = optimize(m, "lowrank(rank=24,min_params=100)")
    params = sum(int(np.prod(t.dims)) for t in out.graph.initializer)
    assert params <= w.size
    assert rep.passes[0].counters.get("params_removed", 0) == w.size - params
    assert {s.node for s in rep.passes[0].skips} == {"a", "b"}
    assert all("shared" in s.reason for s in rep.passes[0].skips)


@pytest.mark.parametrize("spec", ["lowrank(rank=0)", "lowrank(energy=0)", "lowrank(energy=1.5)"])
def test_invalid_options_are_usage_errors(spec):
    from onnxcomp.errors import UsageError

    rng = np.random.default_rng(5)
    m = mlp(
        rng.standard_normal((6, 5)).astype(np.float32),
        rng.standard_normal((5, 3)).astype(np.float32),
        np.zeros(3, np.float32),
    )
    with pytest.raises(UsageError):
        optimize(m, spec)
