"""Mixed precision under a budget (the AMC / HAWQ idea): per-layer choices from measured error curves.

Every layer has candidate settings (bit widths, pruning ratios), each with a cost (stored bits, kept FLOPs)
and a predicted error (the model-output error when only that layer is changed, measured on calibration
data, or a weight-space proxy without data). Assuming the errors of different layers add up, the best
assignment solves a multiple-choice knapsack: minimize sum_l err_l(c_l) subject to sum_l cost_l(c_l) <= B.

``allocate`` solves it twice and keeps the better answer: (1) by dynamic programming over the budget cut
into ``DP_UNITS`` units (costs rounded up, so the answer is feasible; exact up to that rounding), and
(2) greedily on the lower convex hull of each layer's (cost, error) curve (the Lagrangian relaxation's
path: always the upgrade with the best error saved per unit of cost that still fits). Both then spend what
is left of the budget on single changes that fit and lower the error. The result never exceeds the
budget; with more than a few layers it is within a fraction of a percent of it.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Option:
    cost: float  # e.g. stored bits of the layer at this setting
    error: float  # predicted error contribution of the layer at this setting


class BudgetError(ValueError):
    """The budget is below the cheapest setting of every layer."""


def _hull(options: Sequence[Option]) -> list[int]:
    """Indices of the lower convex hull of (cost, error), by increasing cost and decreasing error."""
    order = sorted(range(len(options)), key=lambda i: (options[i].cost, options[i].error))
    pts: list[int] = []
    for i in order:
        if pts and options[i].error >= options[pts[-1]].error:
            continue  # costs more (or the same) and is not better: dominated
        while len(pts) >= 2:
            a, b = options[pts[-2]], options[pts[-1]]
            c = options[i]
            # b lies on or above the segment a-c: not on the lower hull
            if (b.error - a.error) * (c.cost - a.cost) >= (c.error - a.error) * (b.cost - a.cost):
                pts.pop()
            else:
                break
        pts.append(i)
    return pts


DP_UNITS = 20000


def allocate(layers: Sequence[Sequence[Option]], budget: float) -> list[int]:
    """The chosen option index per layer: least total error with total cost <= ``budget``."""
    if not layers:
        return []
    greedy = _fill(layers, _greedy(layers, budget), budget)
    dp = _dp(layers, budget)
    if dp is None:
        return greedy
    dp = _fill(layers, dp, budget)

    def err(choice: list[int]) -> float:
        return sum(layers[i][c].error for i, c in enumerate(choice))

    return dp if err(dp) < err(greedy) else greedy


def _dp(layers: Sequence[Sequence[Option]], budget: float) -> list[int] | None:
    """Multiple-choice knapsack by dynamic programming on the budget in DP_UNITS units (costs rounded up);
    None when rounding leaves no feasible assignment."""
    import math

    import numpy as np

    unit = budget / DP_UNITS
    inf = float("inf")
    best = np.full(DP_UNITS + 1, inf)
    best[0] = 0.0
    picks = np.zeros((len(layers), DP_UNITS + 1), np.int16)
    for i, opts in enumerate(layers):
        new = np.full(DP_UNITS + 1, inf)
        for j, o in enumerate(opts):
            w = math.ceil(o.cost / unit - 1e-9)
            if w > DP_UNITS:
                continue
            cand = np.full(DP_UNITS + 1, inf)
            cand[w:] = best[: DP_UNITS + 1 - w] + o.error
            better = cand < new
            new[better] = cand[better]
            picks[i, better] = j
        best = new
    if not np.isfinite(best).any():
        return None
    c = int(np.argmin(best))
    choice = [0] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        j = int(picks[i, c])
        choice[i] = j
        c -= math.ceil(layers[i][j].cost / unit - 1e-9)
    return choice


def _greedy(layers: Sequence[Sequence[Option]], budget: float) -> list[int]:
    hulls = [_hull(opts) for opts in layers]
    choice = [h[0] for h in hulls]  # the cheapest undominated setting of every layer
    pos = [0] * len(layers)
    total = sum(layers[i][c].cost for i, c in enumerate(choice))
    if total > budget * (1 + 1e-12):
        raise BudgetError(f"the budget {budget:.6g} is below the cheapest setting of every layer ({total:.6g})")

    def push(heap: list, i: int) -> None:
        if pos[i] + 1 < len(hulls[i]):
            a, b = layers[i][hulls[i][pos[i]]], layers[i][hulls[i][pos[i] + 1]]
            slope = (a.error - b.error) / max(b.cost - a.cost, 1e-300)  # error saved per unit of cost
            heapq.heappush(heap, (-slope, i))

    heap: list = []
    for i in range(len(layers)):
        push(heap, i)
    while heap:
        _, i = heapq.heappop(heap)
        a, b = layers[i][hulls[i][pos[i]]], layers[i][hulls[i][pos[i] + 1]]
        if total + b.cost - a.cost > budget:
            continue  # this layer's next step does not fit; smaller steps of other layers may
        total += b.cost - a.cost
        pos[i] += 1
        choice[i] = hulls[i][pos[i]]
        push(heap, i)
    return choice


def _fill(layers: Sequence[Sequence[Option]], choice: list[int], budget: float) -> list[int]:
    """What is left of the budget: any single change (hull or not) that fits and lowers the error, best first."""
    choice = list(choice)
    total = sum(layers[i][c].cost for i, c in enumerate(choice))
    while True:
        best = None
        for i, opts in enumerate(layers):
            cur = opts[choice[i]]
            for j, o in enumerate(opts):
                if o.error < cur.error and total + o.cost - cur.cost <= budget:
                    gain = cur.error - o.error
                    if best is None or gain > best[0]:
                        best = (gain, i, j)
        if best is None:
            return choice
        _, i, j = best
        total += layers[i][j].cost - layers[i][choice[i]].cost
        choice[i] = j
