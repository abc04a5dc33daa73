"""Which channels to remove: importance criteria (CRITERIA), selection under a group's constraints, and the
schedules (per-layer ratios, one global ratio or threshold, a FLOPs target found by bisection)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from onnxcomp import names
from onnxcomp.analysis.channels import PARAM
from onnxcomp.graph import const_value

if TYPE_CHECKING:
    import numpy as np

    from onnxcomp.analysis.channels import ChannelGroup, ChannelPlan, Producer


logger = logging.getLogger(__name__)

# criterion(plan, group, rng) -> one score per channel of the group (higher = more important), or None
Criterion = Callable[["ChannelPlan", "ChannelGroup", "np.random.Generator"], "np.ndarray | None"]
CRITERIA: dict[str, Criterion] = {}


def criterion(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return deco


def _per_channel(
    plan: ChannelPlan, group: ChannelGroup, pairs: Iterable[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray | None:
    """Mean of per-position values over the positions of each channel (None when no position scored)."""
    import numpy as np

    acc = np.zeros(group.size)
    cnt = np.zeros(group.size)
    for elems, values in pairs:
        chans = plan.channels(elems)
        ok = (chans >= group.offset) & (chans < group.offset + group.size)
        np.add.at(acc, chans[ok] - group.offset, values[ok])
        np.add.at(cnt, chans[ok] - group.offset, 1)
    if not cnt.any():
        return None
    scores = acc / np.maximum(cnt, 1)
    scores[cnt == 0] = scores[cnt > 0].mean()
    return scores


def filter_norms(p: Producer, order: int) -> np.ndarray:
    """L1 or L2 norm of every output filter of a producer."""
    import numpy as np

    w = np.moveaxis(const_value(p.node.inputs[p.weight]).astype(np.float64), p.axis, 0)
    w = w.reshape(w.shape[0], -1)
    return np.abs(w).sum(axis=1) if order == 1 else np.sqrt((w * w).sum(axis=1))


def _norm_scores(plan: ChannelPlan, group: ChannelGroup, order: int) -> np.ndarray | None:
    pairs = []
    for p in group.producers:
        norms = filter_norms(p, order)
        mean = norms.mean()
        # each producer's norms relative to its own mean: residual producers of different fan-in count alike
        pairs.append((p.elems, norms / mean if mean > 0 else norms))
    return _per_channel(plan, group, pairs)


@criterion("l1")
def _l1(plan: ChannelPlan, group: ChannelGroup, rng: np.random.Generator) -> np.ndarray | None:
    """Li et al. 2017: the L1 norm of the filter."""
    return _norm_scores(plan, group, 1)


@criterion("l2")
def _l2(plan: ChannelPlan, group: ChannelGroup, rng: np.random.Generator) -> np.ndarray | None:
    return _norm_scores(plan, group, 2)


@criterion("bn")
def _bn(plan: ChannelPlan, group: ChannelGroup, rng: np.random.Generator) -> np.ndarray | None:
    """Network Slimming (Liu et al. 2017): |gamma| of the BatchNormalization after the filter."""
    import numpy as np

    pairs = [
        (m.elems, np.abs(const_value(m.node.inputs[1]).astype(np.float64)))
        for m in group.members
        if m.kind == PARAM and m.node.op == "BatchNormalization" and m.input == 1
    ]
    return _per_channel(plan, group, pairs)


@criterion("random")
def _random(plan: ChannelPlan, group: ChannelGroup, rng: np.random.Generator) -> np.ndarray | None:
    return rng.random(group.size)


def scores_for(
    plan: ChannelPlan, groups: list[ChannelGroup], name: str, rng: np.random.Generator
) -> tuple[dict[int, np.ndarray], list[str]]:
    """Scores per group id; groups the criterion cannot score (no BatchNormalization) fall back to L1."""
    out, fallback = {}, []
    for g in groups:
        s = CRITERIA[name](plan, g, rng)
        if s is None:
            s = CRITERIA["l1"](plan, g, rng)
            fallback.append(g.name)
        out[g.id] = s
    return out, fallback


# ------------------------------------------------------------------------------------------ selection
def round_keep(keep: int, n: int, round_to: int, min_channels: int) -> int:
    """Kept channel count: at least ``min_channels`` (and 1), rounded to the nearest multiple of ``round_to``
    (never below one multiple, never above ``n``)."""
    keep = max(keep, min(max(min_channels, 1), n))
    if round_to > 1 and n >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return min(keep, n)


def choose(
    group: ChannelGroup, scores: np.ndarray, n_remove: int, round_to: int = 1, min_channels: int = 1
) -> np.ndarray:
    """Local mask of the lowest-scored channels to remove, ``n_remove`` of them (after rounding the kept
    count), keeping at least ``min_channels`` in every segment and removing the same number from every
    row of a partition (grouped convolutions)."""
    import numpy as np

    n = group.size
    target = n - round_keep(n - n_remove, n, round_to, min_channels)
    removed = np.zeros(n, dtype=bool)
    if target <= 0:
        return removed
    seg_of: list[list[int]] = [[] for _ in range(n)]
    left, floor = [], []
    for k, seg in enumerate(group.segments):
        left.append(len(seg))
        floor.append(min(max(min_channels, 1), len(seg)))
        for c in seg.tolist():
            seg_of[c].append(k)

    def can(c: int) -> bool:
        return not removed[c] and all(left[k] > floor[k] for k in seg_of[c])

    def take(c: int, sign: int = 1) -> None:
        removed[c] = sign > 0
        for k in seg_of[c]:
            left[k] -= sign

    in_part = np.zeros(n, dtype=bool)
    frac = target / n
    for rows in group.partitions:
        in_part[rows.ravel()] = True
        r = min(round(frac * rows.shape[1]), rows.shape[1] - 1)
        while r > 0:
            picked: list[int] = []
            for row in rows:
                got = 0
                for c in row[np.argsort(scores[row], kind="stable")].tolist():
                    if got == r:
                        break
                    if can(c):
                        take(c)
                        picked.append(c)
                        got += 1
                if got < r:
                    break
            else:
                break
            for c in picked:
                take(c, -1)
            r -= 1
    done = int(removed.sum())
    free = np.nonzero(~in_part)[0]
    for c in free[np.argsort(scores[free], kind="stable")].tolist():
        if done >= target:
            break
        if can(c):
            take(c)
            done += 1
    return removed


# ------------------------------------------------------------------------------------------ schedules
@dataclasses.dataclass
class Schedule:
    """How many channels each group loses: a per-group ratio (``scope="layer"``: ``ratio``, overridden by
    ``ratios`` patterns) or one global ranking (``scope="global"``: ``ratio`` of all channels, or every
    channel scoring below ``threshold``) of scores normalized by their group's mean."""

    scope: str = "layer"
    ratio: float = 0.3
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    threshold: float | None = None
    normalize: bool = True
    round_to: int = 1
    min_channels: int = 1

    def group_ratio(self, group: ChannelGroup, default: float) -> float:
        for pattern, value in self.ratios.items():
            if any(producer_matches(p, pattern) for p in group.producers):
                return value
        return default

    def counts(
        self, groups: list[ChannelGroup], scores: dict[int, np.ndarray], t: float | None = None
    ) -> dict[int, int]:
        """Channels to remove per group id; ``t`` replaces the ratio (and the threshold) in a FLOPs search."""
        import numpy as np

        counts: dict[int, int] = {}
        if self.scope == "layer" and self.threshold is None:
            for g in groups:
                explicit = self.group_ratio(g, -1.0)
                r = explicit if explicit >= 0 else (self.ratio if t is None else t)
                counts[g.id] = round(min(max(r, 0.0), 1.0) * g.size)
            return counts
        norm = {g.id: self.normalized(scores[g.id]) for g in groups}
        if self.threshold is not None and t is None:
            return {g.id: int((norm[g.id] < self.threshold).sum()) for g in groups}
        ratio = self.ratio if t is None else t
        everything = np.concatenate([norm[g.id] for g in groups]) if groups else np.zeros(0)
        owner = np.concatenate([np.full(g.size, g.id) for g in groups]) if groups else np.zeros(0)
        k = round(min(max(ratio, 0.0), 1.0) * len(everything))
        lowest = owner[np.argsort(everything, kind="stable")[:k]]
        return {g.id: int((lowest == g.id).sum()) for g in groups}

    def mask(
        self, plan: ChannelPlan, groups: list[ChannelGroup], scores: dict[int, np.ndarray], counts: dict[int, int]
    ) -> np.ndarray:
        """Global removal mask: the lowest-scored ``counts[g]`` channels of every group (constraints kept)."""
        import numpy as np

        removed = np.zeros(plan.n_channels, dtype=bool)
        for g in groups:
            local = choose(g, scores[g.id], counts.get(g.id, 0), self.round_to, self.min_channels)
            removed[g.offset : g.offset + g.size] = local
        return removed

    def removal(
        self, plan: ChannelPlan, groups: list[ChannelGroup], scores: dict[int, np.ndarray], t: float | None = None
    ) -> np.ndarray:
        return self.mask(plan, groups, scores, self.counts(groups, scores, t))

    def normalized(self, s: np.ndarray) -> np.ndarray:
        mean = float(s.mean()) if s.size else 0.0
        return s / mean if self.normalize and mean > 0 else s


