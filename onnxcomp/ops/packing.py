"""The com.onnxcomp storage layouts in numpy: bit packing, EIE sparse rows, zero runs, codebook lookup.

- :func:`pack_codes` / :func:`unpack_codes`: little-endian bit packing, rows padded to whole bytes;
- :func:`eie_encode` / :func:`eie_decode`: EIE compressed rows with relative indices and filler entries
  (SparseCodebookMatMul);
- :func:`run_length_encode` / :func:`run_length_decode`: (zero run, code) byte symbols (RunLengthDecode);
- :func:`decode_codebook`, :func:`ternary_lut`: weights from codes and per-group tables.

runtime/OPS.md states each layout; the encoders here are what the passes write, the decoders the reference
the op checks and the exactness tests compare against.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


# ============================================================================================ bit packing
def packed_row_bytes(n: int, bits: int) -> int:
    """Bytes of one packed row of ``n`` codes at ``bits`` bits: ceil(n * bits / 8)."""
    return (n * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes [rows, n] (or [n]: one row) in [0, 2**bits) -> uint8 [rows, ceil(n*bits/8)].

    Code j of a row occupies stream bits [j*bits, (j+1)*bits); stream bit i is bit (i % 8) of byte i // 8;
    unused trailing bits are 0.
    """
    import numpy as np

    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    c = np.asarray(codes)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2:
        raise ValueError(f"codes must be 1-D or 2-D, got shape {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= (1 << bits)):
        raise ValueError(f"codes out of range for {bits} bits")
    rows, n = c.shape
    nbytes = packed_row_bytes(n, bits)
    c = c.astype(np.uint8, copy=False)
    if 8 % bits == 0:
        # whole codes per byte: byte = sum_t code[t] << (t * bits)
        per = 8 // bits
        padded = np.zeros((rows, nbytes * per), np.uint8)
        padded[:, :n] = c
        shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
        out = np.zeros((rows, nbytes), np.uint8)
        view = padded.reshape(rows, nbytes, per)
        for t in range(per):
            out |= view[:, :, t] << shifts[t]
        return out
    # general widths: expand to one bit per element, then pack 8 bits per byte (little-endian)
    bitplanes = ((c[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1).reshape(rows, n * bits)
    padded = np.zeros((rows, nbytes * 8), np.uint8)
    padded[:, : n * bits] = bitplanes
    return np.packbits(padded.reshape(rows, nbytes, 8), axis=-1, bitorder="little").reshape(rows, nbytes)


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """uint8 [rows, nbytes] (or [nbytes]) -> int64 codes [rows, n] (the inverse of :func:`pack_codes`)."""
    import numpy as np

    p = np.asarray(packed, dtype=np.uint8)
    if p.ndim == 1:
        p = p[None, :]
    rows, nbytes = p.shape
    if nbytes < packed_row_bytes(n, bits):
        raise ValueError(f"{nbytes} bytes per row cannot hold {n} codes of {bits} bits")
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        parts = [(p >> np.uint8(t * bits)) & mask for t in range(per)]
        return np.stack(parts, axis=-1).reshape(rows, nbytes * per)[:, :n].astype(np.int64)
    bitplanes = np.unpackbits(p, axis=-1, bitorder="little")[:, : n * bits].reshape(rows, n, bits)
    weights = (1 << np.arange(bits)).astype(np.int64)
    return bitplanes.astype(np.int64) @ weights


# ============================================================================================ EIE sparse
@dataclasses.dataclass
class SparseRows:
    """EIE layout of a [K, N] code matrix whose code 0 means 0.0 (see SparseCodebookMatMul)."""

    row_ptr: np.ndarray  # int32 [K+1]
    deltas: np.ndarray  # int64 [E]: zero columns skipped before each entry
    codes: np.ndarray  # int64 [E]: codebook index per entry (0 for filler entries)
    n_cols: int
    index_bits: int
    fillers: int  # number of filler entries

    @property
    def entries(self) -> int:
        return int(self.deltas.shape[0])


def eie_encode(codes: np.ndarray, index_bits: int) -> SparseRows:
    """Codes [K, N] (0 = zero weight) -> rows of (delta, code) entries, fillers inserted for long gaps.

    Row k lists its non-zero columns c_0 < c_1 < ...; entry i stores delta_i = c_i - c_{i-1} - 1, c_{-1} = -1.
    A delta above 2**index_bits - 1 is split: f = delta // 2**index_bits filler entries (delta = max, code 0)
    advance the position by 2**index_bits each, then the real entry stores delta % 2**index_bits.
    """
    import numpy as np

    if index_bits not in (4, 8):
        raise ValueError(f"index_bits must be 4 or 8, got {index_bits}")
    c = np.asarray(codes)
    k_rows, n_cols = c.shape
    span = 1 << index_bits  # a filler advances the position by max delta + 1
    rows, cols = np.nonzero(c)
    prev = np.empty_like(cols)
    if cols.size:
        prev[1:] = cols[:-1]
        first = np.ones(cols.size, bool)
        first[1:] = rows[1:] != rows[:-1]
        prev[first] = -1
    gap = cols - prev - 1  # zero columns skipped before each non-zero
    n_fill = gap // span
    per_entry = n_fill + 1  # entries emitted for each non-zero (fillers, then itself)
    total = int(per_entry.sum())
    deltas = np.full(total, span - 1, np.int64)
    out_codes = np.zeros(total, np.int64)
    last = np.cumsum(per_entry) - 1  # index of each real entry
    deltas[last] = gap % span
    out_codes[last] = c[rows, cols]
    counts = np.bincount(rows, weights=per_entry, minlength=k_rows).astype(np.int64)
    row_ptr = np.zeros(k_rows + 1, np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    if row_ptr[-1] > np.iinfo(np.int32).max:
        raise ValueError("too many sparse entries for int32 row pointers")
    return SparseRows(row_ptr.astype(np.int32), deltas, out_codes, n_cols, index_bits, int(n_fill.sum()))


def eie_decode(row_ptr: np.ndarray, deltas: np.ndarray, codes: np.ndarray, n_cols: int) -> np.ndarray:
    """Entries -> code matrix [K, N] (0 where no entry); positions are checked to be < N."""
    import numpy as np

    row_ptr = np.asarray(row_ptr, np.int64)
    k_rows = row_ptr.shape[0] - 1
    e = int(row_ptr[-1])
    if row_ptr[0] != 0 or np.any(np.diff(row_ptr) < 0) or e != len(deltas) or e != len(codes):
        raise ValueError("invalid row pointers")
    rowid = np.repeat(np.arange(k_rows), np.diff(row_ptr))
    steps = np.asarray(deltas, np.int64) + 1
    incl = np.cumsum(steps)
    excl = np.concatenate([[0], incl])
    pos = incl - excl[row_ptr[rowid]] - 1
    if pos.size and pos.max() >= n_cols:
        raise ValueError("sparse entry position beyond the row length")
    out = np.zeros((k_rows, n_cols), np.int64)
    out[rowid, pos] = codes
    return out


def sparse_bytes(layout: SparseRows, bits: int) -> int:
    """Stored bytes of a SparseCodebookMatMul weight (codebook excluded)."""
    e = layout.entries
    return 4 * (layout.row_ptr.shape[0]) + packed_row_bytes(e, layout.index_bits) + packed_row_bytes(e, bits)


def best_sparse(codes: np.ndarray, bits: int) -> SparseRows:
    """The EIE layout with the index width (4 or 8 bits) that stores fewer bytes."""
    a, b = eie_encode(codes, 4), eie_encode(codes, 8)
    return a if sparse_bytes(a, bits) <= sparse_bytes(b, bits) else b


# ============================================================================================ zero runs
def max_zero_run(bits: int) -> int:
    """Longest zero run one RunLengthDecode symbol holds before its code: 2**(8 - bits) - 1."""
    return (1 << (8 - bits)) - 1


def run_length_encode(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (any shape, row-major, in [0, 2**bits), bits <= 7) -> uint8 symbols (zero run, code).

    EIE's relative indexing in one byte: symbol = run * 2**bits + code stands for ``run`` zero codes then
    ``code`` (run < 2**(8 - bits)). A gap longer than :func:`max_zero_run` takes filler symbols (a full run
    followed by the zero code); trailing zeros end in a filler whose run makes the total exact.
    """
    import numpy as np

    if not 1 <= bits <= 7:
        raise ValueError(f"zero-run symbols need bits 1..7, got {bits}")
    flat = np.asarray(codes, np.int64).ravel()
    span = max_zero_run(bits) + 1  # positions one filler covers
    nz = np.flatnonzero(flat)
    # zeros before each nonzero code, and the trailing zeros (which end in a filler of their own)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    tail = flat.size - 1 - (int(nz[-1]) if nz.size else -1)
    fillers = gaps // span
    seg = fillers + 1
    start = np.concatenate([[0], np.cumsum(seg)[:-1]]).astype(np.int64)
    tail_fill = -(-tail // span)  # ceil
    total = int(seg.sum()) + tail_fill
    out = np.full(total, (span - 1) << bits, np.uint8)  # full fillers by default
    out[start + fillers] = ((gaps - fillers * span) << bits) + flat[nz]
    if tail_fill:
        out[-1] = (tail - (tail_fill - 1) * span - 1) << bits
    return out


def run_length_decode(symbols: np.ndarray, bits: int, count: int) -> np.ndarray:
    """uint8 symbols -> int64 codes [count] (the inverse of :func:`run_length_encode`)."""
    import numpy as np

    s = np.asarray(symbols, np.int64).ravel()
    ends = np.cumsum((s >> bits) + 1)
    if (int(ends[-1]) if ends.size else 0) != count:
        raise ValueError(f"zero-run symbols expand to {int(ends[-1]) if ends.size else 0} codes, expected {count}")
    out = np.zeros(count, np.int64)
    out[ends - 1] = s & ((1 << bits) - 1)
    return out


# ============================================================================================ numpy decoders
def decode_codebook(
    codebook: np.ndarray, codes: np.ndarray, group_size: int, axis: int, block_size: int = 0
) -> np.ndarray:
    """W = codebook[row, codes]: axis 1 groups columns (MatMul), axis 0 rows (Conv).

    # row = (output // group_size) * nblocks + input // block_size,  nblocks = ceil(inputs / block_size)
    (``block_size`` 0 or >= the inputs along the other axis: one block, row = output // group_size).
    A float16 codebook decodes to float32 (exact), as the function bodies and the kernels decode it.
    """
    import numpy as np

    codebook = np.asarray(codebook, dtype=np.float32)
    n, k = codes.shape[axis], codes.shape[1 - axis]
    groups = np.arange(n) // group_size
    blocks = np.arange(k) // block_size if 0 < block_size < k else np.zeros(k, np.int64)
    nblocks = int(blocks[-1]) + 1 if k else 1
    if axis == 1:
        return codebook[groups[None, :] * nblocks + blocks[:, None], codes]
    return codebook[groups[:, None] * nblocks + blocks[None, :], codes]


def block_count(inputs: int, block_size: int | None) -> int:
    """Codebook blocks along the input features: ceil(inputs / block_size) (1 when block_size is 0 or absent)."""
    if not block_size or block_size >= inputs:
        return 1
    return -(-inputs // block_size)


def ternary_lut(scales: np.ndarray) -> np.ndarray:
    """scales [G, 2] (a_p, a_n) -> codebook [G, 4] = [0, a_p, -a_n, 0]."""
    import numpy as np

    z = np.zeros((scales.shape[0], 1), np.float32)
    return np.concatenate([z, scales[:, :1], -scales[:, 1:2], z], axis=1).astype(np.float32)
