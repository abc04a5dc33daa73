"""Least-squares re-fits of a layer's weights on calibration inputs: prune-weights' lsq update and the
sequential (true-target) fits of prune-weights and kmeans.

A layer's storage matrix (see ``_common``) is handled as one row w_j per output j over the inputs of its
conv group. Without an original input, a fit keeps the layer's outputs on its input X; with one
(sequential mode), it makes the current input X_c give the original output X_o w.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _common as common

if TYPE_CHECKING:
    import numpy as np

MAX_ROWS = 20000  # input positions sampled per layer


# The sequential (true-target) fit of a layer needs at least this many sampled input positions per free
# weight of an output; layers with fewer are fitted one-shot (on their original input).
MIN_ROWS_PER_WEIGHT = 2.0


def enough_rows(t: common.Target, x: np.ndarray, params: int) -> bool:
    """At least MIN_ROWS_PER_WEIGHT sampled input positions per free weight (``params``) of an output.

    The sequential fit also chases the earlier layers' error X_o w - X_c w; with about one position per
    weight it fits the calibration samples rather than the model. Measured on random-weight models with
    32 random calibration samples (relative output error on other inputs, one-shot -> sequential without
    this check -> with it): MobileNet prune-weights(0.6, lsq) 0.34 -> 0.59 -> 0.41, kmeans(3 bits)
    0.37 -> 0.54 -> 0.38; with 256 samples every layer passes it on those models and sequential wins.
    """
    return min(MAX_ROWS, common.positions(x, t)) >= MIN_ROWS_PER_WEIGHT * params


def dense_solve_flops(t: common.Target) -> float:
    """Cost of the dense re-fit's solves, groups * k^3 / 3 (k: inputs per group). The sequential fits check
    it against the pass's flop limit before computing the k x k Gram matrices (rows * k^2 flops, 8 * k^2
    bytes each): too expensive layers are fitted one-shot."""
    k = t.w2.shape[0] if t.kind == "matmul" else t.w2.shape[1]
    groups = 1 if t.kind == "matmul" else int(t.conv_attrs["group"])
    return groups * float(k) ** 3 / 3


def paired_grams(
    t: common.Target, x: np.ndarray, x_orig: np.ndarray | None, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per group: H_cc = X_c^T X_c / n and (with ``x_orig``) H_co = X_c^T X_o / n over the same positions."""
    if x_orig is None:
        return common.im2col_grams(x, t, MAX_ROWS, rng), None
    cur, orig = common.im2col_pair(x, x_orig, t, MAX_ROWS, rng)
    return common.gram(cur), common.cross_gram(cur, orig)


def dense_refit(
    t: common.Target, h: list[np.ndarray], cross: list[np.ndarray] | None, damp: float, max_flops: float
) -> np.ndarray | None:
    """The storage matrix W* minimizing ||X_c W* - X_o W||^2 / n + l ||W* - W||^2 (nothing pruned).

    W*_j = w_j + (H_cc + l I)^-1 (H_co w_j - H_cc w_j) per output j; None when the solves would cost more
    than ``max_flops``. Up to a constant, ||X_c w' - X_o w||^2 = (w' - W*_j)^T H_cc (w' - W*_j): what a
    pruned w' loses is measured from W*, not from the original weights.
    """
    import numpy as np

    if cross is None:
        return t.w2
    k = h[0].shape[0]
    if len(h) * k**3 / 3 > max_flops:
        return None
    w2 = t.w2.astype(np.float64)
    wo = w2.T if t.kind == "matmul" else w2
    per = wo.shape[0] // len(h)
    out = np.empty_like(wo)
    for g, (hg, cg) in enumerate(zip(h, cross, strict=True)):
        w = wo[g * per : (g + 1) * per]
        reg = hg + damp * max(float(np.mean(np.diag(hg))), 1e-12) * np.eye(k)
        # rows: (H_co w_j - H_cc w_j)^T (H_cc + l I)^-1 (H symmetric)
        out[g * per : (g + 1) * per] = w + np.linalg.solve(reg, (w @ cg.T - w @ hg).T).T
    return out.T if t.kind == "matmul" else out


