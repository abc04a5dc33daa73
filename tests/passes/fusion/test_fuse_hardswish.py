"""fuse-hardswish: x * Clip(x + 3, 0, 6) / 6 -> HardSwish / HardSigmoid * x, equal under onnxruntime (optimizations
off) to float rounding, in every form exporters write; chains that break are left alone, saying why."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxcomp.pipeline import DEFAULT_PIPELINE
from tests.support.random_graphs import Builder
from tests.support.run import apply, op_counts, reasons, run_on_graph

SHAPE = (3, 5, 7, 9)  # odd sizes


def _x(seed=0):
    # values across the kinks at -3 and 3 and beyond
    return {"x": (np.random.default_rng(seed).standard_normal(SHAPE) * 4).astype(np.float32)}


def _hardswish(
    b: Builder,
    x: str,
    *,
    order: str = "mul_first",
    scale: str = "div",
    add_const_first: bool = False,
    x_first: bool = True,
    consts: tuple[float, float, float, float] = (3.0, 0.0, 6.0, 6.0),
    other: str | None = None,
) -> str:
    """x * Clip(x + 3, 0, 6) / 6 in one of its exported forms; ``other``: multiply by this tensor instead of x."""
    c3, lo, hi, six = consts
    three = b.const(np.float32(c3))
    a = b.node("Add", [three, x] if add_const_first else [x, three])
    if b.opset < 11:
        clip = b.node("Clip", [a], min=lo, max=hi)
    else:
        clip = b.node("Clip", [a, b.const(np.float32(lo)), b.const(np.float32(hi))])
    by = other or x

    def times_x(t):
        return b.node("Mul", [by, t] if x_first else [t, by])

    def scaled(t):
        if scale == "div":
            return b.node("Div", [t, b.const(np.float32(six))])
        return b.node("Mul", [b.const(np.float32(1.0 / six)), t])

    return scaled(times_x(clip)) if order == "mul_first" else times_x(scaled(clip))


def _model(opset=13, conv=True, **kw):
    b = Builder(opset)
    x = b.input("x", list(SHAPE))
    h = b.conv(x, 5, 5, pads=[1, 1, 1, 1]) if conv else x
    b.node("Identity", [_hardswish(b, h, **kw)], outputs=["y"])
    b.output("y")
    return b.model()


@pytest.mark.parametrize("opset", [9, 11, 13, 14, 17])
@pytest.mark.parametrize("order", ["mul_first", "scale_first"])
@pytest.mark.parametrize("scale", ["div", "mul"])
@pytest.mark.parametrize(("add_const_first", "x_first"), [(False, True), (True, False)])
def test_fused_equals_the_chain(opset, order, scale, add_const_first, x_first):
    model = _model(opset, order=order, scale=scale, add_const_first=add_const_first, x_first=x_first)
    out, res = apply(model, "fuse-hardswish", _x(), rtol=1e-6, atol=1e-6)
    counts = op_counts(out)
    assert res.counters["fused"] == 1
    if opset >= 14:
        assert counts["HardSwish"] == 1 and not counts["HardSigmoid"]
    else:
        assert counts["HardSigmoid"] == 1 and counts["Mul"] == 1
        (hs,) = (n for n in out.graph.node if n.op_type == "HardSigmoid")
        got = {a.name: a.f for a in hs.attribute}
        assert got["alpha"] == pytest.approx(1 / 6) and got["beta"] == 0.5
    assert not counts["Clip"] and not counts["Div"] and not counts["Add"]


def test_graph_input_and_two_chains():
    # x a graph input (no producer), and two chains in a row: the second reads the first's output
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    y = _hardswish(b, _hardswish(b, x), order="scale_first", scale="mul")
    b.node("Identity", [y], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-hardswish", _x(1), rtol=1e-6, atol=1e-6)
    assert res.counters["fused"] == 2 and op_counts(out)["HardSigmoid"] == 2


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"consts": (3.0, 0.0, 5.0, 6.0)}, "not Clip(., 0, 6)"),
        ({"consts": (3.0, 0.0, 6.0, 5.0)}, "neither x * . nor . / 6"),
        ({"other": "x"}, "neither x * . nor . / 6"),  # multiplied by the conv's input, not the chain's x
    ],
)
def test_broken_chains_left_alone(kw, why):
    model = _model(13, **kw)
    out, res = apply(model, "fuse-hardswish", _x(), exact=True)
    assert not res.counters.get("fused") and not op_counts(out)["HardSigmoid"]
    assert why in reasons(res)


@pytest.mark.parametrize(
    "three",
    [
        np.float32(3.0005),  # not 3: fusing would change the output
        np.full((1, 1, 1, 1, 1), 3.0, np.float32),  # broadcasts x to rank 5: HardSwish(x) would have x's shape
    ],
)
def test_almost_a_chain_is_left_alone(three):
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    a = b.node("Add", [x, b.const(three)])
    c = b.node("Clip", [a, b.const(np.float32(0.0)), b.const(np.float32(6.0))])
    b.node("Div", [b.node("Mul", [x, c]), b.const(np.float32(6.0))], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-hardswish", _x(), exact=True)
    assert not res.counters.get("fused") and not op_counts(out)["HardSigmoid"]


def test_intermediate_read_elsewhere_left_alone():
    b = Builder(13)
    x = b.input("x", list(SHAPE))
    y = _hardswish(b, x)
    b.node("Identity", [y], outputs=["y"])
    b.output("y")
    clip = next(n for n in b.nodes if n.op_type == "Clip")
    b.output(clip.output[0])  # the Clip's output is also a graph output
    out, res = apply(b.model(), "fuse-hardswish", _x(), exact=True)
    assert not op_counts(out)["HardSigmoid"]
    assert "graph output" in reasons(res)


def test_not_a_chain_is_not_reported():
    # x + 2.9: not the start of a HardSwish; nothing fused, nothing skipped
    _, res = run_on_graph(_model(13, consts=(2.9, 0.0, 6.0, 6.0)), "fuse-hardswish")
    assert not res.counters.get("fused") and not res.skips


def test_in_the_default_pipeline():
    assert "fuse-hardswish" in DEFAULT_PIPELINE.split(",")
    out, _ = apply(_model(13), DEFAULT_PIPELINE, _x(), rtol=1e-6, atol=1e-6)
    assert op_counts(out)["HardSigmoid"] == 1


@settings(max_examples=40, deadline=None)
@given(
    opset=st.sampled_from([11, 13, 14]),
    order=st.sampled_from(["mul_first", "scale_first"]),
    scale=st.sampled_from(["div", "mul"]),
    flips=st.tuples(st.booleans(), st.booleans()),
    seed=st.integers(0, 2**16),
)
def test_property_random_inputs(opset, order, scale, flips, seed):
    model = _model(opset, conv=False, order=order, scale=scale, add_const_first=flips[0], x_first=flips[1])
    rng = np.random.default_rng(seed)
    feeds = {"x": (rng.standard_normal(SHAPE) * rng.uniform(0.5, 10)).astype(np.float32)}
    _, res = apply(model, "fuse-hardswish", feeds, rtol=1e-6, atol=1e-6)
    assert res.counters["fused"] == 1
