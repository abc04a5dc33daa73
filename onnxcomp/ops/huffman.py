"""Canonical Huffman coding of packed code bytes (Deep Compression stage 3).

What is coded: the bytes of a packed uint8 tensor (codes, EIE deltas). A byte holds 8/bits codes for
bits in {1, 2, 4, 8}, so coding bytes codes pairs/quads of 4/2-bit indices jointly (closer to the entropy
than coding single small indices, whose code length cannot go below one bit). The output of decoding is
the packed tensor itself, so every com.onnxcomp op reads it unchanged.

Stream format (the ``HuffmanDecode`` op, runtime/OPS.md):

- code lengths limited to 16 bits, canonical codes (symbols sorted by (length, value), code values
  counting up), written MSB first: stream bit i is bit 7 - (i % 8) of byte i // 8; the last byte is padded
  with zeros;
- ``table`` uint8 [2, n]: row 0 the n coded symbols in canonical order, row 1 their code lengths
  (non-decreasing);
- ``offsets`` int32 [ceil(count / 1024)]: the bit offset of symbol 0, 1024, 2048, ... (chunks decode in
  parallel; the function body decodes a chunk by pointer doubling).
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MAX_LEN = 16  # longest code, bits looked up at once by the decoders
CHUNK_LOG2 = 10
CHUNK = 1 << CHUNK_LOG2  # symbols per chunk (one int32 bit offset each)


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Huffman code lengths (0 for absent symbols), limited to ``max_len`` bits.

    Standard Huffman tree merging; when the longest code exceeds ``max_len``, the counts are halved (rounded
    up, present symbols stay present) and the tree rebuilt, which flattens the tree until it fits.
    """
    import numpy as np

    counts = np.asarray(counts, np.int64).copy()
    present = np.flatnonzero(counts)
    lengths = np.zeros(counts.shape[0], np.int64)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present[0]] = 1
        return lengths
    while True:
        # heap items: (count, tiebreak, symbols under this node)
        heap = [(int(counts[s]), int(s), [int(s)]) for s in present]
        heapq.heapify(heap)
        depth = dict.fromkeys(present.tolist(), 0)
        tiebreak = counts.shape[0]
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, tiebreak, s1 + s2))
            tiebreak += 1
        if max(depth.values()) <= max_len:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        counts[present] = (counts[present] + 1) // 2


