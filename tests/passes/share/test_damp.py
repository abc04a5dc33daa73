"""The compensated mode's Hessian ridge (`damp`, GPTQ's percdamp) of kmeans, pow2 and ternary."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.compressed import decoded_weights, make_model


def _fc_and_correlated_inputs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 32)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, [("x", ["b", 48])], [("y", ["b", 32])]
    )
    mix = rng.standard_normal((4, 48))
    x = (rng.standard_normal((256, 4)) @ mix + 0.05 * rng.standard_normal((256, 48))).astype(np.float32)
    return model, w, x


def _off_nearest(w: np.ndarray, q: np.ndarray) -> float:
    """Share of weights not decoded to the level nearest them (the levels: the layer's decoded values)."""
    levels = np.unique(q)
    nearest = levels[np.abs(w[..., None] - levels).argmin(-1)]
    return float(np.mean(~np.isclose(q, nearest)))


def test_a_large_damp_leaves_nothing_to_compensate_and_a_small_one_moves_rounding():
    """H + damp * mean(diag H) * I: with a huge ridge the inverse Hessian is ~ a multiple of I, so GPTQ moves no
    error between inputs and every weight takes its nearest level; with GPTQ's 1% on correlated inputs many
    weights take another level (the compensation), and the output error on the calibration inputs is lower."""
    model, w, x = _fc_and_correlated_inputs()
    spec = "kmeans(bits=3,group-size=0,sequential=false,refine=false,damp={})"
    small, rep_small = optimize(model, spec.format(0.01), calib={"x": x})
    large, _ = optimize(model, spec.format(1e6), calib={"x": x})
    assert "compensated" in rep_small.passes[0].layers[0].decision
    q_small, q_large = (next(iter(decoded_weights(m).values())) for m in (small, large))
    assert _off_nearest(w, q_large) == 0.0
    assert _off_nearest(w, q_small) > 0.1  # measured 0.16 (0.09 at damp=1, 0.002 at 100)

    def out_err(q):
        return np.linalg.norm(x @ (w - q)) / np.linalg.norm(x @ w)

    assert out_err(q_small) < 0.2 * out_err(q_large)  # measured 0.016 vs 0.178


@pytest.mark.parametrize("spec", ["kmeans(bits=4,damp=0)", "pow2(bits=4,damp=-0.1)", "ternary(damp=0)"])
def test_damp_must_be_positive(spec):
    model, _, x = _fc_and_correlated_inputs()
    with pytest.raises(UsageError, match="damp must be > 0"):
        optimize(model, spec, calib={"x": x})


@pytest.mark.parametrize("spec", ["pow2(bits=4,damp={})", "ternary(damp={})"])
def test_fixed_grids_take_the_ridge_too(spec):
    """pow2 and ternary pass damp to their Hessians: the calibration output error grows with the ridge (less
    compensation), measured 0.017 / 0.059 / 0.18 (pow2) and 0.061 / 0.12 / 0.29 (ternary) at 0.01 / 1 / 1e6."""
    model, w, x = _fc_and_correlated_inputs()
    errs = []
    for d in (0.01, 1.0, 1e6):
        q = next(iter(decoded_weights(optimize(model, spec.format(d), calib={"x": x})[0]).values()))
        errs.append(np.linalg.norm(x @ (w - q)) / np.linalg.norm(x @ w))
    assert errs[0] < 0.6 * errs[1] < 0.6 * 0.6 * errs[2]
