"""prune-channels / prune-filters(target-flops=F): per-group removal from measured sensitivity meets F and beats
one uniform ratio where one branch matters far more."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from models import builders
from onnxcomp.api import optimize
from tests.support.compressed import make_model, run


def _two_branches(loud: float = 100.0, quiet_half: bool = False):
    """x -> conv1 -> relu -> conv2 -> ya and x -> conv3 -> relu -> conv4 -> *loud -> yb.

    With calibration data, channels of conv3 cost loud^2 times more output error than conv1's. ``quiet_half``:
    half of conv1's filters and of conv2's matching input columns are tiny (cheap to remove even data-free)."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    w1, w2, w3, w4 = w(16, 8, 3, 3), w(8, 16, 3, 3), w(16, 8, 3, 3), w(8, 16, 3, 3)
    if quiet_half:
        w1[:8] *= 0.01
        w2[:, :8] *= 0.01
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["ya"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "W3", "B3"], ["h3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "W4"], ["b0"], name="conv4", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["b0", "loud"], ["yb"], name="loud_b"),
    ]
    inits = {
        "W1": w1,
        "B1": np.full(16, 0.1, np.float32),
        "W2": w2,
        "W3": w3,
        "B3": np.full(16, 0.1, np.float32),
        "W4": w4,
        "loud": np.array(loud, np.float32),
    }
    shape = ["N", 8, 12, 12]
    return make_model(nodes, inits, [("x", shape)], [("ya", shape), ("yb", shape)])


def _kept(report):
    return {rec.name: rec.extra["channels"][1] for rec in report.passes[0].layers if "channels" in rec.extra}


def _output_error(model, pruned, feeds):
    ref, got = run(model, feeds), run(pruned, feeds)
    return sum(float(((g - r) ** 2).sum()) for g, r in zip(got, ref, strict=True)) / sum(
        float((r**2).sum()) for r in ref
    )


def _images(seed, n):
    return {"x": np.random.default_rng(seed).standard_normal((n, 8, 12, 12)).astype(np.float32)}


@pytest.mark.parametrize("pass_name", ["prune-filters", "prune-channels"])
def test_calibrated_allocation_spares_the_loud_branch_and_beats_uniform(pass_name):
    model = _two_branches()
    calib = _images(1, 16)
    spec = f"{pass_name}(target_flops=0.3,round_to=1,allocation={{}})"
    smart, rep = optimize(model, spec.format("sensitivity"), calib=calib)
    flat, rep_u = optimize(model, spec.format("uniform"), calib=calib)
    for r in (rep, rep_u):
        assert abs(r.passes[0].counters["flops_removed"] - 0.3) <= 0.02
    kept = _kept(rep)
    assert kept["conv1"] < 8 and kept["conv3"] > 12, kept
    kept_u = _kept(rep_u)
    assert abs(kept_u["conv1"] - kept_u["conv3"]) <= 1, kept_u
    errs = [_output_error(model, m, {"x": x[None]}) for m in (smart, flat) for x in _images(2, 4)["x"]]
    assert np.mean(errs[:4]) < 0.2 * np.mean(errs[4:])
    notes = [rec.extra.get("note", "") for rec in rep.passes[0].layers]
    assert any("budget by output error" in n for n in notes)
    again, _ = optimize(model, spec.format("sensitivity"), calib=calib)
    assert again.SerializeToString() == smart.SerializeToString()


def test_data_free_allocation_uses_the_weight_proxy():
    model = _two_branches(loud=1.0, quiet_half=True)
    smart, rep = optimize(model, "prune-filters(target_flops=0.25,round_to=1)")
    flat, _ = optimize(model, "prune-filters(target_flops=0.25,round_to=1,allocation=uniform)")
    assert abs(rep.passes[0].counters["flops_removed"] - 0.25) <= 0.02
    kept = _kept(rep)
    assert kept["conv1"] <= 8 and kept["conv3"] == 16, kept
    feeds = _images(3, 1)
    assert _output_error(model, smart, feeds) < 0.1 * _output_error(model, flat, feeds)


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_target_flops_is_met_on_a_resnet(target):
    model = builders.resnet(depth=18, image_size=32)
    _, rep = optimize(model, f"prune-filters(target_flops={target},round_to=1)", input_shapes={"input": (1, 3, 32, 32)})
    assert abs(rep.passes[0].counters["flops_removed"] - target) < 0.02
    assert rep.passes[0].counters["sensitivity_trials"] > 0


def test_mean_replacement_sees_that_near_constant_channels_are_cheap():
    """conv1's channels are nearly constant after its ReLU (large bias, tiny filters): removing them costs
    little once conv2's bias absorbs their mean, which the refit does; zeroing them in the trial (without mean
    replacement) calls them expensive. With mean replacement the allocation takes them first."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    w1, w3 = w(16, 8, 3, 3) * 0.01, w(16, 8, 3, 3)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["ya"], name="conv2", pads=[0, 0, 0, 0]),
        helper.make_node("Conv", ["x", "W3", "B3"], ["h3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "W4", "B4"], ["yb"], name="conv4", pads=[0, 0, 0, 0]),
    ]
    inits = {
        "W1": w1,
        "B1": np.full(16, 3.0, np.float32),
        "W2": w(8, 16, 1, 1),
        "B2": np.zeros(8, np.float32),
        "W3": w3,
        "B3": np.zeros(16, np.float32),
        "W4": w(8, 16, 1, 1),
        "B4": np.zeros(8, np.float32),
    }
    shape = ["N", 8, 12, 12]
    model = make_model(nodes, inits, [("x", shape)], [("ya", shape), ("yb", shape)])
    calib = _images(1, 16)
    spec = "prune-channels(target_flops=0.3,round_to=1,mean_replace={})"
    with_mean, rep = optimize(model, spec.format("true"), calib=calib)
    without, rep0 = optimize(model, spec.format("false"), calib=calib)
    kept, kept0 = _kept(rep), _kept(rep0)
    assert kept["conv1"] < kept0["conv1"] and kept["conv3"] > kept0["conv3"], (kept, kept0)
    feeds = _images(5, 4)
    assert _output_error(model, with_mean, feeds) < 0.5 * _output_error(model, without, feeds)
