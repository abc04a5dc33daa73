"""The convolution algorithm estimator: FLOPs, bytes and predicted times per algorithm, and the choice."""

from __future__ import annotations

import pytest

from onnxcomp import estimator
from onnxcomp.cost import HARDWARE, Hardware
from onnxcomp.estimator import ConvShape
from onnxcomp.winograd import construct, transform_ops

HW = HARDWARE["zen4-1t"]


def shape(c=64, m=64, h=56, n=1, k=3, stride=1, group=1) -> ConvShape:
    o = (h + 2 * (k // 2) - k) // stride + 1
    return ConvShape(n, c, h, h, m, k, k, o, o, (stride, stride), (1, 1), group)


@pytest.mark.parametrize("m", [2, 4, 6])
def test_winograd_multiplies_are_alpha_squared_over_9_m_squared(m):
    """On a size divisible by m, the GEMMs do (m+2)^2 / (9 m^2) of the direct convolution's multiply-adds."""
    s = shape(c=32, m=48, h=12 * m)  # OH = OW = 12 m
    gemm, transform, u = estimator.winograd_terms(s, m)
    assert gemm * 9 * m * m == s.direct_flops * (m + 2) ** 2
    assert u == (m + 2) ** 2 * 32 * 48
    ops_in, ops_out = transform_ops(m)
    assert transform == 2 * (12 * 12) * (32 * ops_in + 48 * (ops_out + 2 * m * m))


def test_transform_ops_count_the_matrices_non_zeros():
    for m in (2, 4, 6):
        at, _, bt = construct(m)
        nz_bt = sum(v != 0 for row in bt for v in row)
        nz_at = sum(v != 0 for row in at for v in row)
        assert transform_ops(m) == (2 * (m + 2) * nz_bt, (2 * m + 2) * nz_at)
    assert transform_ops(4) == (264, 180)  # F(4,3): 22 non-zeros in BT, 18 in AT


def test_tile_padding_counts():
    """A 7x7 output takes 2x2 tiles of F(4,3): 64 outputs' worth of GEMM work for 49."""
    s = shape(c=16, m=16, h=7)
    gemm, _, _ = estimator.winograd_terms(s, 4)
    assert gemm == 2 * 4 * 36 * 16 * 16


@pytest.mark.parametrize(
    "s",
    [shape(k=1), shape(stride=2), shape(group=64), shape(k=5), ConvShape(1, 8, 9, 9, 8, 3, 3, 5, 5, (1, 1), (2, 2))],
)
def test_winograd_only_for_3x3_stride_1_one_group(s):
    assert set(estimator.estimate(s, HW)) == {"im2col"}


def test_winograd_predicted_faster_on_large_layers_and_bytes():
    costs = estimator.estimate(shape(), HW)
    assert set(costs) == {"im2col", "winograd2", "winograd4", "winograd6"}
    assert costs["winograd4"].seconds < costs["winograd2"].seconds < costs["im2col"].seconds
    assert costs["winograd4"].flops < costs["im2col"].flops / 3
    # the transformed weights are 36/9 = 4x the direct weights' bytes
    s = shape()
    io = 4 * s.io_elements
    assert costs["winograd4"].bytes - io == 4 * (costs["im2col"].bytes - io)


def test_weights_streamed_beyond_half_the_cache():
    big, small = shape(c=512, m=512, h=7), shape(c=128, m=128, h=28)
    assert estimator.estimate(big, HW)["winograd4"].stream_s > 0  # 36 * 512^2 floats = 37.7 MB
    assert estimator.estimate(small, HW)["winograd4"].stream_s == 0
    tiny_cache = Hardware("t", HW.peak_gflops, HW.bandwidth_gbs, llc_bytes=1 << 20)
    assert estimator.estimate(small, tiny_cache)["winograd4"].stream_s > 0


def test_profile_efficiencies_change_the_prediction():
    slow = Hardware("slow", 100.0, 30.0, efficiency={"winograd4.gemm": 0.01})
    assert estimator.estimate(shape(), slow)["winograd4"].seconds > estimator.estimate(shape(), HW)["im2col"].seconds


def test_choose_margin_and_default():
    c = estimator.AlgoCost
    costs = {"im2col": c("im2col", 1, 1, 1.0, 0.0), "winograd4": c("winograd4", 1, 1, 0.95, 0.0)}
    assert estimator.choose(costs, margin=0.0) == "winograd4"
    assert estimator.choose(costs, margin=0.1) == "im2col"  # 5% is not more than 10%
    costs["winograd4"] = c("winograd4", 1, 1, 0.5, 0.0, 0.6)  # compute 0.5 + streamed weights 0.6
    assert costs["winograd4"].seconds == pytest.approx(1.1)
    assert estimator.choose(costs, margin=0.0) == "im2col"
    assert estimator.choose({"winograd2": costs["winograd4"]}) == "winograd2"
