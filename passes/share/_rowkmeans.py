"""Batched weighted 1-D k-means: one codebook per row of a matrix, all rows at once (the codebook fit of the
error-compensated mode, ``_gptvq``), and the nearest-centroid assignment.

A row's values are sorted once; a cluster is then a contiguous slice whose weight, weighted sum and weighted
sum of squares are differences of prefix sums, so Lloyd's step costs one binary search per bound.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ATOMS_ABOVE = 8192  # rows longer than this are clustered as ATOMS runs of sorted values
ATOMS = 4096
ATOM_TAIL = 256  # values at each end kept as atoms of their own
STARTS = ("linear", "quantile", "kmeans++", "kmeans++", "kmeans++", "kmeans++")


@dataclasses.dataclass
class RowKMeans:
    centroids: np.ndarray  # [R, k] sorted ascending per row
    labels: np.ndarray  # [R, n] int64
    inertia: np.ndarray  # [R] weighted sum of squared errors


def _row_keys(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys that sort all rows of the row-sorted ``u`` [R, n] as one array: r + (u - lo_r) / (2 span_r).

    A value v of row r maps to the same key by ``_key(v, r)``; searching keys of bounds among the keys of
    values gives per-row searchsorted results in one call (offset by r * n).
    """
    import numpy as np

    lo = u[:, :1]
    span = np.maximum(u[:, -1:] - lo, 1e-30)
    rows = np.arange(u.shape[0], dtype=np.float64)[:, None]
    return rows + (u - lo) / (2 * span), lo, span


