"""Error-compensated codebook quantization: the GPTQ / OBQ order applied to non-uniform codebooks (GPTVQ).

A layer is handled as rows w_j (one per output channel) over its inputs, with the Hessian of its output
error H = X^T X / n (X: the im2col rows of its input; one H per conv group). Quantizing w to q costs
(w - q)^T H (w - q) in output error. GPTQ (Frantar et al. 2022) quantizes the inputs one at a time, in
decreasing order of H_ii (act-order), and after each one moves its error onto the inputs not yet
quantized, so they absorb it:

    # U = upper Cholesky factor of (H + l I)^-1 (in the quantization order), d = U_ii
    # e = (w_i - q_i) / d ;  w_{i+1:} -= e * U_{i, i+1:}

The quantizer is a codebook (1-D k-means centroids per group of output channels, GPTVQ's scalar case),
fitted before the pass by weighted k-means with element weights 1/U_ii^2 (the cost GPTQ assigns to an
error at input i, after the compensation of the earlier inputs). The weighting of Choi et al. ("Towards
the limit of network quantization") would use diag(H); 1/U_ii^2 is the same for a diagonal H and accounts
for correlated inputs otherwise.

Guard rails, all from measurements on real models (issue 13):
- the result is compared with plain nearest-centroid quantization against the same codebook on the
  calibration objective, and the better one is kept (the compensation never raises the error);
- rows < inputs (e.g. squeeze-excitation convs after global pooling) make H rank-deficient: GPTQ then
  fits the calibration samples and overfits; the caller falls back to plain k-means there;
- the codebook is the best of several k-means starts (linear, quantile, k-means++): quantile-initialized
  Lloyd gets stuck on outlier weights.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ._rowkmeans import nearest, row_kmeans

if TYPE_CHECKING:
    import numpy as np

DAMP = 0.01  # lambda of H + lambda * mean(diag H) * I
LAZY_BLOCK = 128  # GPTQ's lazy batch: columns updated together


# ============================================================================================ GPTQ
@dataclasses.dataclass
class Compensated:
    """Codes and codebooks of one layer: codebook [G, k] per codebook group of rows, codes [R, n]."""

    codebook: np.ndarray
    codes: np.ndarray
    compensated: bool  # False: plain nearest-centroid quantization had the lower output error
    error: float  # tr((W - Q) H (W - Q)^T) / tr(W H W^T) of the kept result
    error_plain: float  # the same for plain nearest-centroid quantization with the same codebooks

    def decoded(self, group_size: int) -> np.ndarray:
        import numpy as np

        book = np.repeat(self.codebook, group_size, axis=0)[: self.codes.shape[0]]
        return np.take_along_axis(book, self.codes, axis=1)


def output_error(
    w: np.ndarray, q: np.ndarray, hs: list[np.ndarray], den: float | None = None, dtype: type = float
) -> float:
    """tr((W - Q) H (W - Q)^T) / tr(W H W^T), rows split evenly over the conv groups' Hessians (products
    in ``dtype``: float64, or np.float32 at half the time; ``den``: tr(W H W^T) if already known)."""
    import numpy as np

    g = len(hs)
    h = np.stack(hs).astype(dtype)
    d3 = (w - q).reshape(g, w.shape[0] // g, -1).astype(dtype)
    num = float(np.sum((d3 @ h) * d3, dtype=np.float64))
    den = trace_whw(w, hs) if den is None else den
    return num / den if den > 0 else num


def trace_whw(w: np.ndarray, hs: list[np.ndarray]) -> float:
    """tr(W H W^T), rows split evenly over the conv groups' Hessians."""
    import numpy as np

    w3 = w.reshape(len(hs), w.shape[0] // len(hs), -1)
    return float(np.sum((w3 @ np.stack(hs)) * w3))


def inverse_factors(hs: list[np.ndarray], damp: float = DAMP, block_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per Hessian (all of one size): the act-order permutation [G, n] and the upper Cholesky factor U of
    (H_pp + l I)^-1 [G, n, n]. ``block_size`` > 0: the blocks of that many inputs stay in their order and whole
    (act order inside each block), so that block b occupies positions [b * block_size, (b + 1) * block_size).

    # J: the order reversal;  J (H + l I) J = L L^T  =>  (H + l I)^-1 = (J L^-1 J)^T (J L^-1 J)
    so U = J L^-1 J (upper triangular, positive diagonal): one Cholesky factor and one triangular inverse.
    """
    import numpy as np
    import scipy.linalg  # noqa: F401  (loaded before the limit below, which covers loaded libraries only)
    from threadpoolctl import threadpool_limits

    from onnxcomp.determinism import session_threads

    h = np.stack([np.asarray(x, np.float64) for x in hs])
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diag <= 0
    gi, ii = np.nonzero(dead)
    h[gi, ii, ii] = 1.0  # inputs that are always zero: any weight does (GPTQ's rule)
    # scale-free: U of (c H)^-1 is U / sqrt(c), and GPTQ uses only its ratios and relative 1/U_ii^2
    h /= np.maximum(np.diagonal(h, axis1=1, axis2=2).mean(axis=1), 1e-300)[:, None, None]
    perm = np.argsort(-np.diagonal(h, axis1=1, axis2=2), axis=1, kind="stable")
    if 0 < block_size < h.shape[1]:
        block = np.arange(h.shape[1]) // block_size
        perm = np.stack([np.lexsort((-np.diagonal(h[g]), block)) for g in range(h.shape[0])])
    rev = perm[:, ::-1]  # act order, reversed
    hr = np.take_along_axis(np.take_along_axis(h, rev[:, :, None], 1), rev[:, None, :], 2)
    factor = np.empty_like(hr)
    # scipy's own OpenBLAS, loaded after onnxcomp.determinism.pinned() limited the others: limit it here
    with threadpool_limits(limits=session_threads()):
        for g in range(hr.shape[0]):
            _factor_into(factor, hr, g, damp)
    return perm, factor


def _factor_into(factor: np.ndarray, hr: np.ndarray, g: int, damp: float) -> None:
    """factor[g] = J L^-1 J for J (H + l I) J = L L^T, the damping raised tenfold while not definite."""
    import numpy as np
    from scipy.linalg import lapack

    n = hr.shape[1]
    for attempt in range(6):
        a = hr[g].copy()
        a[np.diag_indices(n)] += damp * (10**attempt)
        lower, info = lapack.dpotrf(a, lower=1, clean=1)
        if info == 0:
            lower_inv, info = lapack.dtrtri(lower, lower=1)
        if info == 0 and np.all(np.isfinite(lower_inv)):
            factor[g] = lower_inv[::-1, ::-1]
            return
    raise ValueError("a layer Hessian is not positive definite even with damping")


def gptq_span(
    w3: np.ndarray,
    k3: np.ndarray | None,
    c3: np.ndarray,
    factor: np.ndarray,
    i1: int,
    i2: int,
    books: np.ndarray,
    shared: bool,
    first: int,
) -> None:
    """GPTQ over the permuted columns [i1, i2) of W [G, per, n] (in place): each column's nearest centroid (its
    code into c3), its error moved onto the columns after it in the span, then the span's errors onto the columns
    after the span (one lazy batch). ``books``: sorted centroids [1 (shared) or R, k]; ``k3``: the kept (nonzero)
    weights when code 0 is the reserved zero, codes of the others then start at ``first``."""
    import numpy as np

    groups, per, n = w3.shape
    r = groups * per
    rows_i = np.arange(r)
    err = np.zeros((groups, per, i2 - i1))
    for i in range(i1, i2):
        col = w3[:, :, i].reshape(r)
        idx = nearest(col[None, :] if shared else col[:, None], books).reshape(r)
        q = (books[0, idx] if shared else books[rows_i, idx]).reshape(groups, per)
        if k3 is not None:
            q = np.where(k3[:, :, i], q, 0.0)
            idx = np.where(k3[:, :, i].reshape(r), idx + first, 0)
        c3[:, :, i] = idx.reshape(groups, per)
        e = (w3[:, :, i] - q) / factor[:, i, i][:, None]
        err[:, :, i - i1] = e
        # w_{i+1:i2} -= e * U_{i, i+1:i2}
        w3[:, :, i + 1 : i2] -= e[:, :, None] * factor[:, None, i, i + 1 : i2]
        if k3 is not None:
            w3[:, :, i + 1 : i2] *= k3[:, :, i + 1 : i2]
    if i2 < n:
        w3[:, :, i2:] -= err @ factor[:, i1:i2, i2:]
        if k3 is not None:
            w3[:, :, i2:] *= k3[:, :, i2:]


def compensated_quantize(
    w: np.ndarray,
    hs: list[np.ndarray],
    bits: int,
    group_size: int = 1,
    *,
    zero_code: bool = False,
    damp: float = DAMP,
    rng: np.random.Generator | None = None,
    factors: tuple[np.ndarray, np.ndarray] | None = None,
) -> Compensated:
    """GPTQ with k-means codebooks: rows of ``w`` [R, n] (one per output channel) quantized to 2**bits
    centroids per ``group_size`` consecutive rows, the error compensated with the Hessians ``hs`` (one
    [n, n] per conv group, rows split evenly over them).

    ``zero_code``: exact zeros (pruned weights) keep code 0 = 0.0 and are not updated; the other
    weights use codes 1.. . ``factors``: ``inverse_factors(hs, damp)`` if already computed (layers that
    read one input share their Hessian).
    """
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    w = np.asarray(w, np.float64)
    r, n = w.shape
    groups = len(hs)
    if r % groups:
        raise ValueError(f"{r} rows do not split over {groups} conv groups")
    per = r // groups
    gsz = max(1, min(group_size, r))
    levels = 1 << bits
    first = 1 if zero_code else 0
    keep = w != 0 if zero_code else np.ones(w.shape, bool)

    # per conv group: order and inverse factor; element weights 1/U_ii^2 in the original column order
    perm, factor = factors if factors is not None else inverse_factors(hs, damp)
    inv_d2 = np.empty((groups, n))
    np.put_along_axis(inv_d2, perm, 1.0 / np.diagonal(factor, axis1=1, axis2=2) ** 2, axis=1)
    elem_w = np.repeat(inv_d2, per, axis=0) * keep

    # codebooks per group of rows: weighted k-means over the group's weights (pruned ones weigh 0)
    book_rows = -(-r // gsz)
    pad = book_rows * gsz - r
    vals = np.concatenate([w, np.repeat(w[-1:], pad, axis=0)]) if pad else w
    wts = np.concatenate([elem_w, np.zeros((pad, n))]) if pad else elem_w
    vals = vals.reshape(book_rows, gsz * n)
    wts = wts.reshape(book_rows, gsz * n) + 1e-12 * np.maximum(wts.max(), 1e-30)
    if zero_code:
        # the reserved code 0 = 0.0: pruned weights weigh (almost) nothing in the fit of codes 1..
        wts = np.where(vals == 0, 1e-30, wts)
    km = row_kmeans(vals, levels - first, wts, rng=rng)
    codebook = np.zeros((book_rows, levels))
    codebook[:, first:] = km.centroids
    row_book = np.repeat(km.centroids, gsz, axis=0)[:r]  # [R, levels - first], sorted

    # plain: nearest centroid of the original weights
    plain_codes = nearest(w, km.centroids[:1] if book_rows == 1 else row_book) + first
    if zero_code:
        plain_codes = np.where(keep, plain_codes, 0)
    plain_q = np.take_along_axis(np.repeat(codebook, gsz, axis=0)[:r], plain_codes, axis=1)

    # GPTQ, every conv group in its own order, all groups at once: W [G, per, n] in permuted columns
    w3 = np.take_along_axis(w.reshape(groups, per, n), perm[:, None, :], axis=2)
    k3 = np.take_along_axis(keep.reshape(groups, per, n), perm[:, None, :], axis=2) if zero_code else None
    shared = book_rows == 1  # one codebook for the layer: nearest is one binary search
    books = km.centroids[:1] if shared else row_book  # [1 or R, levels - first], sorted per row
    c3 = np.zeros((groups, per, n), np.int64)
    for i1 in range(0, n, LAZY_BLOCK):
        gptq_span(w3, k3, c3, factor, i1, min(i1 + LAZY_BLOCK, n), books, shared, first)
    codes3 = np.empty_like(c3)
    np.put_along_axis(codes3, perm[:, None, :], c3, axis=2)
    codes = codes3.reshape(r, n)
    gptq_q = np.take_along_axis(np.repeat(codebook, gsz, axis=0)[:r], codes, axis=1)

    den = trace_whw(w, hs)
    err_plain = output_error(w, plain_q, hs, den, np.float32)
    err_gptq = output_error(w, gptq_q, hs, den, np.float32)
    if abs(err_gptq - err_plain) <= 1e-4 * max(err_gptq, err_plain):
        # too close for float32 products to tell: exact, so that the kept one is never the worse
        err_plain, err_gptq = output_error(w, plain_q, hs, den), output_error(w, gptq_q, hs, den)
    if err_gptq <= err_plain:
        return Compensated(codebook, codes, True, err_gptq, err_plain)
    return Compensated(codebook, plain_codes, False, err_plain, err_plain)


# ============================================================================ block codebooks (GPTVQ's blocks)
def group_books(
    w: np.ndarray,
    wts: np.ndarray | None,
    group_size: int,
    k: int,
    rng: np.random.Generator,
    starts: tuple[str | np.ndarray, ...] | None = None,
    swaps: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means codebooks of ``w`` [R, c] per ``group_size`` consecutive rows, weighted by ``wts`` (None: equal):
    (centroids [ceil(R / group_size), k] sorted, labels [R, c]). ``starts`` as ``row_kmeans`` takes them (an array:
    initial centroids [ceil(R / group_size), k])."""
    import numpy as np

    from ._rowkmeans import STARTS

    r, c = w.shape
    books = -(-r // group_size)
    pad = books * group_size - r
    vals = np.concatenate([w, np.repeat(w[-1:], pad, axis=0)]) if pad else w
    wt = np.ones(w.shape) if wts is None else np.asarray(wts, np.float64)
    wt = np.concatenate([wt, np.zeros((pad, c))]) if pad else wt
    wt = wt + 1e-12 * max(float(wt.max()), 1e-30)  # padding rows weigh (almost) nothing
    km = row_kmeans(
        vals.reshape(books, group_size * c),
        k,
        wt.reshape(books, group_size * c),
        starts=starts or STARTS,
        swaps=swaps,
        rng=rng,
    )
    return km.centroids, km.labels.reshape(books * group_size, c)[:r]


def decode_blocks(codebook: np.ndarray, codes: np.ndarray, group_size: int, block_size: int) -> np.ndarray:
    """Q [R, n] from block codebooks: row (r // group_size) * nblocks + j // block_size, entry codes[r, j]."""
    from onnxcomp import ops

    return ops.decode_codebook(codebook, codes, group_size, 0, block_size)


def compensated_quantize_blocks(
    w: np.ndarray,
    hs: list[np.ndarray],
    bits: int,
    group_size: int,
    block_size: int,
    *,
    zero_code: bool = False,
    damp: float = DAMP,
    rng: np.random.Generator | None = None,
) -> Compensated:
    """GPTQ with a k-means codebook per (``group_size`` rows, ``block_size`` inputs), as GPTVQ: the blocks are
    quantized in input order (act order inside a block), and block b's codebooks are fitted when it is reached, on
    the weights as the compensation of blocks 0..b-1 left them, weighted by 1/U_ii^2. Codebook
    [ceil(R / group_size) * nblocks, 2**bits], row (r // group_size) * nblocks + b. The kept result is the better
    of it and plain nearest-centroid quantization of the original weights with the same codebooks.
    """
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    w = np.asarray(w, np.float64)
    r, n = w.shape
    groups = len(hs)
    if r % groups:
        raise ValueError(f"{r} rows do not split over {groups} conv groups")
    per = r // groups
    gsz = max(1, min(group_size, r))
    bsz = max(1, min(block_size, n))
    nblocks = -(-n // bsz)
    levels = 1 << bits
    first = 1 if zero_code else 0
    keep = w != 0 if zero_code else np.ones(w.shape, bool)
    perm, factor = inverse_factors(hs, damp, bsz)
    inv_d2 = np.empty((groups, n))
    np.put_along_axis(inv_d2, perm, 1.0 / np.diagonal(factor, axis1=1, axis2=2) ** 2, axis=1)
    elem_w = np.repeat(inv_d2, per, axis=0) * keep
    if zero_code:
        elem_w = np.where(keep, elem_w, 1e-30)
    book_rows = -(-r // gsz)
    codebook = np.zeros((book_rows * nblocks, levels))
    rows_of = np.arange(book_rows) * nblocks

    def permuted(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a.reshape(groups, per, n), perm[:, None, :], axis=2)

    w3, wt3 = permuted(w.copy()), permuted(elem_w)
    k3 = permuted(keep) if zero_code else None
    c3 = np.zeros((groups, per, n), np.int64)
    for b in range(nblocks):
        i1, i2 = b * bsz, min(n, (b + 1) * bsz)
        # the block's codebooks, fitted on its weights as compensated so far
        books, _ = group_books(
            w3[:, :, i1:i2].reshape(r, i2 - i1), wt3[:, :, i1:i2].reshape(r, i2 - i1), gsz, levels - first, rng
        )
        codebook[rows_of + b, first:] = books
        gptq_span(w3, k3, c3, factor, i1, i2, np.repeat(books, gsz, axis=0)[:r], False, first)
    codes3 = np.empty_like(c3)
    np.put_along_axis(codes3, perm[:, None, :], c3, axis=2)
    codes = codes3.reshape(r, n)
    gptq_q = decode_blocks(codebook, codes, gsz, bsz)
    # plain: nearest centroid of the original weights, block by block, with the same codebooks
    plain_codes = np.zeros((r, n), np.int64)
    for b in range(nblocks):
        i1, i2 = b * bsz, min(n, (b + 1) * bsz)
        row_book = np.repeat(codebook[rows_of + b, first:], gsz, axis=0)[:r]
        plain_codes[:, i1:i2] = nearest(w[:, i1:i2], row_book) + first
    if zero_code:
        plain_codes = np.where(keep, plain_codes, 0)
    plain_q = decode_blocks(codebook, plain_codes, gsz, bsz)
    den = trace_whw(w, hs)
    err_plain, err_gptq = output_error(w, plain_q, hs, den), output_error(w, gptq_q, hs, den)
    if err_gptq <= err_plain:
        return Compensated(codebook, codes, True, err_gptq, err_plain)
    return Compensated(codebook, plain_codes, False, err_plain, err_plain)
