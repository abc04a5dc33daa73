"""fuse-bn: BN after Conv/ConvTranspose/Gemm/MatMul and before Conv/Gemm/MatMul; skips; shared weights; opsets."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.support.random_graphs import Builder
from tests.support.run import apply, init, op_counts, reasons, run_on_graph

RTOL, ATOL = 1e-5, 1e-5


def _x(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _conv_bn(opset=17, bias=True, group=1, n=1, cin=3, cout=5, hw=(7, 9), **conv_attrs):
    b = Builder(opset, seed=opset + group)
    x = b.input("x", [n, cin, *hw])
    y = b.bn(b.conv(x, cin, cout, bias=bias, group=group, **conv_attrs), cout)
    b.node("Relu", [y], outputs=["y"])
    b.output("y")
    return b.model(), _x((n, cin, *hw))


# ------------------------------------------------------------------------------------------ after Conv
@pytest.mark.parametrize("opset", [7, 9, 11, 13, 15, 17])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_opsets(opset, bias):
    model, feeds = _conv_bn(opset, bias=bias, n=3)
    out, res = apply(model, "fuse-bn", feeds, rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, "Relu": 1}
    assert res.counters["fused"] == 1
    conv = out.graph.node[0]
    assert len(conv.input) == 3  # a bias is always needed after folding the BN shift
    assert "onnxcomp fuse-bn from" in conv.doc_string


@pytest.mark.parametrize(
    ("group", "cin", "cout", "attrs"),
    [
        (1, 3, 5, {"strides": [2, 1], "pads": [1, 0, 1, 2]}),
        (3, 3, 3, {"dilations": [2, 1]}),  # depthwise
        (3, 3, 9, {"pads": [1, 1, 1, 1]}),
        (5, 5, 5, {"auto_pad": "SAME_UPPER"}),
    ],
)
def test_conv_bn_groups_strides_dilations(group, cin, cout, attrs):
    model, feeds = _conv_bn(group=group, cin=cin, cout=cout, n=3, **attrs)
    out, _ = apply(model, "fuse-bn", feeds, rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, "Relu": 1}


@pytest.mark.parametrize("rank", [3, 5])
def test_conv1d_and_conv3d(rank):
    b = Builder(13)
    spatial = [7, 5, 3][: rank - 2]
    x = b.input("x", [2, 3, *spatial])
    w = b.weight((5, 3) + (3,) * (rank - 2))
    b.node("BatchNormalization", [b.node("Conv", [x, w]), *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((2, 3, *spatial)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1}


def _bn_params(b, c):
    r = b.rng
    return [
        b.const(r.uniform(0.5, 1.5, c)),
        b.const(r.normal(0, 0.2, c)),
        b.const(r.normal(0, 0.2, c)),
        b.const(r.uniform(0.5, 2.0, c)),
    ]


def test_bn_math_with_extreme_statistics():
    """Tiny variances (s ~ 300) and large means: the float64 fold stays at float32 rounding of the output."""
    b = Builder(17)
    x = b.input("x", [1, 3, 7, 9])
    c = b.conv(x, 3, 4)
    params = [
        b.const([1.0, 2.0, 0.5, 1.0]),
        b.const([0.0, 1.0, -1.0, 3.0]),
        b.const([10.0, -20.0, 0.1, 0.0]),
        b.const([1e-5, 1e-3, 4.0, 1e-6]),
    ]
    b.node("BatchNormalization", [c, *params], outputs=["y"], epsilon=1e-6)
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)), rtol=1e-5, atol=1e-5)
    assert op_counts(out) == {"Conv": 1}  # folded, not skipped


# ------------------------------------------------------------------------------------------ ConvTranspose
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_bn(group, bias):
    b = Builder(13, seed=group)
    cin, cog = 4, 3
    x = b.input("x", [3, cin, 5, 7])
    ins = [x, b.weight((cin, cog, 3, 3))] + ([b.const(b.rng.standard_normal(cog * group))] if bias else [])
    t = b.node("ConvTranspose", ins, group=group, strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])
    b.node("BatchNormalization", [t, *_bn_params(b, cog * group)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, cin, 5, 7)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"ConvTranspose": 1}


# ------------------------------------------------------------------------------------------ Gemm, MatMul
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("cshape", [None, (), (5,), (1, 5), (3, 5), (3, 1)])
def test_gemm_bn(trans_a, trans_b, cshape):
    b = Builder(13, seed=trans_b)
    m, k, n = 3, 4, 5
    x = b.input("x", [k, m] if trans_a else [m, k])
    ins = [x, b.weight((n, k) if trans_b else (k, n))]
    if cshape is not None:
        ins.append(b.const(b.rng.standard_normal(cshape)))
    g = b.node("Gemm", ins, transA=trans_a, transB=trans_b, alpha=0.7, beta=1.3)
    b.node("BatchNormalization", [g, *_bn_params(b, n)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((k, m) if trans_a else (m, k)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Gemm": 1}


@pytest.mark.parametrize("to_gemm", [True, False])
def test_matmul_bn_2d(to_gemm):
    b = Builder(13)
    x = b.input("x", [3, 4])
    b.node("BatchNormalization", [b.node("MatMul", [x, b.weight((4, 5))]), *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), f"fuse-bn(matmul_to_gemm={str(to_gemm).lower()})", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == ({"Gemm": 1} if to_gemm else {"MatMul": 1, "Add": 1})
    assert out.graph.node[-1].output == ["y"]


def test_matmul_with_bias_add_bn():
    b = Builder(13)
    x = b.input("x", [3, 4])
    mm = b.node("Add", [b.node("MatMul", [x, b.weight((4, 5))]), b.const(b.rng.standard_normal(5))])
    b.node("BatchNormalization", [mm, *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"MatMul": 1, "Add": 1}


def test_matmul_3d_bn_over_the_wrong_axis_skipped():
    b = Builder(13)
    x = b.input("x", [2, 5, 4])  # MatMul output [2, 5, 5]: BN's channel axis 1 is not the feature axis
    b.node("BatchNormalization", [b.node("MatMul", [x, b.weight((4, 5))]), *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((2, 5, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"MatMul": 1, "BatchNormalization": 1}
    assert "feature axis" in reasons(res)


# ------------------------------------------------------------------------------------------ BN before
@pytest.mark.parametrize(
    ("group", "attrs"),
    [(1, {}), (3, {}), (1, {"strides": [2, 2], "dilations": [1, 2]}), (1, {"auto_pad": "VALID"})],
)
def test_bn_before_conv_without_padding(group, attrs):
    b = Builder(13, seed=group)
    x = b.input("x", [3, 3, 7, 9])
    y = b.conv(b.bn(x, 3), 3, 6, group=group, **attrs)
    b.node("Relu", [y], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((3, 3, 7, 9)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, "Relu": 1}
    assert res.counters["fused_before"] == 1


def test_bn_before_1x1_same_conv_and_two_consumers():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    n = b.bn(x, 3)
    a = b.node("Conv", [n, b.weight((4, 3, 1, 1))], auto_pad="SAME_UPPER", strides=[2, 2])
    c = b.conv(n, 3, 4, k=3, bias=False)
    b.node("Relu", [a], outputs=["y1"])
    b.node("Relu", [c], outputs=["y2"])
    b.output("y1")
    b.output("y2")
    out, _ = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 2, "Relu": 2}


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"auto_pad": "SAME_UPPER"}, {"pads": [0, 0, 0, 1]}])
def test_bn_before_padded_conv_skipped(attrs):
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    b.node("Relu", [b.conv(b.bn(x, 3), 3, 4, **attrs)], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)), rtol=RTOL, atol=ATOL)
    assert op_counts(out)["BatchNormalization"] == 1
    assert "pads its input" in reasons(res)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_bn_before_gemm(trans_b, with_c):
    b = Builder(13)
    x = b.input("x", [3, 4])
    ins = [b.bn(x, 4), b.weight((5, 4) if trans_b else (4, 5))] + ([b.const(b.rng.normal(size=5))] if with_c else [])
    b.node("Gemm", ins, transB=trans_b, alpha=0.6, beta=1.7, outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Gemm": 1}


def test_bn_before_gemm_with_trans_a_skipped():
    b = Builder(13)
    x = b.input("x", [4, 4])
    b.node("Gemm", [b.bn(x, 4), b.weight((4, 5))], transA=1, outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((4, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out)["BatchNormalization"] == 1 and "transA" in reasons(res)


def test_bn_before_matmul():
    b = Builder(13)
    x = b.input("x", [3, 4])
    b.node("MatMul", [b.bn(x, 4), b.weight((4, 5))], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Gemm": 1}


def test_before_option_off():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    b.node("Relu", [b.conv(b.bn(x, 3), 3, 4)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn(before=false)", _x((1, 3, 7, 9)))
    assert op_counts(out)["BatchNormalization"] == 1


# ------------------------------------------------------------------------------------------ skips
def test_conv_output_is_graph_output_skipped():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    c = b.conv(x, 3, 4)
    b.node("BatchNormalization", [c, *_bn_params(b, 4)], outputs=["y"])
    b.output("y")
    b.output(c)
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)))
    assert op_counts(out) == {"Conv": 1, "BatchNormalization": 1}
    assert "is a graph output" in reasons(res)


def test_conv_output_read_twice_skipped():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    c = b.conv(x, 3, 4)
    n = b.node("BatchNormalization", [c, *_bn_params(b, 4)])
    b.node("Add", [n, b.node("Relu", [c])], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)))
    assert op_counts(out)["BatchNormalization"] == 1
    assert "also read by other nodes" in reasons(res)


def test_dynamic_conv_weight_skipped():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    w = b.input("w", [4, 3, 3, 3])
    b.node("BatchNormalization", [b.node("Conv", [x, w]), *_bn_params(b, 4)], outputs=["y"])
    b.output("y")
    feeds = {**_x((1, 3, 7, 9)), "w": np.ones((4, 3, 3, 3), np.float32)}
    out, res = apply(b.model(), "fuse-bn", feeds)
    assert op_counts(out)["BatchNormalization"] == 1
    assert "weight is not a floating-point constant" in reasons(res)


def test_non_constant_bn_params_skipped():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    mean = b.input("mean", [4])
    p = _bn_params(b, 4)
    b.node("BatchNormalization", [b.conv(x, 3, 4), p[0], p[1], mean, p[3]], outputs=["y"])
    b.output("y")
    feeds = {**_x((1, 3, 7, 9)), "mean": np.zeros(4, np.float32)}
    out, res = apply(b.model(), "fuse-bn", feeds)
    assert op_counts(out)["BatchNormalization"] == 1
    assert "mean is not a floating-point constant" in reasons(res)


def test_training_outputs_used_skipped():
    b = Builder(9)
    x = b.input("x", [1, 3, 7, 9])
    b.node("BatchNormalization", [b.conv(x, 3, 4), *_bn_params(b, 4)], outputs=["y", "run_mean"])
    b.output("y")
    b.output("run_mean", [4])
    graph, res = run_on_graph(b.model(), "fuse-bn")
    assert [n.op for n in graph.nodes] == ["Conv", "BatchNormalization"]
    assert "training-mode outputs" in reasons(res)


def test_training_mode_skipped():
    b = Builder(15)
    x = b.input("x", [1, 3, 7, 9])
    b.node("BatchNormalization", [b.conv(x, 3, 4), *_bn_params(b, 4)], outputs=["y"], training_mode=1)
    b.output("y")
    graph, res = run_on_graph(b.model(), "fuse-bn")
    assert [n.op for n in graph.nodes] == ["Conv", "BatchNormalization"]
    assert "training mode" in reasons(res)


# ------------------------------------------------------------------------------------------ shared weights
def test_shared_weights_are_copied_not_mutated():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    w, bias = b.weight((4, 3, 3, 3), name="W"), b.const(np.ones(4), "B")
    c1 = b.node("Conv", [x, w, bias])
    c2 = b.node("Conv", [x, w, bias])
    b.node("BatchNormalization", [c1, *_bn_params(b, 4)], outputs=["y1"])
    c3 = b.node("Conv", [b.node("Relu", [c2]), b.weight((4, 4, 1, 1)), bias])
    b.node("BatchNormalization", [c3, *_bn_params(b, 4)], outputs=["y2"])
    b.output("y1")
    b.output("y2")
    b.output(c2)  # the second conv keeps reading the original W and B
    model = b.model()
    out, res = apply(model, "fuse-bn", _x((1, 3, 7, 9)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 3, "Relu": 1}
    np.testing.assert_array_equal(init(out, "W"), init(model, "W"))
    np.testing.assert_array_equal(init(out, "B"), np.ones(4, np.float32))
    assert res.counters["fused"] == 2


def test_clone_shared_conv_feeding_only_bns():
    b = Builder(13)
    x = b.input("x", [1, 3, 7, 9])
    c = b.conv(x, 3, 4)
    b.node("BatchNormalization", [c, *_bn_params(b, 4)], outputs=["y1"])
    b.node("BatchNormalization", [c, *_bn_params(b, 4)], outputs=["y2"])
    b.output("y1")
    b.output("y2")
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 7, 9)))
    assert op_counts(out) == {"Conv": 1, "BatchNormalization": 2} and "also read" in reasons(res)
    out, res = apply(b.model(), "fuse-bn(clone_shared=true)", _x((1, 3, 7, 9)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 2}
    assert res.counters["fused"] == 2


def test_layer_records_params():
    model, feeds = _conv_bn()
    _, res = apply(model, "fuse-bn", feeds, rtol=RTOL, atol=ATOL)
    (rec,) = res.layers
    assert rec.op == "Conv" and rec.params_before == 5 * 3 * 9 + 5 + 4 * 5 and rec.params_after == 5 * 3 * 9 + 5


def test_float_weights_keep_their_dtype():
    model, feeds = _conv_bn()
    out, _ = apply(model, "fuse-bn", feeds, rtol=RTOL, atol=ATOL)
    assert {t.data_type for t in out.graph.initializer} == {TensorProto.FLOAT}
    onnx.checker.check_model(out)
