"""onnxcomp.analysis.budget.allocate_counts: exact item counts (pruned weights) from measured error curves."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.analysis.budget import BudgetError, allocate_counts

RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _curves(rng, n):
    """Convex-ish increasing error curves with a per-layer sensitivity spread over four decades."""
    sens = 10.0 ** rng.uniform(-2, 2, n)
    return [[(r, float(s * r**2 * (1 + rng.uniform(0, 0.1)))) for r in RATIOS] for s in sens], sens


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.3, 0.5, 0.77])
def test_meets_the_target_exactly_and_stays_in_range(seed, target):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    sizes = [int(s) for s in rng.integers(10, 5000, n)]
    curves, _ = _curves(rng, n)
    want = round(target * sum(sizes))
    counts = allocate_counts(sizes, curves, want)
    assert sum(counts) == want
    assert all(0 <= k <= round(0.9 * s) + 1 for k, s in zip(counts, sizes, strict=True))
    assert allocate_counts(sizes, curves, want) == counts  # deterministic


def test_least_sensitive_layers_lose_most_and_beat_uniform():
    rng = np.random.default_rng(3)
    sizes = [1000] * 8
    curves, sens = _curves(rng, 8)
    counts = allocate_counts(sizes, curves, 4000)
    ratios = np.array(counts) / 1000
    # the least sensitive layer loses more than the most sensitive one
    assert ratios[np.argmin(sens)] > ratios[np.argmax(sens)] + 0.3

    def err(ks):
        return sum(np.interp(k / 1000, RATIOS, [e for _, e in c]) for k, c in zip(ks, curves, strict=True))

    assert err(counts) < 0.5 * err([500] * 8)


def test_out_of_range_target_is_an_error():
    with pytest.raises(BudgetError):
        allocate_counts([100, 100], [[(0.0, 0.0), (0.5, 1.0)]] * 2, 150)
