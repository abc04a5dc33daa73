"""Fast weighted 1-D k-means (Lloyd's algorithm on the sorted values).

In one dimension a Lloyd assignment step is a set of cut points: with sorted centroids c_0 < ... < c_{k-1},
value u belongs to cluster i iff b_{i-1} < u <= b_i with b_i = (c_i + c_{i+1}) / 2 (ties go to the lower
centroid, as an argmin over distances does). On the sorted values (with their sample weights), every
cluster is a contiguous slice, so its weight, weighted sum and weighted sum of squares are differences of
prefix sums: one Lloyd iteration costs O(k log n) instead of O(n k). Sorting once dominates; the final
labels are one binary search per value over the k - 1 boundaries.

Iterations run until the assignment no longer changes (a fixed point of Lloyd's algorithm), so the inertia
is never above that of a generic Lloyd implementation stopped by a tolerance from the same initialization.
An empty cluster takes the value farthest from its centroid (as scikit-learn relocates them).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

Init = Literal["linear", "density"]


@dataclasses.dataclass
class KMeans1D:
    centroids: np.ndarray  # float64 [k], sorted
    labels: np.ndarray  # int64, same shape as the input values
    inertia: float  # sum of w * (v - c[label])**2
    iterations: int


def init_centroids(values: np.ndarray, k: int, init: Init = "linear", weights: np.ndarray | None = None) -> np.ndarray:
    """Deep Compression's linear initialization (evenly spaced over [min, max]) or density (quantiles)."""
    import numpy as np

    v = np.asarray(values, np.float64).ravel()
    if init == "linear":
        return np.linspace(v.min(), v.max(), k)
    if init == "density":
        order = np.argsort(v, kind="stable")
        w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64).ravel()[order]
        cdf = np.cumsum(w)
        targets = (np.arange(k) + 0.5) / k * cdf[-1]
        return v[order][np.minimum(np.searchsorted(cdf, targets), v.size - 1)]
    raise ValueError(f"unknown init {init!r}")


def kmeans_1d(
    values: np.ndarray,
    k: int,
    *,
    weights: np.ndarray | None = None,
    init: Init | np.ndarray = "linear",
    max_iter: int = 300,
) -> KMeans1D:
    """Weighted 1-D k-means; returns sorted centroids and each value's label."""
    import numpy as np

    v = np.asarray(values).ravel()
    if v.size == 0:
        raise ValueError("k-means needs at least one value")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    w_all = None if weights is None else np.asarray(weights, np.float64).ravel()
    if w_all is not None and w_all.shape != v.shape:
        raise ValueError("weights must have one entry per value")
    # sorted values (duplicates allowed: a cluster is a slice of them) and their weights
    if w_all is None:
        u = np.sort(v).astype(np.float64)
        wu = None
    else:
        order = np.argsort(v, kind="stable")
        u, wu = v[order].astype(np.float64), w_all[order]
    n_distinct = 1 + int(np.count_nonzero(u[1:] != u[:-1]))
    if n_distinct <= k:
        # every distinct value gets its own centroid: exact
        distinct = np.unique(u)
        centroids = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        labels = np.searchsorted(distinct, np.asarray(values, np.float64))
        return KMeans1D(centroids, labels.astype(np.int64), 0.0, 0)
    wu_ = np.ones_like(u) if wu is None else wu
    cw = np.concatenate([[0.0], np.cumsum(wu_)])
    cwv = np.concatenate([[0.0], np.cumsum(wu_ * u)])
    cwv2 = np.concatenate([[0.0], np.cumsum(wu_ * u * u)])
    c = np.sort(
        np.asarray(init, np.float64).ravel() if isinstance(init, np.ndarray) else init_centroids(v, k, init, w_all)
    )
    if c.size != k:
        raise ValueError(f"init has {c.size} centroids, expected {k}")
    cuts = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        bounds = (c[:-1] + c[1:]) / 2
        new_cuts = np.concatenate([[0], np.searchsorted(u, bounds, side="right"), [u.size]])
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break  # assignment unchanged: c are the means of these clusters
        cuts = new_cuts
        sw = cw[cuts[1:]] - cw[cuts[:-1]]
        sv = cwv[cuts[1:]] - cwv[cuts[:-1]]
        empty = sw <= 0
        if empty.any():
            _relocate(u, wu_, cuts, c, sw, sv, empty)
        c = np.sort(sv / sw)
    bounds = (c[:-1] + c[1:]) / 2
    cuts = np.concatenate([[0], np.searchsorted(u, bounds, side="right"), [u.size]])
    sw = cw[cuts[1:]] - cw[cuts[:-1]]
    sv = cwv[cuts[1:]] - cwv[cuts[:-1]]
    sv2 = cwv2[cuts[1:]] - cwv2[cuts[:-1]]
    # sum w (u - c)^2 = sv2 - 2 c sv + c^2 sw per cluster
    inertia = float(np.sum(sv2 - 2 * c * sv + c * c * sw))
    # label = number of boundaries strictly below the value (ties go to the lower centroid)
    labels = np.searchsorted(bounds, v, side="left")
    return KMeans1D(c, labels.astype(np.int64).reshape(np.shape(values)), max(inertia, 0.0), it)


def _relocate(
    u: np.ndarray,
    wu: np.ndarray,
    cuts: np.ndarray,
    c: np.ndarray,
    sw: np.ndarray,
    sv: np.ndarray,
    empty: np.ndarray,
) -> None:
    """Empty clusters take the values farthest from their current centroid (as scikit-learn relocates them).

    The chosen value leaves its cluster: its weight and weighted sum move to the empty cluster (in place on
    ``sw`` and ``sv``).
    """
    import numpy as np

    n_empty = int(empty.sum())
    cand, owner = [], []
    for i in np.flatnonzero(~empty):
        lo, hi = int(cuts[i]), int(cuts[i + 1])
        # the farthest members of a contiguous cluster are at its two ends
        idx = np.unique(np.concatenate([np.arange(lo, min(hi, lo + n_empty)), np.arange(max(lo, hi - n_empty), hi)]))
        cand.append(idx)
        owner.append(np.full(idx.size, i))
    cand_a, owner_a = np.concatenate(cand), np.concatenate(owner)
    dist = (u[cand_a] - c[owner_a]) ** 2
    order = np.argsort(-dist, kind="stable")[:n_empty]
    for e, j in zip(np.flatnonzero(empty), order, strict=False):
        q, i = cand_a[j], owner_a[j]
        if sw[i] - wu[q] <= 0:
            continue  # never empty another cluster
        sw[i] -= wu[q]
        sv[i] -= wu[q] * u[q]
        sw[e], sv[e] = wu[q], wu[q] * u[q]
    still = sw <= 0
    if still.any():  # nothing left to move: keep the old centroid
        sw[still], sv[still] = 1.0, c[still]
