"""Sum-keeping codes: codes into a codebook shared by several output channels, moved so that each channel's
weights keep their sum (the data-free kmeans encodings; lossy, like the codes they move).

Nearest-centroid codes leave each output row j a drift d_j = sum_k (q_jk - w_jk). Where the layer's inputs share
a mean m (activations after a ReLU, a bias), the row's output moves by m d_j on every sample: a shift of the next
layer's input mean that no rounding error of the single weights shows. The data-free bias correction of Nagel et
al. ("Data-Free Quantization Through Weight Equalization and Bias Correction", 2019) removes it from BatchNorm
statistics; without them the codes themselves can keep d_j near 0:

    # per row j, while |d_j| falls: move the weight whose code's neighbour on the side that shrinks |d_j| adds the
    # least squared error per unit of drift removed,  added_jk = (q'_jk - w_jk)^2 - (q_jk - w_jk)^2,
    # gain_jk = |q'_jk - q_jk|  (q' = the neighbouring codebook value)

A codebook fitted per row by Lloyd's algorithm keeps the row's sum already (each centroid is the mean of its
weights); one codebook for a layer, or for a group of channels, does not. Scaled codebooks (one codebook at each
channel's scale) are left as they are: moved codes helped them at 8 bits (text detector 0.942 -> 0.964) but cost
the text detector at 4 bits (0.705 -> 0.423). Measured data-free at 4 bits
(kmeans group-size=auto, benchmarks/QUALITY.md): the text detector's mask IoU 0.72 -> 0.84, the recognizer's CER
0.127 -> 0.068; the orientation classifier's output error rose 0.064 -> 0.079. The caller keeps the moved codes
only where they add at most a small share to the layer's squared weight error (``MAX_ADDED``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from onnxcomp.analysis.weights import Target

    from ._emit import Encoded

MAX_ADDED = 0.01  # the moved codes are kept where they add at most 1% to the layer's squared weight error (5%
# took them on 31 of the orientation classifier's 52 layers: output error 0.064 -> 0.126)


def keep_row_sums(w: np.ndarray, tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Codes [R, K] of the rows of ``w`` [R, K] into their rows of ``tables`` [R, L] (any order of the entries),
    moved to a neighbouring entry (in value order) where that shrinks the row's drift sum_k (T[code] - w) the
    most per unit of added squared error, while the drift's magnitude falls (module docstring)."""
    import numpy as np

    w = np.asarray(w, np.float64)
    t = np.asarray(tables, np.float64)
    rows, levels = t.shape
    order = np.argsort(t, axis=1, kind="stable")  # value order of each row's entries
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(levels), (rows, levels)), axis=1)
    r = np.take_along_axis(rank, codes, axis=1)  # each weight's entry, as a rank
    q = np.take_along_axis(t, codes, axis=1)
    e = q - w
    drift = e.sum(axis=1)
    down = (drift > 0)[:, None]  # a positive drift: move to the next smaller value
    r_alt = np.where(down, r - 1, r + 1)
    ok = (r_alt >= 0) & (r_alt < levels) & (drift != 0)[:, None]
    alt = np.take_along_axis(order, np.clip(r_alt, 0, levels - 1), axis=1)
    step = np.take_along_axis(t, alt, axis=1) - q
    gain = np.where(down, -step, step)  # the drift it removes
    ok &= gain > 0
    added = (e + step) ** 2 - e**2
    ratio = np.where(ok, added / np.where(ok, gain, 1.0), np.inf)
    by_ratio = np.argsort(ratio, axis=1, kind="stable")
    removed = np.cumsum(np.take_along_axis(np.where(ok, gain, 0.0), by_ratio, axis=1), axis=1)
    # how many to move: the count n (0..K) that leaves the smallest |d_j| - removed_n| (the cumulative removal
    # only grows, so that is where |drift| stops falling)
    left = np.abs(np.concatenate([np.zeros((rows, 1)), removed], axis=1) - np.abs(drift)[:, None])
    count = np.argmin(left, axis=1)
    move = np.zeros(codes.shape, bool)
    np.put_along_axis(move, by_ratio, np.arange(codes.shape[1])[None, :] < count[:, None], axis=1)
    return np.where(move & ok, alt, codes)


def sum_keeping(t: Target, e: Encoded, max_added: float = MAX_ADDED) -> Encoded | None:
    """``e`` with ``keep_row_sums`` codes where its codebooks are shared by several output channels (one for the
    layer, or one per group of channels; no blocks, channel scales or reserved zero code) and the moved codes add
    at most ``max_added`` to its squared weight error; else None."""
    import dataclasses

    import numpy as np

    rows = t.w2.shape[t.out_axis]
    if e.ternary or e.scales is not None or e.block_size or e.zero_code or e.group_size <= 1 or rows < 2:
        return None
    w = np.asarray(t.w2.T if t.out_axis == 1 else t.w2, np.float64)  # [outputs, inputs]
    codes = e.codes.T if t.out_axis == 1 else e.codes
    tables = np.repeat(np.asarray(e.table, np.float64), e.group_size, axis=0)[:rows]
    moved = keep_row_sums(w, tables, codes)
    before = float(((np.take_along_axis(tables, codes, axis=1) - w) ** 2).sum())
    after = float(((np.take_along_axis(tables, moved, axis=1) - w) ** 2).sum())
    if np.array_equal(moved, codes) or after > (1.0 + max_added) * before:
        return None
    return dataclasses.replace(e, codes=np.ascontiguousarray(moved.T if t.out_axis == 1 else moved))