def canonical_codes(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symbols in canonical order, code value per symbol [alphabet]) from code lengths."""
    import numpy as np

    lengths = np.asarray(lengths, np.int64)
    symbols = np.array(sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)), np.int64)
    codes = np.zeros(lengths.shape[0], np.int64)
    code, prev = 0, 0
    for i, s in enumerate(symbols):
        ln = int(lengths[s])
        if i:
            code = (code + 1) << (ln - prev)
        codes[s] = code
        prev = ln
    return symbols, codes


@dataclasses.dataclass
class Coded:
    stream: np.ndarray  # uint8 [S]
    table: np.ndarray  # uint8 [2, n]
    offsets: np.ndarray  # int32 [C]
    count: int  # decoded bytes
    bits: int  # coded bits (without padding)

    @property
    def nbytes(self) -> int:
        """Stored bytes: stream + table + chunk offsets."""
        return int(self.stream.size + self.table.size + 4 * self.offsets.size)


def coded_size(data: np.ndarray) -> int:
    """Bytes :func:`encode` would store for ``data`` (uint8), from its histogram alone."""
    import numpy as np

    flat = np.asarray(data, np.uint8).ravel()
    if flat.size == 0:
        return 0
    counts = np.bincount(flat, minlength=256)
    lengths = code_lengths(counts)
    bits = int((counts * lengths).sum())
    n = int(np.count_nonzero(lengths))
    return (bits + 7) // 8 + 2 * n + 4 * ((flat.size + CHUNK - 1) // CHUNK)


def encode(data: np.ndarray) -> Coded:
    """uint8 array -> canonical Huffman stream (see the module docstring)."""
    import numpy as np

    flat = np.asarray(data, np.uint8).ravel()
    if flat.size == 0:
        raise ValueError("nothing to encode")
    counts = np.bincount(flat, minlength=256)
    lengths = code_lengths(counts)
    symbols, codes = canonical_codes(lengths)
    ln = lengths[flat]
    cv = codes[flat]
    ends = np.cumsum(ln)
    starts = ends - ln
    total = int(ends[-1])
    if total >= 2**31 - 8:
        raise ValueError("stream too long for int32 bit offsets")
    bitbuf = np.zeros(((total + 7) // 8) * 8, np.uint8)
    for t in range(int(ln.max())):
        sel = ln > t
        bitbuf[starts[sel] + t] = (cv[sel] >> (ln[sel] - 1 - t)) & 1
    stream = np.packbits(bitbuf, bitorder="big")
    table = np.stack([symbols, lengths[symbols]]).astype(np.uint8)
    offsets = starts[::CHUNK].astype(np.int32)
    return Coded(stream, table, offsets, int(flat.size), total)


def check_table(table: np.ndarray) -> None:
    """A valid ``table``: uint8 [2, n], 1 <= n <= 256, lengths 1..16 non-decreasing, a prefix code (Kraft sum
    of the canonical codes at most 1)."""
    import numpy as np

    if table.ndim != 2 or table.shape[0] != 2 or not 1 <= table.shape[1] <= 256:
        raise ValueError(f"Huffman table must have shape [2, n] with 1 <= n <= 256, got {list(table.shape)}")
    lens = np.asarray(table[1], np.int64)
    if np.any(lens < 1) or np.any(lens > MAX_LEN) or np.any(np.diff(lens) < 0):
        raise ValueError(f"invalid Huffman table: code lengths must be 1..{MAX_LEN} and non-decreasing")
    if int(np.sum(1 << (MAX_LEN - lens))) > 1 << MAX_LEN:
        raise ValueError("invalid Huffman table: the code lengths do not form a prefix code (Kraft sum > 1)")


def decode_stream(stream: np.ndarray, table: np.ndarray, offsets: np.ndarray, count: int) -> np.ndarray:
    """Numpy reference decoder: a 16-bit window lookup table, all chunks stepped together.

    Raises ValueError on a corrupt stream: an invalid table, a bit pattern no code matches, a code running past
    the stream's end, or chunk offsets that disagree with where the previous chunk ends.
    """
    import numpy as np

    stream = np.asarray(stream, np.uint8).ravel()
    table = np.asarray(table, np.uint8)
    check_table(table)
    symbols, lens = table[0].astype(np.int64), table[1].astype(np.int64)
    offsets = np.asarray(offsets, np.int64).ravel()
    chunks = -(-count // CHUNK)
    if offsets.shape[0] != chunks:
        raise ValueError(f"{offsets.shape[0]} chunk offsets for {count} symbols (expected {chunks})")
    total = 8 * stream.size
    if offsets.size and (offsets.min() < 0 or offsets.max() > total):
        raise ValueError(f"chunk offsets outside the stream of {total} bits")
    # window w (16 bits, MSB first) -> canonical index: count of code interval ends <= w
    ends = np.cumsum(1 << (MAX_LEN - lens))
    lut = np.minimum(np.searchsorted(ends, np.arange(1 << MAX_LEN), side="right"), symbols.size - 1)
    bits = np.unpackbits(stream, bitorder="big")
    padded = np.concatenate([bits, np.zeros(MAX_LEN, np.uint8)])
    out = np.empty(count, np.uint8)
    pos = offsets.copy()
    weights = 1 << np.arange(MAX_LEN - 1, -1, -1)
    idx = np.arange(count)
    for k in range(CHUNK):
        sel = idx[k::CHUNK]
        if sel.size == 0:
            break
        p = pos[: sel.size]
        if p.max() >= total:
            raise ValueError(f"the Huffman stream ends before symbol {int(sel[np.argmax(p >= total)])}")
        window = padded[p[:, None] + np.arange(MAX_LEN)[None, :]].astype(np.int64) @ weights
        if window.max() >= ends[-1]:
            raise ValueError(f"no Huffman code matches the bits of symbol {int(sel[np.argmax(window >= ends[-1])])}")
        i = lut[window]
        out[sel] = symbols[i]
        pos[: sel.size] = p + lens[i]
    if pos.size and pos.max() > total:
        raise ValueError("the last Huffman code runs past the end of the stream")
    if chunks > 1 and not np.array_equal(pos[:-1], offsets[1:]):
        c = int(np.argmax(pos[:-1] != offsets[1:]))
        raise ValueError(f"chunk offset {c + 1} ({int(offsets[c + 1])}) is not where chunk {c} ends ({int(pos[c])})")
    return out
