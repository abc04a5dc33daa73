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

``allocate_counts`` does the same for item counts that must sum exactly to a target (the weights that
``prune-weights(target-sparsity=S)`` zeroes): the grid choice, then the remainder on the measured curves.
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


def allocate_counts(sizes: Sequence[int], curves: Sequence[Sequence[tuple[float, float]]], target: int) -> list[int]:
    """Items to remove per layer (pruned weights), ``target`` in all exactly, with the least predicted error.

    ``curves[l]`` holds layer l's measured (ratio, error) points (ratio: the fraction of its ``sizes[l]`` items
    removed); no layer goes beyond its measured range. The grid choice comes from ``allocate`` (cost: items
    kept, budget: all items less ``target``); what rounding leaves over or short is then taken from, or given
    to, the layers whose error changes least per item on their measured curve (linear between points), so the
    total is exact.
    """
    import numpy as np

    total = int(sum(sizes))
    if not 0 <= target <= total:
        raise BudgetError(f"cannot remove {target} of {total} items")
    if not sizes:
        return []
    layers = [[Option(n * (1.0 - r), e) for r, e in pts] for n, pts in zip(sizes, curves, strict=True)]
    try:
        choice = allocate(layers, float(total - target))
    except BudgetError:  # the grid cannot remove that much: start from the most each layer allows
        choice = [min(range(len(opts)), key=lambda j, opts=opts: opts[j].cost) for opts in layers]
    counts = [round(curves[i][c][0] * n) for i, (c, n) in enumerate(zip(choice, sizes, strict=True))]
    xs = [np.array([r * n for r, _ in sorted(pts)], dtype=np.float64) for pts, n in zip(curves, sizes, strict=True)]
    ys = [np.array([e for _, e in sorted(pts)], dtype=np.float64) for pts in curves]

    def move_size(i: int, step: int, want: int) -> int:
        """Items layer i can move by in direction ``step``: up to its next measured point, at most ``want``."""
        k, pts = counts[i], xs[i]
        ahead = pts[pts > k] if step > 0 else pts[pts < k]
        if not ahead.size:
            return 0  # never beyond the measured range
        edge = ahead[0] if step > 0 else ahead[-1]
        bound = min(sizes[i] - k if step > 0 else k, max(1, int(abs(edge - k))))
        return min(bound, want)

    diff = sum(counts) - target  # > 0: removes too many
    while diff != 0:
        step = 1 if diff < 0 else -1
        best: tuple[float, int, int] | None = None
        for i in range(len(sizes)):
            m = move_size(i, step, abs(diff))
            if m <= 0:
                continue
            k = counts[i]
            # error change per item moved (the curve is linear between measured points)
            delta = (float(np.interp(k + step * m, xs[i], ys[i])) - float(np.interp(k, xs[i], ys[i]))) / m
            if best is None or delta < best[0]:
                best = (delta, i, m)
        if best is None:
            raise BudgetError(f"cannot remove {target} of {total} items")
        _, i, m = best
        counts[i] += step * m
        diff += step * m
    return counts
