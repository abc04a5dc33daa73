"""verify.compare_arrays: what counts as equal outputs."""

from __future__ import annotations

import numpy as np

from onnxcomp.verify import Tolerance, compare_arrays


def test_nan_in_the_same_places_is_equal():
    # a model whose outputs hold NaN (log of a negative input, 0/0) must verify against itself
    ref = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    m = compare_arrays("y", ref, ref.copy(), Tolerance.lossless())
    assert m.ok, m


def test_non_finite_values_that_differ_fail():
    ref = np.array([1.0, np.nan, np.inf], np.float32)
    for new in ([1.0, np.inf, np.inf], [1.0, np.nan, -np.inf], [1.0, 1.0, np.inf]):
        m = compare_arrays("y", ref, np.array(new, np.float32), Tolerance.lossless())
        assert not m.ok and "non-finite" in m.why, new


def test_nan_or_negative_tolerance_is_a_usage_error():
    # a NaN bound made every comparison false: verification passed whatever the outputs
    import pytest

    from onnxcomp.errors import UsageError

    for kw in ({"atol": float("nan")}, {"rtol": float("nan")}, {"min_cosine": float("nan")}, {"atol": -1.0}):
        with pytest.raises(UsageError):
            Tolerance(**kw)


def _saturated_model():
    """x [N, 64] -> MatMul [64, 32] -> Add(-12) -> Sigmoid: below 1e-3 on every generated input (a detector's
    probability map on noise)."""
    from onnx import helper

    from tests.support.compressed import make_model

    rng = np.random.default_rng(0)
    inits = {"w": (rng.standard_normal((64, 32)) / 8).astype(np.float32), "b": np.full(32, -12.0, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["y"]),
    ]
    return make_model(nodes, inits, [("x", ["N", 64])], [("y", ["N", 32])])


def test_a_failure_on_a_saturated_output_says_the_generated_inputs_do_not_exercise_it():
    import pytest

    from onnxcomp.api import optimize
    from onnxcomp.errors import VerificationError

    model = _saturated_model()
    with pytest.raises(VerificationError) as err:
        optimize(model, "kmeans(bits=1,min-params=0)", verify=True)
    assert "cosine" in str(err.value) and "the inputs do not exercise it; verify on real samples" in str(err.value)
    # with calibration samples the hint is not given (they are the user's real inputs)
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    with pytest.raises(VerificationError) as err:
        optimize(model, "kmeans(bits=1,min-params=0)", verify=True, calib={"x": x})
    assert "do not exercise" not in str(err.value)
