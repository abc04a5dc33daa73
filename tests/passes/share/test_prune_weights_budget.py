"""prune-weights(target-sparsity=S): per-layer ratios from measured sensitivity meet S and beat one uniform ratio."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.compressed import make_model, run


def _two_branches(loud: float = 100.0, tails: bool = False):
    """x -> A -> ya and x -> B -> *loud -> yb: with calibration data, pruning B costs loud^2 times more output
    error than pruning A. ``tails``: A's weights mostly tiny with a few large (cheap to prune in weight space)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((48, 40)).astype(np.float32)
    if tails:
        a *= np.where(rng.random(a.shape) < 0.15, 1.0, 0.01).astype(np.float32)
    b = rng.standard_normal((48, 40)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["ya"], name="mm_a"),
        helper.make_node("MatMul", ["x", "B"], ["b0"], name="mm_b"),
        helper.make_node("Mul", ["b0", "loud"], ["yb"], name="loud_b"),
    ]
    inits = {"A": a, "B": b, "loud": np.array(loud, np.float32)}
    return make_model(nodes, inits, [("x", ["N", 48])], [("ya", ["N", 40]), ("yb", ["N", 40])])


def _sparsity(report):
    return {rec.name: rec.extra["sparsity"] for rec in report.passes[0].layers}


def _output_error(model, pruned, x):
    ref, got = run(model, {"x": x}), run(pruned, {"x": x})
    return sum(float(((g - r) ** 2).sum()) for g, r in zip(got, ref, strict=True)) / sum(
        float((r**2).sum()) for r in ref
    )


def test_calibrated_allocation_spares_the_sensitive_layer_and_beats_uniform():
    model = _two_branches()
    rng = np.random.default_rng(1)
    calib, test = {"x": rng.standard_normal((64, 48)).astype(np.float32)}, rng.standard_normal((64, 48))
    test = test.astype(np.float32)
    spec = "prune-weights(target_sparsity=0.5,allocation={})"
    smart, rep = optimize(model, spec.format("sensitivity"), calib=calib)
    flat, rep_u = optimize(model, spec.format("uniform"), calib=calib)
    for r in (rep, rep_u):
        assert abs(r.passes[0].counters["sparsity"] - 0.5) <= 0.01
    s = _sparsity(rep)
    assert s["mm_a"] > 0.8 and s["mm_b"] < 0.2, s
    assert _sparsity(rep_u) == {"mm_a": 0.5, "mm_b": 0.5}
    assert _output_error(model, smart, test) < 0.2 * _output_error(model, flat, test)
    again, _ = optimize(model, spec.format("sensitivity"), calib=calib)
    assert again.SerializeToString() == smart.SerializeToString()


def test_data_free_allocation_uses_the_weight_proxy():
    model = _two_branches(loud=1.0, tails=True)
    pruned, rep = optimize(model, "prune-weights(target_sparsity=0.6)")
    s = _sparsity(rep)
    assert abs(rep.passes[0].counters["sparsity"] - 0.6) <= 0.01
    assert s["mm_a"] > s["mm_b"] + 0.2, s  # the heavy-tailed layer loses little energy per zero
    x = np.random.default_rng(2).standard_normal((32, 48)).astype(np.float32)
    flat, _ = optimize(model, "prune-weights(target_sparsity=0.6,allocation=uniform)")
    assert _output_error(model, pruned, x) < _output_error(model, flat, x)
    assert any("budget by weight error proxy" in rec.decision for rec in rep.passes[0].layers)


@pytest.mark.parametrize("target", [0.3, 0.7, 0.85])
def test_target_sparsity_is_met_within_one_percent_on_a_cnn(target):
    from models import builders

    model = builders.resnet(depth=18, width=0.25, image_size=16)
    _, rep = optimize(model, f"prune-weights(target_sparsity={target})")
    assert abs(rep.passes[0].counters["sparsity"] - target) <= 0.01


def test_target_sparsity_options_are_checked():
    model = _two_branches()
    for spec in (
        "prune-weights(target_sparsity=1.2)",
        "prune-weights(target_sparsity=0.5,scope=global)",
        "prune-weights(target_sparsity=0.97)",  # above the largest candidate ratio
    ):
        with pytest.raises(UsageError):
            optimize(model, spec)
