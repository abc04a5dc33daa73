"""prune-channels / prune-filters(target-time=T): the fraction of the roofline time (onnxcomp.cost.roofline_seconds
on a hardware profile) is met, and channels whose layers are memory-bound count for the time they cost."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from models import builders
from onnxcomp.api import optimize
from onnxcomp.cost import HARDWARE, roofline_seconds
from onnxcomp.errors import UsageError
from onnxcomp.estimator import im2col_efficiency
from tests.support.compressed import make_model

HW = HARDWARE["zen4-1t"]


def test_roofline_seconds_of_an_activation_is_its_bytes_over_the_bandwidth():
    node = helper.make_node("Relu", ["x"], ["y"])
    shape = (1, 16, 33, 31)
    n = int(np.prod(shape))
    assert roofline_seconds(node, [shape], [shape], n, HW) == pytest.approx(8 * n / (HW.bandwidth_gbs * 1e9))


def test_roofline_seconds_of_a_depthwise_conv_runs_at_its_im2col_efficiency():
    # 64 channels, 3x3, one input per group: K = 9, far below the peak; the 1x1 conv with as many FLOPs is faster
    dw = helper.make_node("Conv", ["x", "w"], ["y"], group=64, pads=[1, 1, 1, 1])
    x, w = (1, 64, 56, 56), (64, 1, 3, 3)
    flops = 2 * 64 * 9 * 56 * 56
    e = im2col_efficiency(HW, 9, 1)
    assert e < 0.5
    compute = flops / (HW.peak_gflops * 1e9 * e)
    memory = 4 * (2 * np.prod(x) + np.prod(w)) / (HW.bandwidth_gbs * 1e9)
    assert roofline_seconds(dw, [x, w], [x], flops, HW) == pytest.approx(max(compute, memory))
    pw = helper.make_node("Conv", ["x", "w"], ["y"])
    w1 = (64, 64, 1, 1)
    assert roofline_seconds(pw, [x, w1], [x], flops, HW) < roofline_seconds(dw, [x, w], [x], flops, HW)


@pytest.mark.parametrize("target", [0.25, 0.4])
def test_target_time_is_met_on_a_resnet(target):
    model = builders.resnet(depth=18, image_size=32)
    _, rep = optimize(model, f"prune-filters(target-time={target},round-to=1)", input_shapes={"input": (1, 3, 32, 32)})
    counters = rep.passes[0].counters
    assert abs(counters["time_removed_predicted"] - target) < 0.02
    assert counters["sensitivity_trials"] > 0
    assert abs(counters["flops_removed"] - target) > 0.005  # (FLOPs and time are not the same measure)


def _wide_and_deep():
    """Two branches of the same weight statistics: ``wide`` has 32 channels at 48 x 48 between two 1x1 convs of 2
    channels, through HardSwish's Mul / Div / Add / Clip (memory-bound: most of the time, few FLOPs); ``deep`` has
    32 channels at 16 x 16 between two 3x3 convs (compute-bound: most of the FLOPs)."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["xa", "Wa", "Ba"], ["a1"], name="wide_in"),
        helper.make_node("Add", ["a1", "three"], ["a2"], name="hs_add"),
        helper.make_node("Clip", ["a2", "zero", "six"], ["a3"], name="hs_clip"),
        helper.make_node("Mul", ["a1", "a3"], ["a4"], name="hs_mul"),
        helper.make_node("Div", ["a4", "six"], ["a5"], name="hs_div"),
        helper.make_node("Conv", ["a5", "Wb"], ["ya"], name="wide_out"),
        helper.make_node("Conv", ["xb", "Wc", "Bc"], ["c1"], name="deep_in", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["c2"], name="deep_relu"),
        helper.make_node("Conv", ["c2", "Wd"], ["yb"], name="deep_out", pads=[1, 1, 1, 1]),
    ]
    inits = {
        "Wa": w(32, 2, 1, 1),
        "Ba": np.full(32, 0.1, np.float32),
        "Wb": w(2, 32, 1, 1),
        "Wc": w(32, 32, 3, 3),
        "Bc": np.full(32, 0.1, np.float32),
        "Wd": w(8, 32, 3, 3),
        "three": np.array(3.0, np.float32),
        "zero": np.array(0.0, np.float32),
        "six": np.array(6.0, np.float32),
    }
    return make_model(
        nodes,
        inits,
        [("xa", [1, 2, 48, 48]), ("xb", [1, 32, 16, 16])],
        [("ya", [1, 2, 48, 48]), ("yb", [1, 8, 16, 16])],
    )


def _kept(rep, name):
    return next(r.extra["channels"][1] for r in rep.passes[0].layers if r.name == name)


def test_target_time_prunes_where_the_time_is():
    model = _wide_and_deep()
    _, by_flops = optimize(model, "prune-filters(target-flops=0.3,round-to=1)")
    _, by_time = optimize(model, "prune-filters(target-time=0.3,round-to=1)")
    # the same weight-space errors, priced by FLOPs (deep is FLOP-heavy) or by time (wide's activations are)
    assert _kept(by_time, "wide_in") < _kept(by_flops, "wide_in")
    assert _kept(by_time, "deep_in") > _kept(by_flops, "deep_in")


def test_target_time_and_target_flops_are_exclusive_and_ranged():
    model = _wide_and_deep()
    with pytest.raises(UsageError, match="not both"):
        optimize(model, "prune-filters(target-flops=0.3,target-time=0.3)")
    with pytest.raises(UsageError, match="target-time"):
        optimize(model, "prune-filters(target-time=1.5)")


def test_target_time_on_another_hardware_profile():
    model = _wide_and_deep()
    _, rep = optimize(model, "prune-filters(target-time=0.3,round-to=1,hardware=avx2-1t)")
    assert abs(rep.passes[0].counters["time_removed_predicted"] - 0.3) < 0.02


def test_target_time_needs_the_input_size():
    model = builders.resnet(depth=18, image_size=32)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(UsageError, match="--input-shape"):
        optimize(model, "prune-filters(target-time=0.3)")
    _, rep = optimize(model, "prune-filters(target-time=0.3,round-to=1)", input_shapes={"input": (1, 3, 32, 32)})
    assert abs(rep.passes[0].counters["time_removed_predicted"] - 0.3) < 0.02
