"""fuse-affine: per-channel Mul/Add/Sub/Div after Conv/ConvTranspose/Gemm/MatMul/BatchNorm, chains, skips."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.random_graphs import Builder
from tests.support.run import apply, init, op_counts, reasons

RTOL, ATOL = 1e-5, 1e-5
SHAPE = (3, 3, 7, 9)


def _x(shape=SHAPE, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _sign_const(b, shape):
    return b.const(b.rng.uniform(0.5, 1.5, shape) * b.rng.choice([-1, 1], shape))


def _conv_then(ops_consts, opset=13, bias=True):
    """x -> Conv(3->5) -> op1(c1) -> op2(c2) ... -> y."""
    b = Builder(opset)
    x = b.input("x", list(SHAPE))
    t = b.conv(x, 3, 5, bias=bias, pads=[1, 1, 1, 1])
    for i, (op, shape, const_first) in enumerate(ops_consts):
        c = _sign_const(b, shape)
        t = b.node(op, [c, t] if const_first else [t, c], outputs=["y"] if i == len(ops_consts) - 1 else None)
    b.output("y")
    return b.model()


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("shape", [(5, 1, 1), (1, 5, 1, 1), (), (1,), (1, 1, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_then_per_channel_op(op, shape, bias):
    out, res = apply(_conv_then([(op, shape, False)], bias=bias), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1}
    assert res.counters["fused"] == 1
    assert out.graph.node[0].output == ["y"]


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub"])
def test_constant_first_operand(op):  # c * x, c + x, c - x
    out, _ = apply(_conv_then([(op, (5, 1, 1), True)]), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1}


def test_chain_folds_into_one_conv():
    chain = [("Mul", (5, 1, 1), False), ("Add", (1, 5, 1, 1), False), ("Sub", (), True), ("Div", (5, 1, 1), False)]
    out, res = apply(_conv_then(chain), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1}
    assert res.counters["fused"] == 4
    assert out.graph.node[0].doc_string == "onnxcomp fuse-affine from Mul_7, Add_10, Sub_13, Div_15"


def test_provenance_accumulates_across_passes():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    t = b.bn(b.conv(x, 3, 5, pads=[1, 1, 1, 1]), 5, name="bn")
    b.node("Mul", [t, _sign_const(b, (5, 1, 1))], outputs=["y"], name="scale")
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn,fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1}
    assert out.graph.node[0].doc_string == ("onnxcomp fuse-bn from bn; onnxcomp fuse-affine from scale")


@pytest.mark.parametrize("shape", [(1, 1, 7, 9), (1, 1, 1, 9), (9,), (3, 5, 1, 1), (1, 1, 5, 1, 1)])
def test_non_channel_constant_skipped(shape):
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    b.node("Mul", [b.conv(x, 3, 5, pads=[1, 1, 1, 1]), _sign_const(b, shape)], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, "Mul": 1}
    assert "non-channel axis" in reasons(res)


def test_div_by_zero_and_non_finite_skipped():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    d = b.node("Div", [b.conv(x, 3, 5), b.const(np.array([1, 0, 2, 3, 4]).reshape(5, 1, 1))])
    b.node("Mul", [b.conv(d, 5, 5), b.const(np.array([1, np.inf, 2, 3, 4]).reshape(5, 1, 1))], outputs=["y"])
    b.output("y")
    model = b.model()
    out, res = apply(model, "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 2, "Div": 1, "Mul": 1}
    assert "zeros (Div), infinities or NaNs" in reasons(res)


def test_conv_output_graph_output_or_shared_skipped():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    c1 = b.conv(x, 3, 5)
    c2 = b.conv(x, 3, 5)
    b.node("Add", [b.node("Mul", [c1, _sign_const(b, (5, 1, 1))]), c2], outputs=["y"])
    b.node("Add", [c2, _sign_const(b, (5, 1, 1))], outputs=["z"])
    b.output("y")
    b.output("z")
    b.output(c1)
    out, res = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 2, "Mul": 1, "Add": 2}
    assert "is a graph output" in reasons(res) and "also read by other nodes" in reasons(res)


def test_shared_conv_weights_not_mutated():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    w = b.weight((5, 3, 3, 3), name="W")
    b.node("Mul", [b.node("Conv", [x, w]), _sign_const(b, (5, 1, 1))], outputs=["y"])
    b.node("Conv", [x, w], outputs=["z"])
    b.output("y")
    b.output("z")
    model = b.model()
    out, _ = apply(model, "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 2}
    np.testing.assert_array_equal(init(out, "W"), init(model, "W"))


# ------------------------------------------------------------------------------------------ other targets
@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_then_mul_add(group):
    b = Builder(13)
    x = b.input("x", [3, 4, 5, 7])
    t = b.node("ConvTranspose", [x, b.weight((4, 3, 2, 2))], group=group, strides=[2, 2])
    t = b.node("Mul", [t, _sign_const(b, (3 * group, 1, 1))])
    b.node("Add", [t, _sign_const(b, (3 * group, 1, 1))], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine", _x((3, 4, 5, 7)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"ConvTranspose": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("shape", [(5,), (1, 5), ()])
def test_gemm_then_mul_add(trans_b, shape):
    b = Builder(11)
    x = b.input("x", [3, 4])
    g = b.node("Gemm", [x, b.weight((5, 4) if trans_b else (4, 5)), b.const(np.ones((3, 1)))], transB=trans_b, beta=0.5)
    b.node("Sub", [b.node("Mul", [g, _sign_const(b, shape)]), _sign_const(b, shape)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Gemm": 1}


def test_matmul_3d_mul_folded_add_kept_then_folded_into_bias():
    b = Builder(13)
    x = b.input("x", [2, 3, 4])
    m = b.node("Mul", [b.node("MatMul", [x, b.weight((4, 5))]), _sign_const(b, (5,))])  # folds into W
    a = b.node("Add", [m, _sign_const(b, (5,))])  # the MatMul bias: stays
    b.node("Div", [b.node("Mul", [a, _sign_const(b, (1, 5))]), _sign_const(b, ())], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-affine", _x((2, 3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"MatMul": 1, "Add": 1}
    assert res.counters["fused"] == 3


def test_matmul_row_constant_over_unknown_rank_is_safe():
    """A [3, 5] constant on a [2, 3, 5] MatMul output varies along axis 1: not per-feature, kept."""
    b = Builder(13)
    x = b.input("x", [2, 3, 4])
    b.node("Mul", [b.node("MatMul", [x, b.weight((4, 5))]), _sign_const(b, (3, 5))], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine", _x((2, 3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"MatMul": 1, "Mul": 1}


def test_batchnorm_then_mul_add_folded_into_bn():
    """densenet/inception-v2 pattern: BN -> Mul(scale) -> Add(bias)."""
    b = Builder(9)
    x = b.input("x", list(SHAPE))
    n = b.bn(x, 3)
    n = b.node("Mul", [n, _sign_const(b, (3, 1, 1))])
    b.node("Relu", [b.node("Add", [n, _sign_const(b, (3, 1, 1))])], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"BatchNormalization": 1, "Relu": 1}
    out, _ = apply(b.model(), "fuse-affine(batchnorm=false)", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"BatchNormalization": 1, "Mul": 1, "Add": 1, "Relu": 1}


# ------------------------------------------------------------------------------------------ chains, options
def test_constant_chains_merged_without_a_linear_op():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    t = b.node("Relu", [x])
    t = b.node("Div", [b.node("Mul", [t, _sign_const(b, (3, 1, 1))]), _sign_const(b, (1, 1, 1))])
    t = b.node("Sub", [b.node("Add", [t, _sign_const(b, ())]), _sign_const(b, (1, 1, 9))])
    b.node("Sub", [_sign_const(b, ()), t], outputs=["y"])  # c - x does not merge
    b.output("y")
    out, res = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Relu": 1, "Mul": 1, "Add": 1, "Sub": 1}
    assert res.counters["chains_merged"] == 2


def test_chain_merge_that_would_grow_the_constant_skipped():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    t = b.node("Mul", [b.node("Relu", [x]), _sign_const(b, (3, 1, 1))])
    b.node("Mul", [t, _sign_const(b, (1, 7, 9))], outputs=["y"])  # merged constant would be [3, 7, 9]
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Relu": 1, "Mul": 2}


@pytest.mark.parametrize(("options", "left"), [("mul=false", {"Mul": 1, "Add": 1}), ("add=false", {"Add": 1})])
def test_options_disable_kinds(options, left):
    model = _conv_then([("Mul", (5, 1, 1), False), ("Add", (5, 1, 1), False)])
    out, _ = apply(model, f"fuse-affine({options})", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, **left}


def test_merge_chains_option():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    b.node("Mul", [b.node("Mul", [b.node("Relu", [x]), b.const(2.0)]), b.const(3.0)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-affine(merge_chains=false)", _x())
    assert op_counts(out) == {"Relu": 1, "Mul": 2}


def test_integer_constants_ignored():
    b = Builder(13)
    x = b.input("x", [3, 4], 7)  # int64
    b.node("Mul", [b.node("Mul", [x, b.const(2, dtype=np.int64)]), b.const(3, dtype=np.int64)], outputs=["y"])
    b.output("y", None, 7)
    feeds = {"x": np.arange(12, dtype=np.int64).reshape(3, 4)}
    out, _ = apply(b.model(), "fuse-affine", feeds, exact=True)
    assert op_counts(out) == {"Mul": 2}


def test_matmul_with_input_of_unknown_rank_only_takes_vectors():
    """x of unknown rank (here 1-D at run time): a [1, N] constant would add a dim, so it stays."""
    b = Builder(13)
    x = b.input("x", [4])
    shape = b.input("s", ["L"], 7)
    m = b.node("MatMul", [b.node("Reshape", [x, shape]), b.weight((4, 5))])
    b.node("Add", [b.node("Mul", [m, _sign_const(b, (1, 5))]), b.const(0.5)], outputs=["y"])
    b.output("y", ["a", "b"])
    feeds = {**_x((4,)), "s": np.array([4], np.int64)}
    out, _ = apply(b.model(), "fuse-affine", feeds, rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Reshape": 1, "MatMul": 1, "Mul": 1, "Add": 1}


def test_subtract_chains_merged():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    t = b.node("Sub", [b.node("Relu", [x]), _sign_const(b, (3, 1, 1))])
    t = b.node("Add", [t, _sign_const(b, (3, 1, 1))])
    b.node("Sub", [t, _sign_const(b, ())], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-affine", _x(), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Relu": 1, "Add": 1}
    assert res.counters["chains_merged"] == 2
