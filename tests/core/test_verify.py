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