def _key(v: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    import numpy as np

    rows = np.arange(v.shape[0], dtype=np.float64)[:, None]
    return rows + np.clip((v - lo) / (2 * span), -0.25, 0.75)


def _batched_search(keys: np.ndarray, lo: np.ndarray, span: np.ndarray, bounds: np.ndarray, side: str) -> np.ndarray:
    """Per row r: searchsorted(u[r], bounds[r], side) for row-sorted u (given by its keys)."""
    import numpy as np

    r, n = keys.shape
    pos = np.searchsorted(keys.ravel(), _key(bounds, lo, span).ravel(), side=side).reshape(bounds.shape)
    return pos - (np.arange(r) * n)[:, None]


def _init(u: np.ndarray, w: np.ndarray, k: int, how: str | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Initial centroids [R, k] for row-sorted values u with weights w (an array: given centroids)."""
    import numpy as np

    r, n = u.shape
    if not isinstance(how, str):
        return np.broadcast_to(np.asarray(how, np.float64), (r, k)).copy()
    if how == "linear":
        return np.linspace(u[:, 0], u[:, -1], k, axis=1)
    cw = np.cumsum(w, axis=1)
    total = np.maximum(cw[:, -1:], 1e-300)
    if how == "quantile":
        targets = (np.arange(k) + 0.5) / k * total
        idx = np.minimum(np.sum(cw[:, :, None] < targets[:, None, :], axis=1), n - 1)
        return np.take_along_axis(u, idx, axis=1)
    # k-means++ (D^2 * weight sampling), all rows at once
    c = np.empty((r, k))
    pick = np.minimum(np.sum(cw < rng.random((r, 1)) * total, axis=1), n - 1)
    c[:, 0] = u[np.arange(r), pick]
    d2 = (u - c[:, :1]) ** 2
    for j in range(1, k):
        p = np.cumsum(w * d2, axis=1)
        tot = p[:, -1:]
        pick = np.minimum(np.sum(p < rng.random((r, 1)) * tot, axis=1), n - 1)
        c[:, j] = np.where(tot[:, 0] > 0, u[np.arange(r), pick], c[:, j - 1])
        d2 = np.minimum(d2, (u - c[:, j : j + 1]) ** 2)
    return c


def row_kmeans(
    values: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    *,
    starts: tuple[str | np.ndarray, ...] = STARTS,
    max_iter: int = 300,
    swaps: int = 8,
    rng: np.random.Generator | None = None,
) -> RowKMeans:
    """Weighted 1-D k-means of every row of ``values`` [R, n] (one codebook per row), best of ``starts``.

    Lloyd's algorithm on the sorted rows: a cluster is a contiguous slice, so its weight and weighted sum
    are differences of prefix sums; all rows move together (one searchsorted over row-offset keys). An
    empty cluster keeps its centroid. Each start runs until no assignment changes or ``max_iter``; per
    row the start with the smallest inertia wins. A start is "linear" (evenly spaced over the row's range),
    "quantile" (weighted quantiles), "kmeans++" (D^2-weighted sampling) or an array of initial centroids
    ([k] or [R, k]). After Lloyd converges, ``swaps`` rounds move the cheapest centroid next to the
    centroid of the costliest cluster and re-run Lloyd, kept per row where the inertia drops.
    """
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"row_kmeans needs a non-empty 2-D array, got shape {v.shape}")
    r, n = v.shape
    w = np.ones_like(v) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), v.shape)
    order = np.argsort(v, axis=1, kind="stable")
    u = np.take_along_axis(v, order, axis=1)
    wu = np.take_along_axis(w, order, axis=1)
    if n <= k:
        # every value its own centroid (the largest repeated): exact
        c = np.concatenate([u, np.repeat(u[:, -1:], k - n, axis=1)], axis=1)
        return RowKMeans(c, nearest(v, c), np.zeros(r))
    zeros = np.zeros((r, 1))
    cw = np.concatenate([zeros, np.cumsum(wu, axis=1)], axis=1)
    cwv = np.concatenate([zeros, np.cumsum(wu * u, axis=1)], axis=1)
    cwv2 = np.concatenate([zeros, np.cumsum(wu * u * u, axis=1)], axis=1)
    if n > ATOMS_ABOVE:
        # long rows: Lloyd on atoms, runs of sorted values (single values in the tails, where outliers
        # are, equal counts in between); a cluster is then a run of atoms, its sums exact
        edges = np.unique(
            np.concatenate([np.arange(ATOM_TAIL), n - np.arange(ATOM_TAIL), np.linspace(0, n, ATOMS, dtype=np.int64)])
        )
        edges = edges[(edges >= 0) & (edges <= n)]
        cw, cwv, cwv2 = cw[:, edges], cwv[:, edges], cwv2[:, edges]
        wu = np.diff(cw, axis=1)
        u = np.diff(cwv, axis=1) / np.where(wu > 0, wu, 1.0)
        # an atom of zero weight sits at its first value (keeps u sorted)
        u = np.where(wu > 0, u, np.take_along_axis(np.take_along_axis(v, order, axis=1), edges[None, :-1], 1))
        u = np.maximum.accumulate(u, axis=1)
        n = u.shape[1]
    keys, lo, span = _row_keys(u)
    ends = np.full((r, 1), n)

    def cuts_of(c: np.ndarray) -> np.ndarray:
        bounds = (c[:, :-1] + c[:, 1:]) / 2
        return np.concatenate([np.zeros((r, 1), np.int64), _batched_search(keys, lo, span, bounds, "right"), ends], 1)

    def sums(cuts: np.ndarray, table: np.ndarray) -> np.ndarray:
        at = np.take_along_axis(table, cuts, axis=1)
        return at[:, 1:] - at[:, :-1]

    def lloyd(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Converged centroids, the inertia per row, and per cluster its inertia and weight."""
        c = np.sort(c, axis=1)
        cuts = None
        for _ in range(max_iter):
            new = cuts_of(c)
            if cuts is not None and np.array_equal(new, cuts):
                break
            cuts = new
            sw, sv = sums(cuts, cw), sums(cuts, cwv)
            c = np.sort(np.where(sw > 0, sv / np.where(sw > 0, sw, 1.0), c), axis=1)
        cuts = cuts_of(c)
        sw, sv, sv2 = sums(cuts, cw), sums(cuts, cwv), sums(cuts, cwv2)
        per = np.maximum(sv2 - 2 * c * sv + c * c * sw, 0.0)
        return c, per.sum(axis=1), per, sw

    rows_i = np.arange(r)

    def cost(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inertia and mean of the sorted slices [a, b) of every row (a, b: [R, m] indices)."""
        s0 = np.take_along_axis(cw, b, 1) - np.take_along_axis(cw, a, 1)
        s1 = np.take_along_axis(cwv, b, 1) - np.take_along_axis(cwv, a, 1)
        s2 = np.take_along_axis(cwv2, b, 1) - np.take_along_axis(cwv2, a, 1)
        safe = np.where(s0 > 0, s0, 1.0)
        return np.maximum(s2 - s1 * s1 / safe, 0.0), s1 / safe

    def merge_split(c: np.ndarray, per: np.ndarray) -> np.ndarray | None:
        """Centroids after the best merge of two neighbouring clusters and the best split of one cluster
        into two (exact costs from the prefix sums), for the rows where that predicts a gain."""
        cuts = cuts_of(c)
        # split: every position p inside a cluster [a, b) as the cut, cost(a, p) + cost(p, b)
        pos = np.broadcast_to(np.arange(1, n), (r, n - 1))
        cl = np.sum(pos[:, :, None] >= cuts[:, None, 1:-1], axis=2)  # cluster of position p
        a_, b_ = np.take_along_axis(cuts, cl, 1), np.take_along_axis(cuts, cl + 1, 1)
        inside = (pos > a_) & (pos < b_)
        left, ml = cost(a_, pos)
        right, mr = cost(pos, b_)
        gain = np.where(inside, np.take_along_axis(per, cl, 1) - left - right, -np.inf)
        p_best = np.argmax(gain, axis=1)
        g_best = gain[rows_i, p_best]
        s_cl = cl[rows_i, p_best]
        # merge: clusters j and j + 1 into one, not the one being split
        merged, mm = cost(cuts[:, :-2], cuts[:, 2:])
        loss = merged - per[:, :-1] - per[:, 1:]
        j = np.arange(k - 1)[None, :]
        loss = np.where((j == s_cl[:, None]) | (j + 1 == s_cl[:, None]), np.inf, loss)
        j_best = np.argmin(loss, axis=1)
        l_best = loss[rows_i, j_best]
        go = g_best - l_best > 1e-12 * np.maximum(per.sum(axis=1), 1e-300)
        if not go.any():
            return None
        out = c.copy()
        out[rows_i, s_cl] = ml[rows_i, p_best]
        out[rows_i, j_best] = mr[rows_i, p_best]
        out[rows_i, j_best + 1] = mm[rows_i, j_best]
        return np.where(go[:, None], out, c)

    def jump(c: np.ndarray, per: np.ndarray, sw: np.ndarray) -> np.ndarray:
        gap = np.diff(c, axis=1)
        inf = np.full((r, 1), np.inf)
        near = np.minimum(np.concatenate([inf, gap], 1), np.concatenate([gap, inf], 1))
        drop = np.argmin(per + sw * near**2, axis=1)
        split = np.argmax(per, axis=1)
        spread = np.sqrt(per[rows_i, split] / np.maximum(sw[rows_i, split], 1e-300))
        out = c.copy()
        same = drop == split
        out[rows_i, drop] = np.where(same, c[rows_i, drop], c[rows_i, split] + 0.5 * spread)
        out[rows_i, split] = np.where(same, c[rows_i, split], c[rows_i, split] - 0.5 * spread)
        return out

    best_c, best_in = None, None
    for how in starts:
        c, inertia, per, sw = lloyd(_init(u, wu, k, how, rng))
        for _ in range(swaps if k > 2 and n > k else 0):
            # a Lloyd fixed point is only a local optimum. Two moves, each followed by Lloyd and kept for
            # the rows that improved: (a) merge the two neighbouring clusters that cost least to merge and
            # split the cluster that gains most (exact costs); (b) move the centroid that is cheapest to
            # drop (inertia + weight * squared gap to its neighbour) to both sides of the costliest one
            improved = False
            for trial in (merge_split(c, per), jump(c, per, sw)):
                if trial is None:
                    continue
                c2, in2, per2, sw2 = lloyd(trial)
                better = in2 < inertia * (1 - 1e-12)
                if better.any():
                    improved = True
                    c = np.where(better[:, None], c2, c)
                    per = np.where(better[:, None], per2, per)
                    sw = np.where(better[:, None], sw2, sw)
                    inertia = np.where(better, in2, inertia)
            if not improved:
                break
        if best_c is None:
            best_c, best_in = c, inertia
        else:
            better = inertia < best_in
            best_c = np.where(better[:, None], c, best_c)
            best_in = np.where(better, inertia, best_in)
    assert best_c is not None and best_in is not None
    return RowKMeans(best_c, nearest(v, best_c), best_in)


def nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per row: the index of the nearest of its sorted centroids (ties to the lower one).

    The index is the count of decision bounds (midpoints) strictly below the value: one binary search when
    all rows share one codebook, else k - 1 comparisons per value for small codebooks, else one search over
    row-offset keys (``_row_keys``) for all rows at once.
    """
    import numpy as np

    bounds = (centroids[:, :-1] + centroids[:, 1:]) / 2  # [R, k-1]
    if bounds.shape[1] == 0:
        return np.zeros(values.shape, np.int64)
    if bounds.shape[0] == 1:
        return np.searchsorted(bounds[0], values, side="left").astype(np.int64)
    if bounds.shape[1] <= 16:
        return np.sum(values[:, :, None] > bounds[:, None, :], axis=2).astype(np.int64)
    keys, lo, span = _row_keys(bounds)
    pos = np.searchsorted(keys.ravel(), _key(values, lo, span).ravel(), side="left").reshape(values.shape)
    return (pos - (np.arange(bounds.shape[0]) * bounds.shape[1])[:, None]).astype(np.int64)
