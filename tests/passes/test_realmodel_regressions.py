"""Regressions for bugs found on real trained models (tests/e2e/test_real_models.py), reduced to small graphs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes.common import apply, ops, reasons
from tests.passes.graphgen import Builder

RTOL, ATOL = 1e-5, 1e-5


def _x(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _bn_params(b, c):
    r = b.rng
    return [b.const(r.uniform(0.5, 1.5, c)), b.const(r.normal(0, 0.2, c)), b.const(r.normal(0, 0.2, c)),
            b.const(r.uniform(0.5, 2.0, c))]


# ------------------------------------------------ fuse-bn: Conv/ConvTranspose/Gemm -> Add(bias) -> BN (Paddle)
@pytest.mark.parametrize("bias_shape", [(1, 6, 1, 1), (6, 1, 1), (1,)])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_fuse_bn_through_a_separate_conv_bias_add(bias_shape, conv_bias):
    """PP-OCRv5's detector: ConvTranspose -> Add(bias) -> BatchNormalization was left unfused."""
    b = Builder(13, seed=len(bias_shape))
    x = b.input("x", [2, 3, 5, 7])
    ins = [x, b.weight((6, 3, 3, 3))] + ([b.const(b.rng.standard_normal(6))] if conv_bias else [])
    c = b.node("Conv", ins, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = b.node("Add", [c, b.const(b.rng.standard_normal(bias_shape))])
    b.node("Relu", [b.node("BatchNormalization", [a, *_bn_params(b, 6)])], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((2, 3, 5, 7)), rtol=RTOL, atol=ATOL)
    assert ops(out) == {"Conv": 1, "Relu": 1}
    assert res.counters["fused"] == 1


@pytest.mark.parametrize("group", [1, 2])
def test_fuse_bn_through_a_separate_conv_transpose_bias_add(group):
    b = Builder(13, seed=group)
    x = b.input("x", [1, 4, 5, 7])
    t = b.node("ConvTranspose", [x, b.weight((4, 3, 2, 2))], group=group, strides=[2, 2])
    a = b.node("Add", [b.const(b.rng.standard_normal((1, 3 * group, 1, 1))), t])  # constant first
    b.node("BatchNormalization", [a, *_bn_params(b, 3 * group)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((1, 4, 5, 7)), rtol=RTOL, atol=ATOL)
    assert ops(out) == {"ConvTranspose": 1}


def test_fuse_bn_through_a_gemm_bias_sub():
    b = Builder(13)
    x = b.input("x", [3, 4])
    g = b.node("Gemm", [x, b.weight((5, 4))], transB=1)
    s = b.node("Sub", [g, b.const(b.rng.standard_normal(5))])
    b.node("BatchNormalization", [s, *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert ops(out) == {"Gemm": 1}


def test_bias_add_read_twice_or_varying_spatially_is_left_alone():
    b = Builder(13)
    x = b.input("x", [1, 3, 5, 7])
    c = b.node("Conv", [x, b.weight((6, 3, 1, 1))], kernel_shape=[1, 1])
    a1 = b.node("Add", [c, b.const(b.rng.standard_normal((6, 1, 7)))])  # varies along W: not a bias
    b.node("BatchNormalization", [a1, *_bn_params(b, 6)], outputs=["y1"])
    c2 = b.node("Conv", [x, b.weight((6, 3, 1, 1))], kernel_shape=[1, 1])
    a2 = b.node("Add", [c2, b.const(b.rng.standard_normal((6, 1, 1)))])
    b.node("BatchNormalization", [a2, *_bn_params(b, 6)], outputs=["y2"])
    b.node("Relu", [a2], outputs=["y3"])  # the biased conv output is read by another node too
    for y in ("y1", "y2", "y3"):
        b.output(y)
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 5, 7)), rtol=RTOL, atol=ATOL)
    assert ops(out)["BatchNormalization"] == 2 and ops(out)["Add"] == 2
    assert "no foldable op before it" in reasons(res)
