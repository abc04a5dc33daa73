"""fuse-activation: Conv + activation -> com.microsoft FusedConv, equal under onnxruntime (optimizations off)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from onnxcomp.pipeline import DEFAULT_PIPELINE
from tests.support.random_graphs import Builder
from tests.support.run import apply, op_counts, outputs, reasons

SHAPE = (3, 3, 7, 9)


def _x(shape=SHAPE, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3}


def _conv_act(act, opset=13, bias=True, **attrs):
    b = Builder(opset)
    x = b.input("x", list(SHAPE))
    c = b.conv(x, 3, 5, bias=bias, pads=[1, 1, 1, 1])
    inputs = [c]
    if act == "Clip" and opset >= 11:
        inputs += [attrs.pop("min_input", ""), attrs.pop("max_input", "")]
        while inputs and inputs[-1] == "":
            inputs.pop()
    b.node(act, inputs, outputs=["y"], **attrs)
    b.output("y")
    return b


CASES = [
    ("Relu", 13, {}, None),
    ("Sigmoid", 13, {}, None),
    ("Tanh", 13, {}, None),
    ("LeakyRelu", 13, {"alpha": 0.2}, [0.2]),
    ("LeakyRelu", 7, {}, [0.01]),
    ("HardSigmoid", 13, {"alpha": 0.3, "beta": 0.4}, [0.3, 0.4]),
    ("HardSigmoid", 9, {}, [0.2, 0.5]),
    ("Clip", 9, {"min": -0.5, "max": 1.5}, [-0.5, 1.5]),
    ("Clip", 7, {"max": 6.0}, [-3.4028234663852886e38, 6.0]),
]


@pytest.mark.parametrize(("act", "opset", "attrs", "params"), CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_fused_conv_equals_conv_and_activation(act, opset, attrs, params, bias):
    model = _conv_act(act, opset, bias, **attrs).model()
    out, res = apply(model, "fuse-activation", _x(), exact=True)  # same MLAS kernels: bitwise equal
    (node,) = out.graph.node
    assert (node.op_type, node.domain) == ("FusedConv", "com.microsoft")
    got = {a.name: a for a in node.attribute}
    assert got["activation"].s.decode() == act
    if params is None:
        assert "activation_params" not in got
    else:
        np.testing.assert_allclose(list(got["activation_params"].floats), params, rtol=1e-6)
    assert {(o.domain, o.version) for o in out.opset_import} >= {("com.microsoft", 1)}
    assert res.counters["fused"] == 1


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 6.0), (None, 6.0), (0.0, None)])
def test_clip_opset11_constant_bounds(lo, hi):
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    c = b.conv(x, 3, 5, pads=[1, 1, 1, 1])
    ins = [c, b.const(lo) if lo is not None else "", b.const(hi) if hi is not None else ""]
    while ins[-1] == "":
        ins.pop()
    b.node("Clip", ins, outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-activation", _x(), rtol=1e-6, atol=1e-6)
    assert op_counts(out) == {"FusedConv": 1}


def test_clip_with_dynamic_bound_skipped():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    hi = b.input("hi", [], TensorProto.FLOAT)
    b.node("Clip", [b.conv(x, 3, 5), b.const(0.0), hi], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-activation", {**_x(), "hi": np.array(2.0, np.float32)})
    assert op_counts(out) == {"Conv": 1, "Clip": 1}
    assert "min/max are not constant" in reasons(res)


def test_shared_or_graph_output_conv_skipped():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    c1, c2 = b.conv(x, 3, 5), b.conv(x, 3, 5)
    b.node("Relu", [c1], outputs=["y1"])
    b.node("Add", [b.node("Relu", [c2]), c2], outputs=["y2"])
    b.output("y1")
    b.output("y2")
    b.output(c1)
    out, res = apply(b.model(), "fuse-activation", _x())
    assert op_counts(out) == {"Conv": 2, "Relu": 2, "Add": 1}
    assert len(res.skips) == 2


def test_non_float32_conv_skipped():
    b = Builder(13)
    x = b.input("x", [1, 3, 5, 5], TensorProto.DOUBLE)
    w = b.const(np.ones((2, 3, 3, 3)), dtype=np.float64)
    b.node("Relu", [b.node("Conv", [x, w])], outputs=["y"])
    b.output("y", None, TensorProto.DOUBLE)
    from tests.support.run import run_on_graph

    graph, res = run_on_graph(b.model(), "fuse-activation")
    assert [n.op for n in graph.nodes] == ["Conv", "Relu"]
    assert "float32 only" in reasons(res)


def test_after_default_pipeline_and_with_ort_optimizations():
    """Conv -> BN -> Relu: the default pipeline folds BN, fuse-activation then fuses the Relu; the result also
    runs with onnxruntime's own optimizations on."""
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    b.node("Relu", [b.bn(b.conv(x, 3, 5), 5)], outputs=["y"])
    b.output("y")
    model = b.model()
    out, _ = apply(model, DEFAULT_PIPELINE + ",fuse-activation", _x(), rtol=1e-5, atol=1e-5)
    assert op_counts(out) == {"FusedConv": 1}
    from onnxcomp.ort import session

    ref = outputs(model, _x())["y"]
    got = session(out, optimize=True).run(None, _x())[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_not_in_default_pipeline():
    assert "fuse-activation" not in DEFAULT_PIPELINE.split(",")
