"""One layer's codebook encodings for the kmeans pass: plain k-means codebooks per group of output channels, the
error-compensated (GPTQ-ordered) codebooks of ``_gptvq``, and the least-squares refit of codebook values for
fixed codes; plus the byte count of a dense encoding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp import ops
from onnxcomp.analysis.weights import Target

from . import _gather
from ._calibration import paired_grams
from ._emit import Encoded

if TYPE_CHECKING:
    import numpy as np

ZERO_CODE_MIN = 0.01  # layers with at least 1% exact zeros (pruned) keep code 0 = 0.0


def kmeans_encode(
    w2: np.ndarray,
    bits: int,
    group_size: int,
    out_axis: int,
    init: str = "linear",
    weights: np.ndarray | None = None,
    max_iter: int = 300,
    block_size: int = 0,
    rng: np.random.Generator | None = None,
) -> Encoded:
    """k-means codebook per group of output channels (and, with ``block_size``, per block of that many input
    features: ``block_encode``); exact zeros keep code 0 in pruned layers."""
    import numpy as np

    from ._kmeans import kmeans_1d

    if 0 < block_size < w2.shape[1 - out_axis]:
        return block_encode(w2, bits, group_size, out_axis, block_size, weights, rng)
    n_out = w2.shape[out_axis]
    gsz = group_size if 0 < group_size < n_out else n_out
    groups = -(-n_out // gsz)
    levels = 1 << bits
    zero_code = float(np.mean(w2 == 0)) >= ZERO_CODE_MIN
    first = 1 if zero_code else 0
    table = np.zeros((groups, levels), np.float32)
    codes = np.zeros(w2.shape, np.int64)
    if weights is not None:
        weights = np.asarray(weights, np.float64)
        weights = weights + 1e-9 * max(float(weights.max()), 1e-30)  # keep every weight in play
    for g in range(groups):
        sl = (slice(None), slice(g * gsz, (g + 1) * gsz)) if out_axis == 1 else (slice(g * gsz, (g + 1) * gsz),)
        block = w2[sl]
        mask = block != 0 if zero_code else np.ones(block.shape, bool)
        if not mask.any():
            continue
        km = kmeans_1d(
            block[mask],
            levels - first,
            weights=None if weights is None else weights[sl][mask],
            init=init,
            max_iter=max_iter,
        )  # type: ignore[arg-type]
        table[g, first:] = km.centroids.astype(np.float32)
        sub = np.zeros(block.shape, np.int64)
        sub[mask] = km.labels + first
        codes[sl] = sub
    return Encoded(table, codes, bits, gsz, zero_code=zero_code)


SCALE_ROUNDS = 2  # scaled codebooks: k-means on w / s, then the scales refitted to the codes, twice


def scaled_encode(
    w2: np.ndarray,
    bits: int,
    out_axis: int,
    init: str = "linear",
    weights: np.ndarray | None = None,
    max_iter: int = 300,
) -> Encoded:
    """One k-means codebook for the layer shared by every output channel at the channel's own scale
    (coremltools' palettization with per-channel scales), a float32 scale per output channel:

        # u_jk = w_jk / s_j,  s_j = rms(w_j);  c = kmeans(u)  (weights e_jk s_j^2 with the input energy e)
        # s_j = sum_k e_jk w_jk q_jk / sum_k e_jk q_jk^2,  q_jk = c[code_jk]   (least squares for the codes)

    Without ``weights`` the k-means is unweighted on u: the mean relative error of the channels (the channel
    SQNR the granularity rule compares), whatever their scales (after BatchNorm folding they span 10-1000x;
    one codebook for the layer leaves the small ones a few levels). ``weights``: per weight (w2's shape) or
    broadcastable to it. Exact zeros keep code 0 in pruned layers; an all-zero channel gets scale 0."""
    import numpy as np

    from ._kmeans import kmeans_1d

    wo = np.asarray(w2.T if out_axis == 1 else w2, np.float64)  # [outputs, inputs]
    levels = 1 << bits
    zero_code = float(np.mean(wo == 0)) >= ZERO_CODE_MIN
    first = 1 if zero_code else 0
    mask = wo != 0 if zero_code else np.ones(wo.shape, bool)
    we = None
    if weights is not None:
        we = np.broadcast_to(np.asarray(weights, np.float64), w2.shape)
        we = np.asarray(we.T if out_axis == 1 else we) + 1e-12
    s = channel_rms(w2, out_axis)
    table = np.zeros((1, levels), np.float64)
    codes = np.zeros(wo.shape, np.int64)
    start: str | np.ndarray = init
    for _ in range(SCALE_ROUNDS):
        live = s != 0
        u = np.divide(wo, s[:, None], out=np.zeros_like(wo), where=live[:, None])
        pick = mask & live[:, None]
        if not pick.any():
            break
        kw = None if we is None else (we * (s**2)[:, None])[pick]
        km = kmeans_1d(u[pick], levels - first, weights=kw, init=start, max_iter=max_iter)  # type: ignore[arg-type]
        start = km.centroids
        table[0, first:] = km.centroids
        codes = np.zeros(wo.shape, np.int64)
        codes[pick] = km.labels + first
        s = lsq_scales(wo, table[0][codes], we)
    codes = codes.T if out_axis == 1 else codes
    return Encoded(
        table.astype(np.float32),
        np.ascontiguousarray(codes),
        bits,
        wo.shape[0],  # one codebook for every output channel
        zero_code=zero_code,
        scales=s.astype(np.float32),
    )


def normalized(w2: np.ndarray, out_axis: int, scales: np.ndarray) -> np.ndarray:
    """w2 with each output channel divided by its scale (a zero scale: zeros), float32."""
    import numpy as np

    s = np.asarray(scales, np.float64)
    s = s[None, :] if out_axis == 1 else s[:, None]
    return np.divide(w2, s, out=np.zeros(w2.shape), where=s != 0).astype(np.float32)


def channel_rms(w2: np.ndarray, out_axis: int) -> np.ndarray:
    """Each output channel's root mean square (a scaled codebook's first scales)."""
    import numpy as np

    return np.sqrt((np.asarray(w2, np.float64) ** 2).mean(axis=1 - out_axis))


def lsq_scales(wo: np.ndarray, qo: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The least-squares scale of each row (output channel) of ``wo`` for its decoded codes ``qo``:
    # s_j = sum_k e_jk w_jk q_jk / sum_k e_jk q_jk^2   (e = 1 without weights; 0 for a row of zero codes)
    """
    import numpy as np

    e = 1.0 if weights is None else weights
    num, den = (e * wo * qo).sum(axis=1), (e * qo * qo).sum(axis=1)
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def rescaled(
    w2: np.ndarray, e: Encoded, out_axis: int, grams: tuple[list[np.ndarray], list[np.ndarray] | None] | None = None
) -> Encoded:
    """A codebook for the normalized weights with a least-squares scale per output channel: on the weights
    (``lsq_scales``), or with ``grams`` (H = X^T X per conv group, and the sequential cross term) on the layer
    output (``output_scales``): compensated codes stray from the normalized weights by design (later weights
    absorb earlier rounding), so only the output fit gives their channels the right scale."""
    import dataclasses

    import numpy as np

    q = np.asarray(ops.decode_codebook(e.table, e.codes, e.group_size or e.codes.shape[out_axis], out_axis), np.float64)
    w = np.asarray(w2, np.float64)
    wo, qo = (w.T, q.T) if out_axis == 1 else (w, q)
    s = lsq_scales(wo, qo) if grams is None else output_scales(wo, qo, grams)
    return dataclasses.replace(e, scales=s.astype(np.float32), table_dtype="float32")


def output_scales(
    wo: np.ndarray, qo: np.ndarray, grams: tuple[list[np.ndarray], list[np.ndarray] | None]
) -> np.ndarray:
    """The scale of each row (output channel) j of the decoded codes ``qo`` [outputs, inputs] that best gives
    the layer output of the weights ``wo``, rows split evenly over the conv groups' Gram matrices:

        # s_j = q_j^T H w_j / q_j^T H q_j          (H = X^T X)
        # s_j = q_j^T H_co w_j / q_j^T H_cc q_j    (sequential: H_cc = X_c^T X_c, H_co = X_c^T X_o)

    A row whose denominator vanishes (all-zero codes) keeps its weight-space scale (``lsq_scales``)."""
    import numpy as np

    hs, cross = grams
    g = len(hs)
    rows, n = wo.shape
    h3 = np.stack(hs).astype(np.float64)  # [G, n, n]
    q3 = qo.reshape(g, rows // g, n)
    rhs = np.stack(cross).astype(np.float64).transpose(0, 2, 1) if cross is not None else h3
    num = (q3 * (wo.reshape(q3.shape) @ rhs)).sum(-1).ravel()
    den = (q3 * (q3 @ h3)).sum(-1).ravel()
    ok = den > 1e-12 * max(float(den.max(initial=0.0)), 1e-300)
    return np.where(ok, np.divide(num, den, out=np.zeros_like(num), where=ok), lsq_scales(wo, qo))


BLOCK_STARTS = ("linear", "quantile", "kmeans++")  # block rows are short: three starts, two swap rounds


def block_encode(
    w2: np.ndarray,
    bits: int,
    group_size: int,
    out_axis: int,
    block_size: int,
    weights: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    whole: np.ndarray | None = None,
) -> Encoded:
    """Block codebooks: one k-means codebook per (``group_size`` output channels, ``block_size`` input features),
    table row (output // group_size) * nblocks + input // block_size (runtime/OPS.md); ``weights``: per input
    feature (activation energy) or per weight.

    Each block's k-means also starts from the codebook of its output group without blocks (``whole``; fitted here
    when not given): Lloyd from it never raises the block's error, so block codebooks never reconstruct the weights
    worse than the same groups' codebooks over all inputs (best of the starts, by weighted error).
    """
    import numpy as np

    from ._gptvq import group_books

    rng = rng if rng is not None else np.random.default_rng(0)
    if whole is None:
        whole = kmeans_encode(w2, bits, group_size, out_axis, "linear", weights).table
    wo = np.asarray(w2.T if out_axis == 1 else w2, np.float64)  # [outputs, inputs]
    r, n = wo.shape
    gsz = group_size if 0 < group_size < r else r
    nblocks = -(-n // block_size)
    levels = 1 << bits
    zero_code = float(np.mean(wo == 0)) >= ZERO_CODE_MIN
    first = 1 if zero_code else 0
    wt = None
    if weights is not None:
        wt = np.broadcast_to(np.asarray(weights, np.float64), w2.shape)
        wt = np.asarray(wt.T if out_axis == 1 else wt)
    if zero_code:
        wt = np.where(wo != 0, 1.0 if wt is None else wt, 1e-30)
    books = -(-r // gsz)
    table = np.zeros((books * nblocks, levels), np.float32)
    codes = np.zeros((r, n), np.int64)
    for b in range(nblocks):
        sl = slice(b * block_size, min(n, (b + 1) * block_size))
        starts = (*BLOCK_STARTS, np.sort(np.asarray(whole, np.float64)[:, first:], axis=1))
        cents, labels = group_books(wo[:, sl], None if wt is None else wt[:, sl], gsz, levels - first, rng, starts, 2)
        table[np.arange(books) * nblocks + b, first:] = cents
        codes[:, sl] = np.where(wo[:, sl] != 0, labels + first, 0) if zero_code else labels
    codes = codes.T if out_axis == 1 else codes
    return Encoded(table, np.ascontiguousarray(codes), bits, gsz, zero_code=zero_code, block_size=block_size)


def stored_bytes(t: Target | _gather.TableTarget, bits: int, groups: int, entry_bytes: int = 4, scales: int = 0) -> int:
    """Bytes of a dense encoding as emitted: codebook [groups, 2**bits] of ``entry_bytes`` per entry (4 float32,
    2 float16), the channel scales of a scaled codebook (``scales`` of them, stored as the codebook) + bit-packed
    code rows."""
    from onnxcomp.ops import packed_row_bytes

    rows, cols = t.w2.shape
    return entry_bytes * (groups * (1 << bits) + scales) + rows * packed_row_bytes(cols, bits)


def encoded_bytes(t: Target | _gather.TableTarget, e: Encoded) -> int:
    """``stored_bytes`` of an encoding as it is stored (its table's rows and element type, its scales)."""
    from onnxcomp.ops import packed_row_bytes

    if isinstance(t, Target) and t.half:  # written by _half: its codebook as stored there
        from ._half import stored_bytes

        return stored_bytes(t, e)
    rows, cols = t.w2.shape
    return e.table_bytes + rows * packed_row_bytes(cols, e.bits)


def weight_name(t: Target | _gather.TableTarget) -> str:
    return t.table.name if isinstance(t, _gather.TableTarget) else t.weight.name


def original_weight(t: Target | _gather.TableTarget, w2: np.ndarray) -> np.ndarray:
    """A storage matrix as the node's weight initializer (Gemm's folded alpha divided out again)."""
    import numpy as np

    if isinstance(t, _gather.TableTarget):  # (a recurrent weight: its rows back to [D, G*H, K])
        return np.asarray(w2, np.float32).reshape(t.table.shape)
    w = t.weight_as_original(w2)
    alpha = float(t.node.attrs.get("alpha", 1.0)) if t.node.op == "Gemm" else 1.0
    return np.asarray(w / np.float32(alpha) if alpha != 1.0 else w, np.float32)


def compensated_encode(
    t: Target,
    w2: np.ndarray,
    bits: int,
    group_size: int,
    hs: list[np.ndarray],
    rng: np.random.Generator,
    factors: tuple[np.ndarray, np.ndarray] | None = None,
    block_size: int = 0,
    damp: float | None = None,
) -> tuple[Encoded, bool]:
    """GPTQ-ordered k-means codebooks of a storage matrix (see ``_gptvq``; ``block_size``: block codebooks fitted
    block by block as the compensation reaches them; ``damp``: the Hessian's relative ridge where ``factors`` are
    not given, default ``_gptvq.DAMP``); (encoding, compensated?)."""
    import numpy as np

    from . import _gptvq

    wo = w2.T if t.kind == "matmul" else w2  # one row per output channel
    n_out = wo.shape[0]
    gsz = group_size if 0 < group_size < n_out else n_out
    zero_code = float(np.mean(w2 == 0)) >= ZERO_CODE_MIN
    blocks = block_size if 0 < block_size < wo.shape[1] else 0
    d = _gptvq.DAMP if damp is None else damp
    if blocks:
        res = _gptvq.compensated_quantize_blocks(wo, hs, bits, gsz, blocks, zero_code=zero_code, damp=d, rng=rng)
    else:
        res = _gptvq.compensated_quantize(wo, hs, bits, gsz, zero_code=zero_code, damp=d, rng=rng, factors=factors)
    codes = res.codes.T if t.kind == "matmul" else res.codes
    e = Encoded(
        res.codebook.astype(np.float32), np.ascontiguousarray(codes), bits, gsz, zero_code=zero_code, block_size=blocks
    )
    return e, res.compensated


def refine_flops(t: Target, e: Encoded) -> float:
    rows, cols = t.w2.shape
    inputs = rows if t.kind == "matmul" else cols
    # block codebooks: also the decode of the other blocks through H, once per block
    blocks = ops.block_count(inputs, e.block_size)
    return 2.0 * inputs * inputs * t.outputs * (e.table.shape[1] + (blocks if blocks > 1 else 0))


def refine_codebook(
    t: Target,
    e: Encoded,
    x: np.ndarray,
    rng: np.random.Generator,
    damp: float = 1e-3,
    x_orig: np.ndarray | None = None,
    grams: tuple[list[np.ndarray], list[np.ndarray] | None] | None = None,
) -> np.ndarray:
    """Codebook values minimizing sum_j (w_j' - w_j)^T H (w_j' - w_j) for the fixed codes (H = X^T X).

    With one-hot codes O_j [inputs, L] of output j, w_j' = O_j c_g: per codebook group g,
    A = sum_j O_j^T H O_j, b = sum_j O_j^T H w_j, c_g = A^-1 b (ridge ``damp`` towards the k-means values;
    the reserved zero code stays 0).

    With ``x_orig`` (sequential, true targets): x is the layer's current input X_c (earlier layers already
    quantized), x_orig its input X_o in the original graph, and the fit is
    min sum_j ||X_c O_j c_g - X_o w_j||^2: A = sum_j O_j^T H_cc O_j, b = sum_j O_j^T H_co w_j with
    H_cc = X_c^T X_c, H_co = X_c^T X_o over the same sampled positions (``grams``:
    ``paired_grams(t, x, x_orig)`` if already computed).
    """
    import numpy as np

    hs, cross = grams if grams is not None else paired_grams(t, x, x_orig, rng)
    # per output j: its weights [outputs, inputs] and codes, split over the conv groups' H blocks
    wo = t.w2.T if t.kind == "matmul" else t.w2
    co = e.codes.T if t.kind == "matmul" else e.codes
    g_h, (rows, n) = len(hs), wo.shape
    h3 = np.stack(hs).astype(np.float32)  # [G, n, n]
    c3 = co.reshape(g_h, rows // g_h, n)
    w3 = wo.reshape(c3.shape).astype(np.float32)
    first = 1 if e.zero_code else 0
    group_of = (np.arange(rows) // e.group_size).reshape(c3.shape[:2])  # codebook group of row j
    # b_l = sum_{j, k: c_jk = l} (H w_j)_k  (sequential: (H_co w_j)_k)
    hw = w3 @ (h3 if cross is None else np.stack(cross).astype(np.float32).transpose(0, 2, 1))
    table = e.table.astype(np.float64).copy()
    nblocks = ops.block_count(n, e.block_size)
    if nblocks == 1:
        return _lsq_books(c3, group_of, h3, hw, table, first, damp).astype(np.float32)
    # block codebooks: a row's blocks share its output error, so the codebooks of block b are fitted with the
    # other blocks' current decode fixed (one pass of block coordinate descent, in input order):
    # b_l = sum_{j, k in b: c_jk = l} (H (w_j - q_j^{not b}))_k,  A over the positions in b
    for blk in range(nblocks):
        cols = slice(blk * e.block_size, min(n, (blk + 1) * e.block_size))
        q3 = ops.decode_codebook(table, co, e.group_size, 0, e.block_size).reshape(c3.shape).astype(np.float32)
        q3[:, :, cols] = 0.0
        hw_b = (hw - q3 @ h3)[:, :, cols]
        book_rows = np.arange(table.shape[0] // nblocks) * nblocks + blk
        table[book_rows] = _lsq_books(
            np.ascontiguousarray(c3[:, :, cols]), group_of, h3[:, cols, cols], hw_b, table[book_rows], first, damp
        )
    return table.astype(np.float32)


def _lsq_books(
    c3: np.ndarray, group_of: np.ndarray, h3: np.ndarray, hw: np.ndarray, table: np.ndarray, first: int, damp: float
) -> np.ndarray:
    """Codebook rows [books, L] solving A c = b per row (ridge ``damp`` towards ``table``; codes below ``first``
    stay): codes c3 [G, rows/G, n] (row j's codebook row ``group_of`` [G, rows/G]), H h3 [G, n, n], the
    right-hand side per position hw [G, rows/G, n]."""
    import numpy as np

    books, levels = table.shape
    # bin of (codebook row of row j, code c_jk): sums over the positions k with that code
    key = (group_of[:, :, None] * levels + c3).ravel()
    b = np.bincount(key, hw.ravel().astype(np.float64), books * levels).reshape(books, levels)
    # A_lm = sum_j P_l[j] H P_m[j]^T with P_l = [c_j. == l]: one product P_l H [G, rows, n] per code l
    a = np.zeros((books, levels, levels))
    for code in np.unique(c3):
        q = (c3 == code).astype(np.float32) @ h3
        a[:, code, :] = np.bincount(key, q.ravel().astype(np.float64), books * levels).reshape(books, levels)
    out = table.copy()
    idx = np.arange(first, levels)
    sub = a[:, idx[:, None], idx[None, :]]
    reg = damp * np.maximum(np.diagonal(sub, axis1=1, axis2=2).mean(axis=1), 1e-12)[:, None, None]
    rhs = b[:, idx] + reg[:, :, 0] * table[:, idx]
    out[:, idx] = np.linalg.solve(sub + reg * np.eye(idx.size), rhs[:, :, None])[:, :, 0]
    return out
