"""Calibration statistics of weight targets and least-squares fits of their weights.

Statistics: the activation energy of every input feature (:func:`input_energy`), input patches in the column
order of the storage matrix (:func:`im2col`; targets and storage matrices: :mod:`onnxcomp.analysis.weights`),
Gram matrices; the sequential mode's dependency waves and current inputs. Fits: prune-weights' least-squares
update of the kept weights and the sequential (true-target) fits of prune-weights and kmeans.

A layer's storage matrix is handled as one row w_j per output j over the inputs of its conv group. Without an
original input, a fit keeps the layer's outputs on its input X; with one (sequential mode), it makes the
current input X_c give the original output X_o w.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.weights import Target
    from onnxcomp.passes_api import PassContext, PassResult

logger = logging.getLogger(__name__)

# ============================================================================================ statistics
MAX_ROWS = 20000  # input positions sampled per layer


# The sequential (true-target) fit of a layer needs at least this many sampled input positions per free
# weight of an output; layers with fewer are fitted one-shot (on their original input).
MIN_ROWS_PER_WEIGHT = 2.0


def input_energy(
    graph: gs.Graph,
    ctx: PassContext,
    targets: list[Target],
    max_samples: int,
    acts: dict[str, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Per target: the mean squared activation of each input feature, broadcast to the storage matrix.

    MatMul: e[k] = mean over all other axes of x[..., k]**2, element weight of W[k, n] = e[k].
    Conv: e[c] = mean over batch and space of x[:, c]**2, element weight of W[m, (c', kernel...)] = e[c] with
    c = (m // (M / group)) * C/group + c'. Returns {} without calibration data.
    """
    import numpy as np

    if ctx.calib is None or not targets:
        return {}
    if acts is None:
        acts = layer_inputs(graph, ctx, targets, max_samples)
    out: dict[int, np.ndarray] = {}
    for t in targets:
        if t.x.name not in acts:
            continue  # a layer in an If branch the data did not take (see ``layer_inputs``): no input captured
        a = np.asarray(acts[t.x.name], np.float64)
        if t.kind == "matmul":
            e = (a.reshape(-1, a.shape[-1]) ** 2).mean(0)
            out[id(t)] = np.broadcast_to(e[:, None], t.w2.shape)
        else:
            c = a.shape[1]
            e = (np.moveaxis(a, 1, 0).reshape(c, -1) ** 2).mean(1)
            m, per = t.w2.shape
            group = int(t.conv_attrs["group"])
            cg = c // group
            kk = per // cg
            ch = (np.arange(m)[:, None] // (m // group)) * cg + (np.arange(per)[None, :] // kk)
            out[id(t)] = e[ch]
    return out


def layer_inputs(graph: gs.Graph, ctx: PassContext, targets: list[Target], max_samples: int) -> dict[str, np.ndarray]:
    """The activation input of every target on the calibration data ({} without calibration data).

    A layer inside control flow gets its input through ``onnxcomp.calib.Capture``: out of its If when the data
    takes its branch, stacked over the iterations of a Loop/Scan body. One in a branch the data does not take
    (or whose loop input changes shape between iterations) gets none: the passes treat it data-free
    (:func:`data_free_layers`)."""
    if ctx.calib is None or not targets:
        return {}
    return ctx.capture(graph, sorted({t.x.name for t in targets}), max_samples=max_samples)


def one_hot(a: np.ndarray, axis: int) -> bool:
    """True when every vector of ``a`` along ``axis`` (a layer's input features) is one-hot: all 0 but one 1."""
    import numpy as np

    head = a.reshape(-1)[:4096]
    if a.size == 0 or a.shape[axis] < 2 or not bool(np.all((head == 0) | (head == 1))):
        return False  # (most inputs fail on their first values)
    return bool(np.all((a == 0) | (a == 1))) and bool(np.all(a.sum(axis=axis) == 1))


def data_free_layers(ctx: PassContext, targets: list[Target], captured: Iterable[str], result: PassResult) -> None:
    """With calibration data, count (``layers_data_free_subgraph``) and log the body layers whose input was not
    captured (``captured``: the input names that were; see ``layer_inputs``). Their statistics are data-free
    (plain k-means, magnitude)."""
    if ctx.calib is None:
        return
    have = set(captured)
    for t in targets:
        if t.where and t.x.name not in have:
            result.count("layers_data_free_subgraph")
            logger.info("%s: inside the %s subgraph, its input was not captured: data-free", t.name, t.where)


def im2col(x: np.ndarray, t: Target, max_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per conv group: the input patches [positions, C/group * prod(kernel)] in W[m].ravel() order.

    MatMul targets: one matrix [positions, K]. At most ``max_rows`` positions (a random subset; only the
    sampled patches are built).
    """
    total = positions(x, t)
    if total > max_rows:
        return _group_blocks(_patch_rows(x, t, rng.choice(total, max_rows, replace=False)), t)
    return _group_blocks(_patch_rows(x, t), t)


def im2col_pair(
    x_cur: np.ndarray, x_orig: np.ndarray, t: Target, max_rows: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``im2col`` of a layer's current and original inputs over the SAME positions (one random subset).

    Row i of both results is the same (sample, output position) patch, so X_cur^T X_orig pairs the
    current input of a position with the original input of that position.
    """
    if x_cur.shape != x_orig.shape:
        raise ValueError(f"current input {x_cur.shape} and original input {x_orig.shape} differ in shape")
    total = positions(x_cur, t)
    pick = rng.choice(total, max_rows, replace=False) if total > max_rows else None
    cur, orig = _patch_rows(x_cur, t, pick), _patch_rows(x_orig, t, pick)
    return _group_blocks(cur, t), _group_blocks(orig, t)


def positions(x: np.ndarray, t: Target) -> int:
    """The number of im2col rows of a layer input: samples x output positions (MatMul: all but the last axis)."""
    import numpy as np

    if t.kind == "matmul":
        return int(np.prod(x.shape[:-1]))
    a = t.conv_attrs
    nd = x.ndim - 2
    count = int(x.shape[0])
    for i in range(nd):
        span = (a["kernel_shape"][i] - 1) * a["dilations"][i] + 1
        count *= (x.shape[2 + i] + a["pads"][i] + a["pads"][i + nd] - span) // a["strides"][i] + 1
    return count


def _patch_rows(x: np.ndarray, t: Target, pick: np.ndarray | None = None) -> np.ndarray:
    """The input patches of a layer as rows [positions, C * prod(kernel)] (MatMul: [positions, K]); with
    ``pick``, only those rows (indices into samples x output positions, row-major), in that order."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    if t.kind == "matmul":
        rows = x.reshape(-1, x.shape[-1])
        return rows if pick is None else rows[pick]
    a = t.conv_attrs
    nd = x.ndim - 2
    pads = a["pads"]
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    xp = np.pad(x, width)
    span = [(k - 1) * d + 1 for k, d in zip(a["kernel_shape"], a["dilations"], strict=True)]
    if pick is not None:
        # only the picked patches: per kernel offset, one gather of [rows, C]
        out_sp = [(xp.shape[2 + i] - span[i]) // a["strides"][i] + 1 for i in range(nd)]
        idx = np.unravel_index(pick, (x.shape[0], *out_sp))
        offsets = list(np.ndindex(*a["kernel_shape"]))
        cols = np.empty((len(pick), x.shape[1], len(offsets)), x.dtype)
        xt = np.ascontiguousarray(np.moveaxis(xp, 1, -1))  # [N, spatial..., C]: gathers read rows of C
        for j, off in enumerate(offsets):
            where = tuple(idx[1 + i] * a["strides"][i] + off[i] * a["dilations"][i] for i in range(nd))
            cols[:, :, j] = xt[(idx[0], *where)]
        return cols.reshape(len(pick), -1)
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))  # [N, C, out..., span...]
    sl = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in a["strides"]),
        *(slice(None, None, d) for d in a["dilations"]),
    )
    win = win[sl]
    n = win.shape[0]
    out_sp = win.shape[2 : 2 + nd]
    # [N, out..., C, kernel...] -> [positions, C * prod(kernel)]
    return np.moveaxis(win, 1, 1 + nd).reshape(n * int(np.prod(out_sp)), -1)


def _group_blocks(rows: np.ndarray, t: Target) -> list[np.ndarray]:
    """Patch rows split into the conv groups' column blocks (one block for MatMul), as float64."""
    import numpy as np

    group = int(t.conv_attrs["group"]) if t.kind == "conv" else 1
    per = rows.shape[1] // group
    rows = rows.astype(np.float64)
    return [rows[:, g * per : (g + 1) * per] for g in range(group)]


def gram(blocks: list[np.ndarray]) -> list[np.ndarray]:
    """H = X^T X / rows per block."""
    return [b.T @ b / max(1, b.shape[0]) for b in blocks]


def im2col_grams(x: np.ndarray, t: Target, max_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``gram(im2col(x, t, max_rows, rng))`` without materializing the float64 patches of grouped convs
    (a depthwise conv's 20000 x C*9 patches would take C times the memory of its C Hessians of 9 x 9)."""
    import numpy as np

    group = int(t.conv_attrs["group"]) if t.kind == "conv" else 1
    total = positions(x, t)
    if group == 1:
        # float32 products (float64 sums of at most 20000 rows are not needed at 1% damping), 2x faster
        rows = _patch_rows(x, t, rng.choice(total, max_rows, replace=False) if total > max_rows else None)
        rows = np.ascontiguousarray(rows, np.float32)
        return [(rows.T @ rows).astype(np.float64) / max(1, rows.shape[0])]
    pick = rng.choice(total, max_rows, replace=False) if total > max_rows else None
    rows = _patch_rows(x, t, pick)
    n = rows.shape[0]
    blocks = rows.reshape(n, group, -1)
    h = np.zeros((group, blocks.shape[2], blocks.shape[2]))
    for i in range(0, n, 4096):
        c = np.ascontiguousarray(blocks[i : i + 4096].transpose(1, 0, 2), np.float64)  # [group, rows, per]
        h += np.swapaxes(c, 1, 2) @ c
    return list(h / max(1, n))


def cross_gram(cur: list[np.ndarray], orig: list[np.ndarray]) -> list[np.ndarray]:
    """H_co = X_cur^T X_orig / rows per block (rows of the two paired, see ``im2col_pair``)."""
    return [c.T @ o / max(1, c.shape[0]) for c, o in zip(cur, orig, strict=True)]


# ============================================================================================ sequential
def sequential_waves(targets: list[Target]) -> list[list[Target]]:
    """Targets grouped for sequential calibration, in dependency order.

    A target's level is the largest number of targets on any path from a graph input to its activation
    input; wave k holds the targets of level k. No target depends on a target of its own or a later wave,
    so one capture of the current graph gives the current inputs of a whole wave (e.g. the Q/K/V
    projections reading one tensor).
    """
    is_target = {id(t.node) for t in targets}
    level: dict[int, int] = {}  # id(tensor) -> targets on the longest path producing it

    def node_input_level(node: gs.Node) -> int:
        return max((level[id(i)] for i in node.inputs), default=0)

    for t in targets:
        stack = [t.x]
        while stack:  # depth-first over the producers, each tensor's level once its inputs have theirs
            tensor = stack[-1]
            if id(tensor) in level:
                stack.pop()
                continue
            node = tensor.inputs[0] if tensor.inputs else None
            pending = [] if node is None else [i for i in node.inputs if id(i) not in level]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            level[id(tensor)] = 0 if node is None else node_input_level(node) + (1 if id(node) in is_target else 0)
    waves: dict[int, list[Target]] = {}
    for t in targets:
        waves.setdefault(level[id(t.x)], []).append(t)
    return [waves[k] for k in sorted(waves)]


def current_inputs(graph: gs.Graph, ctx: PassContext, wave: list[Target], max_samples: int) -> dict[str, np.ndarray]:
    """The activation inputs of ``wave`` captured from the graph as it is now (earlier layers changed).

    Cleans and sorts the graph first (as the pipeline does after a pass): replaced nodes are dead and new
    ones appended at the end.
    """
    from onnxcomp.graph import toposort

    toposort(graph.cleanup(remove_unused_graph_inputs=False))
    return ctx.capture(graph, sorted({t.x.name for t in wave}), max_samples=max_samples)


# ============================================================================================ least squares


def enough_rows(t: Target, x: np.ndarray, params: int) -> bool:
    """At least MIN_ROWS_PER_WEIGHT sampled input positions per free weight (``params``) of an output.

    The sequential fit also chases the earlier layers' error X_o w - X_c w; with about one position per
    weight it fits the calibration samples rather than the model. Measured on random-weight models with
    32 random calibration samples (relative output error on other inputs, one-shot -> sequential without
    this check -> with it): MobileNet prune-weights(0.6, lsq) 0.34 -> 0.59 -> 0.41, kmeans(3 bits)
    0.37 -> 0.54 -> 0.38; with 256 samples every layer passes it on those models and sequential wins.
    """
    return min(MAX_ROWS, positions(x, t)) >= MIN_ROWS_PER_WEIGHT * params


def dense_solve_flops(t: Target) -> float:
    """Cost of the dense re-fit's solves, groups * k^3 / 3 (k: inputs per group). The sequential fits check
    it against the pass's flop limit before computing the k x k Gram matrices (rows * k^2 flops, 8 * k^2
    bytes each): too expensive layers are fitted one-shot."""
    k = t.w2.shape[0] if t.kind == "matmul" else t.w2.shape[1]
    groups = 1 if t.kind == "matmul" else int(t.conv_attrs["group"])
    return groups * float(k) ** 3 / 3


def paired_grams(
    t: Target, x: np.ndarray, x_orig: np.ndarray | None, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per group: H_cc = X_c^T X_c / n and (with ``x_orig``) H_co = X_c^T X_o / n over the same positions."""
    if x_orig is None:
        return im2col_grams(x, t, MAX_ROWS, rng), None
    cur, orig = im2col_pair(x, x_orig, t, MAX_ROWS, rng)
    return gram(cur), cross_gram(cur, orig)


def dense_refit(
    t: Target, h: list[np.ndarray], cross: list[np.ndarray] | None, damp: float, max_flops: float
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
    t: Target,
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
    t: Target, grams: tuple[list[np.ndarray], list[np.ndarray] | None], damp: float, max_flops: float
) -> np.ndarray | None:
    """The float storage matrix re-fit on its nonzeros to the original outputs (``lsq_update`` with the
    mask of the nonzero weights, ``dense_refit`` when there are no zeros); None when too expensive."""
    import numpy as np

    h, cross = grams
    keep = t.w2 != 0
    if keep.all():
        return dense_refit(t, h, cross, damp, max_flops)
    return lsq_update(t, keep, None, damp, max_flops, np.random.default_rng(0), grams=grams)
