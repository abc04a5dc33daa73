"""The mixed-precision budget allocator (passes/share/_budget.py): meets its budget within 1%, never
exceeds it, and beats one uniform setting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnxcomp.passes.share import BudgetError, Option, allocate

BITS = (2, 3, 4, 5, 6, 8)


def _layers(seed: int, n: int) -> tuple[list[list[Option]], np.ndarray]:
    """Layers of realistic sizes (1e3..1e6 weights): stored bits = weights * b + a 2**b-entry fp32 codebook;
    error ~ sensitivity * 4**-b (each bit halves the quantization noise amplitude)."""
    rng = np.random.default_rng(seed)
    params = np.round(10 ** rng.uniform(3, 6, n)).astype(int)
    sens = 10 ** rng.uniform(-2, 2, n)
    layers = [
        [Option(p * b + 32 * 2**b, s * 4.0**-b * rng.uniform(0.8, 1.2)) for b in BITS] for p, s in zip(params, sens)
    ]
    return layers, params


@pytest.mark.parametrize("seed,n,target", [(0, 40, 4.0), (1, 120, 4.0), (2, 60, 3.0), (3, 80, 5.5), (4, 30, 2.5)])
def test_meets_the_budget_within_one_percent(seed, n, target):
    layers, params = _layers(seed, n)
    budget = target * params.sum()
    choice = allocate(layers, budget)
    cost = sum(layers[i][c].cost for i, c in enumerate(choice))
    assert cost <= budget
    assert cost >= 0.99 * budget
    # better than the uniform setting closest to the target that fits
    uniform = max(j for j, b in enumerate(BITS) if sum(layers[i][j].cost for i in range(n)) <= budget)
    err = sum(layers[i][c].error for i, c in enumerate(choice))
    assert err <= sum(layers[i][uniform].error for i in range(n))


def test_close_to_the_optimum_on_small_problems():
    worst = 1.0
    for seed in range(30):
        layers, params = _layers(100 + seed, 4)
        budget = 4.0 * params.sum()
        choice = allocate(layers, budget)
        err = sum(layers[i][c].error for i, c in enumerate(choice))
        best = min(
            sum(layers[i][c].error for i, c in enumerate(combo))
            for combo in itertools.product(range(len(BITS)), repeat=4)
            if sum(layers[i][c].cost for i, c in enumerate(combo)) <= budget
        )
        worst = max(worst, err / best)
    assert worst <= 1.02  # the DP is exact up to rounding the costs to 1/20000 of the budget


def test_sensitive_layers_get_more_bits():
    layers = [[Option(1000 * b, s * 4.0**-b) for b in BITS] for s in (1.0, 100.0, 1.0, 1.0)]
    choice = allocate(layers, 4.0 * 4000)
    bits = [BITS[c] for c in choice]
    assert bits[1] == max(bits) and bits[1] > 4


def test_budget_below_the_cheapest_setting_is_an_error():
    layers, params = _layers(5, 10)
    with pytest.raises(BudgetError):
        allocate(layers, 1.0 * params.sum())