def producer_matches(p: Producer, pattern: str) -> bool:
    """``pattern`` (onnxcomp.names) matches the producer's node, output or weight name."""
    weight = p.node.inputs[1].name if len(p.node.inputs) > 1 else ""
    return names.matches(pattern, p.node.name, p.output, weight)


def search_flops(
    amount: Callable[[np.ndarray], float],
    schedule: Schedule,
    plan: ChannelPlan,
    groups: list[ChannelGroup],
    scores: dict[int, np.ndarray],
    target: float,
    base: float,
    hi: float = 0.95,
    steps: int = 30,
    tol: float = 0.002,
) -> tuple[float, np.ndarray, float]:
    """Remove ``target`` of the FLOPs (``amount``: of a removal mask, ``base`` with none; or of the roofline
    time): bisection on the schedule parameter ``t`` (the ratio), then a greedy refinement that moves single
    groups to their next achievable removal count (kept counts rounded to ``round_to``, at least
    ``min_channels``) towards the target, every candidate measured by the real accounting of the removal mask.
    Returns (t, removal mask, achieved fraction)."""

    def fraction(counts: dict[int, int]) -> tuple[float, np.ndarray]:
        rem = schedule.mask(plan, groups, scores, counts)
        return (1.0 - amount(rem) / base if base else 0.0), rem

    candidates = []
    lo, t_best = 0.0, 0.0
    counts_hi = schedule.counts(groups, scores, hi)
    f_hi, _ = fraction(counts_hi)
    candidates.append((abs(f_hi - target), hi, counts_hi))
    if f_hi > target:
        for _ in range(steps):
            mid = (lo + hi) / 2
            counts = schedule.counts(groups, scores, mid)
            f, _ = fraction(counts)
            candidates.append((abs(f - target), mid, counts))
            if f < target:
                lo = mid
            else:
                hi = mid
            if abs(f - target) < tol:
                break
    err, t_best, counts = min(candidates, key=lambda c: c[0])
    # the removal counts rounding can produce, per group: moves go from one to the next (a move of round_to
    # channels from an unrounded count can round back to where it started, or leave the group's range)
    sizes = {g.id: g.size for g in groups}
    rounding = (schedule.round_to, schedule.min_channels)

    def level(gid: int, n: int) -> int:  # what choose() removes when asked for n
        return sizes[gid] - round_keep(sizes[gid] - min(n, sizes[gid]), sizes[gid], *rounding)

    levels = {gid: sorted({level(gid, r) for r in range(size)}) for gid, size in sizes.items()}
    counts = {gid: level(gid, n) for gid, n in counts.items()}
    err = abs(fraction(counts)[0] - target)
    for _ in range(4 * len(groups) + 8):
        if err < tol:
            break
        best_move = None
        for gid in counts:
            i = levels[gid].index(counts[gid])
            for j in (i - 1, i + 1):
                if not 0 <= j < len(levels[gid]):
                    continue
                trial = dict(counts)
                trial[gid] = levels[gid][j]
                f, _ = fraction(trial)
                if abs(f - target) < err - 1e-9 and (best_move is None or abs(f - target) < best_move[0]):
                    best_move = (abs(f - target), trial)
        if best_move is None:
            break
        err, counts = best_move
    f, rem = fraction(counts)
    return t_best, rem, f