def lsq_update(
    t: common.Target,
    keep: np.ndarray,
    x: np.ndarray | None,
    damp: float,
    max_flops: float,
    rng: np.random.Generator,
    x_orig: np.ndarray | None = None,
    grams: tuple[list[np.ndarray], list[np.ndarray] | None] | None = None,
) -> np.ndarray | None:
    """Kept weights re-fit per output by least squares on the layer's outputs (the dropped ones stay 0).

    Without ``x_orig``: w_S <- w_S + (H_SS + l I)^-1 H_SR w_R (the pruned part's effect moved onto S),
    the minimum of (w' - w)^T H (w' - w) with w'_R = 0, H = X^T X / n, l = ``damp`` * mean(diag H).

    With ``x_orig`` (sequential, true targets): x is the layer's current input X_c (earlier layers
    already pruned) and x_orig its input X_o in the original graph; minimizes
    ||X_c w' - X_o w||^2 / n + l ||w'_S - w_S||^2 over w'_S (w'_R = 0):
    w'_S = w_S + (H_cc[S,S] + l I)^-1 (H_co[S,:] w - H_cc[S,S] w_S), H_cc = X_c^T X_c / n,
    H_co = X_c^T X_o / n over the same sampled positions. With X_c = X_o this is the update above; the
    ridge pulls towards the original weights, not towards 0. Outputs with nothing pruned are re-fit too
    (they can still correct the earlier layers' error). ``grams``: ``paired_grams(t, x, x_orig)`` if
    already computed.
    """
    import numpy as np

    w2 = t.w2.astype(np.float64)
    # one row per output: [outputs, inputs]
    wo = w2.T if t.kind == "matmul" else w2
    ko = keep.T if t.kind == "matmul" else keep
    flops = float(sum(int(k.sum()) ** 3 for k in ko)) / 3
    if flops > max_flops:
        return None
    if grams is None:
        if x is None:
            raise ValueError("lsq_update needs the layer input x or its grams")
        grams = paired_grams(t, x, x_orig, rng)
    blocks, cross = grams
    per_group = wo.shape[0] // len(blocks)
    goal = None
    if cross is not None:
        # H_co w_j for every output j: [outputs, inputs of its group]
        goal = np.concatenate([wo[g * per_group : (g + 1) * per_group] @ cross[g].T for g in range(len(blocks))])
    out = np.where(ko, wo, 0.0)
    for j in range(wo.shape[0]):
        h = blocks[j // per_group]
        s_idx, r_idx = np.flatnonzero(ko[j]), np.flatnonzero(~ko[j])
        if s_idx.size == 0 or (r_idx.size == 0 and goal is None):
            continue
        hss = h[np.ix_(s_idx, s_idx)]
        hss = hss + damp * max(float(np.mean(np.diag(h))), 1e-12) * np.eye(s_idx.size)
        if goal is None:
            rhs = h[np.ix_(s_idx, r_idx)] @ wo[j, r_idx]
        else:
            rhs = goal[j, s_idx] - h[np.ix_(s_idx, s_idx)] @ wo[j, s_idx]
        out[j, s_idx] = wo[j, s_idx] + np.linalg.solve(hss, rhs)
    out = out.T if t.kind == "matmul" else out
    return out.astype(np.float32)


def support_refit(
    t: common.Target, grams: tuple[list[np.ndarray], list[np.ndarray] | None], damp: float, max_flops: float
) -> np.ndarray | None:
    """The float storage matrix re-fit on its nonzeros to the original outputs (``lsq_update`` with the
    mask of the nonzero weights, ``dense_refit`` when there are no zeros); None when too expensive."""
    import numpy as np

    h, cross = grams
    keep = t.w2 != 0
    if keep.all():
        return dense_refit(t, h, cross, damp, max_flops)
    return lsq_update(t, keep, None, damp, max_flops, np.random.default_rng(0), grams=grams)
