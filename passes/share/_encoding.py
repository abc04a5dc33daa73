"""The com.onnxcomp weight encodings: bit packing, EIE sparse rows, function bodies, numpy decoders, emitters.

This module is the executable form of the op contract (/work/contract.md, runtime/OPS.md):

- numpy encoders/decoders: :func:`pack_codes` / :func:`unpack_codes` (little-endian bit packing, rows padded
  to whole bytes), :func:`eie_encode` / :func:`eie_decode` (EIE compressed rows with relative indices and
  filler entries);
- the model-local function body of every op (``FUNCTIONS``, keyed by op type), built from standard ONNX ops
  only (Range/Gather/Div/Mod/Cast/CumSum/ScatterElements...) so that onnxruntime inlines it when the native
  runtime is not registered, and constant-folds the whole weight decode at load time (every decode input is
  an initializer);
- numpy reference decoders (``DECODERS``) and :func:`decode_model`, which rewrites a compressed model into
  standard ops with the decoded float weights (the reference the exactness tests compare against);
- gs emitters: :func:`emit` (a custom node plus its function), :func:`ensure_opset` (function bodies need
  ai.onnx >= 16), :func:`inline_functions` (standard ops only).

Function bodies import the model's own ai.onnx version (they only use ops whose definition has not changed
since opset 16), so the onnx checker accepts them in any model with ai.onnx >= 16.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult

logger = logging.getLogger(__name__)

DOMAIN = "com.onnxcomp"
MIN_OPSET = 16  # ScatterElements(reduction=add), Shape(start, end), Unsqueeze(axes input)
UPGRADE_OPSET = 18  # the version models below MIN_OPSET are converted to
HUFFMAN_CHUNK_LOG2 = 10  # HuffmanDecode: symbols per chunk = 2**10 (one int32 bit offset per chunk)
HUFFMAN_WINDOW = 16  # HuffmanDecode: longest code length, bits looked up at once


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


# ============================================================================================ function bodies
class _Body:
    """A FunctionProto under construction: short tensor names, helpers for constants and attribute refs."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._i = 0
        self._consts: dict[tuple[Any, ...], str] = {}

    def _tmp(self) -> str:
        # short names (a, b, ..., z, ba, bb, ...) keep the function bodies small on disk
        i, name = self._i, ""
        self._i += 1
        while True:
            name = chr(97 + i % 26) + name
            i //= 26
            if not i:
                return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        name = out or self._tmp()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def const(self, value: Any, dtype: str = "int64") -> str:
        import numpy as np
        from onnx import numpy_helper

        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            if arr.dtype == np.int64 and arr.ndim == 0:
                self._consts[key] = self.op("Constant", value_int=int(arr))
            elif arr.dtype == np.int64 and arr.ndim == 1:
                self._consts[key] = self.op("Constant", value_ints=[int(v) for v in arr])
            else:
                self._consts[key] = self.op("Constant", value=numpy_helper.from_array(arr))
        return self._consts[key]

    def attr(self, name: str, kind: str = "int") -> str:
        """The value of the node attribute ``name`` as a tensor (scalar for int, 1-D for ints)."""
        import onnx

        out = self._tmp()
        node = onnx.helper.make_node("Constant", [], [out])
        a = onnx.AttributeProto(name=f"value_{kind}", ref_attr_name=name)
        a.type = onnx.AttributeProto.INT if kind == "int" else onnx.AttributeProto.INTS
        node.attribute.append(a)
        self.nodes.append(node)
        return out

    def ref_attrs(self, node_index: int, names: dict[str, int]) -> None:
        """Attach attributes that forward the function's attributes (name -> AttributeProto type)."""
        import onnx

        node = self.nodes[node_index]
        for name, typ in names.items():
            a = onnx.AttributeProto(name=name, ref_attr_name=name)
            a.type = typ
            node.attribute.append(a)

    def call(self, op_type: str, *inputs: str, n_out: int = 1) -> list[str]:
        """A node calling another com.onnxcomp function (a function-only helper)."""
        from onnx import helper

        outs = [self._tmp() for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, domain=DOMAIN))
        self.calls_domain = True
        return outs

    def function(
        self, name: str, inputs: list[str], outputs: list[str], attributes: list[str], opset: int
    ) -> onnx.FunctionProto:
        from onnx import helper

        imports = [helper.make_opsetid("", opset)]
        if getattr(self, "calls_domain", False):
            imports.append(helper.make_opsetid(DOMAIN, 1))
        return helper.make_function(DOMAIN, name, inputs, outputs, self.nodes, imports, attributes=attributes)


def _unpack(f: _Body, packed: str, bits: str, n: str) -> tuple[str, str]:
    """Body node calling UnpackCodes: (int32 codes [R, n], int64 j [1, n])."""
    codes, j = f.call("UnpackCodes", packed, bits, n, n_out=2)
    return codes, j


def _fn_unpack_codes(opset: int) -> onnx.FunctionProto:
    # Helper of the other bodies (function-only): packed uint8 [R, nbytes], bits and count n (int64 scalars)
    #   -> codes int32 [R, n], cols = Range(n) as int64 [1, n].
    # (Formal names have 4+ letters: the body's temporaries are named a, b, ..., zz.)
    # code j = ((byte[lo] + 256 * byte[hi]) // 2**(pos % 8)) % 2**bits with pos = j*bits, lo = pos // 8,
    # hi = min(lo + 1, nbytes - 1): a code spans at most two bytes (bits <= 8), and when it lies in the last
    # byte alone, the clamped high byte only contributes bits that the modulo drops.
    # The [R, n] arithmetic is int32: onnxruntime keeps every folded temporary until folding ends, so the
    # peak memory of loading a model in plain onnxruntime is about the bytes of these [R, n] tensors.
    # Long index vectors are kept 2-D ([1, n]): onnx shape inference with data propagation spends time and
    # memory proportional to the length of every 1-D integer tensor of static shape.
    f = _Body()
    c1, c8 = f.const(1), f.const(8)
    j = f.op("Reshape", f.op("Range", f.const(0), "count", c1), f.const([1, -1]), out="cols")
    pos = f.op("Mul", j, "bits")
    lo = f.op("Div", pos, c8)
    hi = f.op("Min", f.op("Add", lo, c1), f.op("Sub", f.op("Shape", "packed", start=1, end=2), c1))
    word = f.op(
        "Add",
        f.op("Cast", f.op("Gather", "packed", lo, axis=1), to=6),
        f.op("Mul", f.op("Cast", f.op("Gather", "packed", hi, axis=1), to=6), f.const(256, "int32")),
    )
    pow2 = f.const([1 << i for i in range(9)], "int32")
    shift = f.op("Gather", pow2, f.op("Mod", pos, c8))
    code = f.op("Mod", f.op("Div", word, shift), f.op("Gather", pow2, "bits"))
    f.op("Reshape", code, f.const([0, -1]), out="codes")  # [R, 1, n] -> [R, n]
    return f.function("UnpackCodes", ["packed", "bits", "count"], ["codes", "cols"], [], opset)


def _row_width(f: _Body, codebook: str) -> str:
    # entries per codebook row, C (2**bits as the passes write it; a codebook may hold 1 <= C < 2**bits):
    # group g's entries start at g * C in the flattened codebook
    return f.op("Shape", codebook, start=1, end=2)


def _matmul_bias(f: _Body, x: str, w: str, b: str, y: str) -> None:
    f.op("Add", f.op("MatMul", x, w), b, out=y)


def _fn_codebook_matmul(opset: int) -> onnx.FunctionProto:
    # W[k, n] = codebook[n // group_size, code(k, n)];  Y = X @ W + B
    f = _Body()
    bits, n, gsz = f.attr("bits"), f.attr("N"), f.attr("group_size")
    codes, j = _unpack(f, "codes", bits, n)
    offset = f.op("Cast", f.op("Mul", f.op("Div", j, gsz), _row_width(f, "codebook")), to=6)  # [1, N]
    w = f.op("Gather", f.op("Reshape", "codebook", f.const([-1])), f.op("Add", codes, offset))
    _matmul_bias(f, "X", w, "B", "Y")
    return f.function("CodebookMatMul", ["X", "codebook", "codes", "B"], ["Y"], ["bits", "N", "group_size"], opset)


def _fn_ternary_matmul(opset: int) -> onnx.FunctionProto:
    # lut[g] = [0, a_p, -a_n, 0];  W[k, n] = lut[n // group_size, code(k, n)];  Y = X @ W + B
    import onnx

    f = _Body()
    n, gsz = f.attr("N"), f.attr("group_size")
    bits = f.const(2)
    g = f.op("Shape", "scales", start=0, end=1)
    zeros = f.op(
        "ConstantOfShape",
        f.op("Concat", g, f.const([1]), axis=0),
        value=onnx.numpy_helper.from_array(__import__("numpy").zeros(1, "float32")),
    )
    a_p = f.op("Slice", "scales", f.const([0]), f.const([1]), f.const([1]))
    a_n = f.op("Neg", f.op("Slice", "scales", f.const([1]), f.const([2]), f.const([1])))
    lut = f.op("Concat", zeros, a_p, a_n, zeros, axis=1)
    codes, j = _unpack(f, "codes", bits, n)
    offset = f.op("Cast", f.op("Mul", f.op("Div", j, gsz), f.const(4)), to=6)  # [1, N]
    w = f.op("Gather", f.op("Reshape", lut, f.const([-1])), f.op("Add", codes, offset))
    _matmul_bias(f, "X", w, "B", "Y")
    return f.function("TernaryMatMul", ["X", "scales", "codes", "B"], ["Y"], ["N", "group_size"], opset)


def _fn_codebook_gather(opset: int) -> onnx.FunctionProto:
    # Y[..., d] = codebook[r // group_size, code(r, d)] with r = indices[...] (negative: + V): Gather(table,
    # indices, axis=0) on a table of V rows of D values; only the gathered rows are unpacked and decoded
    # (the indices are data, so this is not folded at load: it runs per inference on the rows it needs)
    f = _Body()
    bits, d, gsz = f.attr("bits"), f.attr("D"), f.attr("group_size")
    flat = f.op("Reshape", "indices", f.const([-1]))
    v = f.op("Cast", f.op("Shape", "codes", start=0, end=1), to=7)
    idx = f.op("Cast", flat, to=7)
    idx = f.op("Where", f.op("Less", idx, f.const(0)), f.op("Add", idx, v), idx)
    rows = f.op("Gather", "codes", idx, axis=0)  # [I, packed]
    codes, _ = _unpack(f, rows, bits, d)  # [I, D]
    offset = f.op("Cast", f.op("Mul", f.op("Div", idx, gsz), _row_width(f, "codebook")), to=6)  # [I]
    vals = f.op(
        "Gather",
        f.op("Reshape", "codebook", f.const([-1])),
        f.op("Add", codes, f.op("Unsqueeze", offset, f.const([1]))),
    )
    shape = f.op("Concat", f.op("Shape", "indices"), f.op("Reshape", d, f.const([1])), axis=0)
    f.op("Reshape", vals, shape, out="Y")
    return f.function("CodebookGather", ["codebook", "codes", "indices"], ["Y"], ["bits", "D", "group_size"], opset)


CONV_ATTRS = ("dilations", "group", "kernel_shape", "pads", "strides")


def _fn_codebook_conv(opset: int) -> onnx.FunctionProto:
    # W[m].ravel()[j] = codebook[m // group_size, code(m, j)];  Y = Conv(X, W, B)
    import onnx

    f = _Body()
    bits, gsz, shape = f.attr("bits"), f.attr("group_size"), f.attr("weight_shape", "ints")
    per_row = f.op("Size", f.op("ConstantOfShape", f.op("Slice", shape, f.const([1]), f.const([1 << 30]))))
    codes, _ = _unpack(f, "codes", bits, per_row)
    m = f.op("Gather", shape, f.const(0))
    rows = f.op("Range", f.const(0), m, f.const(1))
    offset = f.op("Cast", f.op("Mul", f.op("Div", rows, gsz), _row_width(f, "codebook")), to=6)  # [M]
    index = f.op("Add", codes, f.op("Unsqueeze", offset, f.const([1])))
    w = f.op("Reshape", f.op("Gather", f.op("Reshape", "codebook", f.const([-1])), index), shape)
    f.op("Conv", "X", w, "B", out="Y")
    a = onnx.AttributeProto
    f.ref_attrs(
        len(f.nodes) - 1,
        {"dilations": a.INTS, "group": a.INT, "kernel_shape": a.INTS, "pads": a.INTS, "strides": a.INTS},
    )
    return f.function(
        "CodebookConv",
        ["X", "codebook", "codes", "B"],
        ["Y"],
        ["bits", "group_size", "weight_shape", *CONV_ATTRS],
        opset,
    )


def _fn_sparse_codebook_matmul(opset: int) -> onnx.FunctionProto:
    # Row k: p = -1; for e in row_ptr[k]..row_ptr[k+1]: p += delta[e] + 1; W[k, p] = cb[p // gs, code[e]].
    # Vectorized: rowid[e] = #{k >= 1 : row_ptr[k] <= e} (scatter-add of ones at row_ptr[1:K], then CumSum);
    # S = CumSum(delta + 1); p[e] = S[e] - S_excl[row_ptr[rowid[e]]] - 1.
    import numpy as np
    import onnx

    f = _Body()
    bits, ibits, n, gsz = f.attr("bits"), f.attr("index_bits"), f.attr("N"), f.attr("group_size")
    ptr = f.op("Cast", "row_ptr", to=7)
    e = f.op("Gather", ptr, f.const(-1))
    flat = f.const([1, -1])
    # every per-entry vector is a row [1, E] (see _unpack)
    # entry-sized vectors in int64 (positions are cumulative over the whole weight)
    deltas = f.op("Cast", _unpack(f, f.op("Reshape", "deltas", flat), ibits, e)[0], to=7)
    codes = f.op("Cast", _unpack(f, f.op("Reshape", "codes", flat), bits, e)[0], to=7)
    k = f.op("Sub", f.op("Shape", ptr), f.const([1]))
    inner = f.op("Reshape", f.op("Slice", ptr, f.const([1]), f.const([-1])), flat)  # row_ptr[1:K]
    e1 = f.op("Unsqueeze", e, f.const([0]))
    zeros_e = f.op(
        "ConstantOfShape",
        f.op("Concat", f.const([1]), f.op("Add", e1, f.const([1])), axis=0),
        value=onnx.numpy_helper.from_array(np.zeros(1, np.int64)),
    )
    ones = f.op("ConstantOfShape", f.op("Shape", inner), value=onnx.numpy_helper.from_array(np.ones(1, np.int64)))
    marks = f.op("ScatterElements", zeros_e, inner, ones, axis=1, reduction="add")
    rowid = f.op("Slice", f.op("CumSum", marks, f.const(1)), f.const([0]), e1, f.const([1]))
    incl = f.op("CumSum", f.op("Add", deltas, f.const(1)), f.const(1))
    excl = f.op("Concat", f.const(np.zeros((1, 1), np.int64)), incl, axis=1)
    start = f.op("GatherElements", excl, f.op("Gather", ptr, rowid), axis=1)
    pos = f.op("Sub", f.op("Sub", incl, start), f.const(1))
    index = f.op("Add", codes, f.op("Mul", f.op("Div", pos, gsz), _row_width(f, "codebook")))
    values = f.op("Gather", f.op("Reshape", "codebook", f.const([-1])), index)
    n1 = f.op("Unsqueeze", n, f.const([0]))
    dense = f.op(
        "ConstantOfShape",
        f.op("Concat", f.const([1]), f.op("Mul", k, n1), axis=0),
        value=onnx.numpy_helper.from_array(np.zeros(1, np.float32)),
    )
    target = f.op("Add", f.op("Mul", rowid, n), pos)
    w_flat = f.op("ScatterElements", dense, target, values, axis=1)
    w = f.op("Reshape", w_flat, f.op("Concat", k, n1, axis=0))
    _matmul_bias(f, "X", w, "B", "Y")
    return f.function(
        "SparseCodebookMatMul",
        ["X", "codebook", "row_ptr", "deltas", "codes", "B"],
        ["Y"],
        ["bits", "index_bits", "N", "group_size"],
        opset,
    )


def _fn_huffman_decode(opset: int) -> onnx.FunctionProto:
    # Canonical Huffman, codes written MSB first (stream bit i = bit 7 - i % 8 of byte i // 8), lengths <= 16.
    # table[0] = symbols in canonical order, table[1] = their code lengths (non-decreasing).
    # A 16-bit window w at a code start decodes to the symbol i with base_i <= w < base_i + 2**(16 - len_i),
    # base = exclusive CumSum(2**(16 - len)): a lookup table over all 2**16 windows (scatter + CumSum).
    # Decoding is parallel: every bit position i gets next[i] = i + len(window at i); the symbol starts of a
    # chunk (2**CHUNK symbols, its first bit offset stored) are next^k(offset), k < 2**CHUNK, found by pointer
    # doubling: P <- Concat(P, J[P]), J <- J[J].
    import numpy as np
    import onnx

    f = _Body()
    win = HUFFMAN_WINDOW
    shape = f.attr("shape", "ints")
    count = f.op(
        "Unsqueeze",
        f.op("Size", f.op("ConstantOfShape", shape, value=onnx.numpy_helper.from_array(np.zeros(1, np.uint8)))),
        f.const([0]),
    )
    syms = f.op("Gather", "table", f.const(0, "int32"), axis=0)
    lens = f.op("Cast", f.op("Gather", "table", f.const(1, "int32"), axis=0), to=6)
    pow2 = f.const([1 << i for i in range(win + 1)], "int32")
    span = f.op("Gather", pow2, f.op("Sub", f.const(win, "int32"), lens))
    ends = f.op("CumSum", span, f.const(0, "int32"))
    zeros = f.op(
        "ConstantOfShape",
        f.const([(1 << win) + 1]),
        value=onnx.numpy_helper.from_array(np.zeros(1, np.int32)),
    )
    ones = f.op("ConstantOfShape", f.op("Shape", ends), value=onnx.numpy_helper.from_array(np.ones(1, np.int32)))
    marks = f.op("ScatterElements", zeros, ends, ones, axis=0, reduction="add")
    last = f.op("Sub", f.op("Shape", syms), f.const([1]))
    idx = f.op("Min", f.op("Cast", f.op("CumSum", marks, f.const(0, "int32")), to=7), last)
    lut = f.op("Slice", idx, f.const([0]), f.const([1 << win]))
    lut_sym = f.op("Gather", syms, lut)
    lut_len = f.op("Gather", lens, lut)
    # Every stream-sized vector is a row [1, X] (see _unpack: 1-D ones are slow in onnx shape inference).
    # 24-bit big-endian word at every byte q: stream[q] stream[q+1] stream[q+2] (clamped at the end; the
    # clamped bytes only feed window bits past the last code, which the lookup table ignores)
    row = f.const([1, -1])
    stream = f.op("Reshape", "stream", row)
    # (Cast after Squeeze: onnxruntime mistypes Squeeze(Cast(Shape)) as int64 when inferring Range)
    nbytes = f.op("Cast", f.op("Squeeze", f.op("Shape", "stream"), f.const([0])), to=6)
    q = f.op("Reshape", f.op("Range", f.const(0, "int32"), nbytes, f.const(1, "int32")), row)
    lastb = f.op("Sub", nbytes, f.const(1, "int32"))

    def byte(offset: int) -> str:
        idx = f.op("Min", f.op("Add", q, f.const(offset, "int32")), lastb)
        return f.op("Cast", f.op("GatherElements", stream, idx, axis=1), to=6)

    c256 = f.const(256, "int32")
    word = f.op("Add", f.op("Mul", f.op("Add", f.op("Mul", f.op("Cast", stream, to=6), c256), byte(1)), c256), byte(2))
    # the 16-bit window at bit 8q + r (MSB first) is (word >> (8 - r)) & 0xFFFF: [1, bytes, 8] -> [1, T]
    window = f.op(
        "Reshape",
        f.op(
            "Mod",
            f.op(
                "Div",
                f.op("Unsqueeze", word, f.const([2])),
                f.const([1 << (8 - r) for r in range(8)], "int32"),
            ),
            f.const(1 << win, "int32"),
        ),
        row,
    )
    nbits = f.op("Mul", nbytes, f.const(8, "int32"))
    i = f.op("Reshape", f.op("Range", f.const(0, "int32"), nbits, f.const(1, "int32")), row)
    # next code start; positions T .. T+16 (past the stream) all lead to the sentinel T
    tail = f.op("Expand", nbits, f.const([1, win + 1]))
    jump = f.op("Concat", f.op("Add", i, f.op("Gather", lut_len, window)), tail, axis=1)
    sym_at = f.op("Gather", lut_sym, window)
    # P holds [k = 0 for every chunk, k = 1 for every chunk, ...]: P <- [P, J[P]], J <- J[J]
    pos = f.op("Reshape", "offsets", row)
    for step in range(HUFFMAN_CHUNK_LOG2):
        pos = f.op("Concat", pos, f.op("GatherElements", jump, pos, axis=1), axis=1)
        if step + 1 < HUFFMAN_CHUNK_LOG2:
            jump = f.op("GatherElements", jump, jump, axis=1)
    # [2**CHUNK, chunks] -> chunk-major order = symbol order
    pos = f.op(
        "Reshape",
        f.op("Transpose", f.op("Reshape", pos, f.const([1 << HUFFMAN_CHUNK_LOG2, -1])), perm=[1, 0]),
        row,
    )
    starts = f.op("Slice", pos, f.const([0]), count, f.const([1]))
    # starts < T for the first count symbols
    f.op("Reshape", f.op("GatherElements", sym_at, starts, axis=1), shape, out="Y")
    return f.function("HuffmanDecode", ["stream", "table", "offsets"], ["Y"], ["shape"], opset)


def _fn_run_length_decode(opset: int) -> onnx.FunctionProto:
    # symbols uint8 [M], s = run * 2**bits + code: run zero codes, then code; attributes bits, count = n codes
    # per row, shape = Y's shape [R, ceil(n * bits / 8)] -> Y, the R * n codes packed per row (Y is built on
    # ConstantOfShape(shape), so onnx shape inference knows its shape). Expansion: the code of symbol i
    # lands at CumSum(run + 1)_i - 1, one ScatterElements into zeros. Packing: code j of a row sits at bit
    # p = j * bits; c << (p % 8) < 2**15 adds its low byte to byte p // 8 and its high byte to byte p // 8 + 1
    # (clamped to the last byte, where the high byte is 0): two ScatterElements(reduction=add) (the codes'
    # bits do not overlap, so add = or). Stream-sized vectors are rows [1, X] (see _unpack).
    import numpy as np
    import onnx

    f = _Body()
    bits, count, shape = f.attr("bits"), f.attr("count"), f.attr("shape", "ints")
    row = f.const([1, -1])
    zero = onnx.numpy_helper.from_array(np.zeros(1, np.int32))
    s = f.op("Cast", f.op("Reshape", "symbols", row), to=6)
    pow2 = f.const([1 << i for i in range(9)], "int32")
    levels = f.op("Gather", pow2, bits)
    one = f.const(1, "int32")
    end = f.op("Sub", f.op("CumSum", f.op("Add", f.op("Div", s, levels), one), one), one)
    code_shape = f.op(
        "Concat",
        f.op("Slice", shape, f.const([0]), f.const([1])),
        f.op("Unsqueeze", count, f.const([0])),
        axis=0,
    )
    flat = f.op("ConstantOfShape", f.op("Concat", f.const([1]), f.op("ReduceProd", code_shape), axis=0), value=zero)
    codes = f.op("Reshape", f.op("ScatterElements", flat, end, f.op("Mod", s, levels), axis=1), code_shape)
    # positions in int32: the [R, n] index tensors of the scatters are the largest temporaries
    bits32 = f.op("Cast", bits, to=6)
    c8 = f.const(8, "int32")
    pos = f.op(
        "Mul",
        f.op("Reshape", f.op("Range", f.const(0, "int32"), f.op("Cast", count, to=6), one), row),
        bits32,
    )
    lo = f.op("Div", pos, c8)
    last = f.op("Sub", f.op("Cast", f.op("Gather", shape, f.const(1)), to=6), one)
    hi = f.op("Min", f.op("Add", lo, one), last)
    shifted = f.op("Mul", codes, f.op("Gather", pow2, f.op("Mod", pos, c8)))
    c256 = f.const(256, "int32")
    full = f.op("Shape", codes)
    out = f.op("ConstantOfShape", shape, value=zero)
    for idx, part in ((lo, "Mod"), (hi, "Div")):
        out = f.op(
            "ScatterElements",
            out,
            f.op("Expand", idx, full),
            f.op(part, shifted, c256),
            axis=1,
            reduction="add",
        )
    f.op("Cast", out, to=2, out="Y")
    return f.function("RunLengthDecode", ["symbols"], ["Y"], ["bits", "count", "shape"], opset)


FUNCTIONS: dict[str, Callable[[int], onnx.FunctionProto]] = {
    "UnpackCodes": _fn_unpack_codes,
    "CodebookMatMul": _fn_codebook_matmul,
    "CodebookConv": _fn_codebook_conv,
    "SparseCodebookMatMul": _fn_sparse_codebook_matmul,
    "TernaryMatMul": _fn_ternary_matmul,
    "HuffmanDecode": _fn_huffman_decode,
    "RunLengthDecode": _fn_run_length_decode,
    "CodebookGather": _fn_codebook_gather,
}


# The packed code input of a weight op and its layout (bits, codes per row) from the node's attributes: what
# the Huffman store may rebuild from zero runs (RunLengthDecode). SparseCodebookMatMul stores no zero codes.
CODE_LAYOUT: dict[str, tuple[int, Callable[[dict[str, Any]], tuple[int, int]]]] = {
    "CodebookMatMul": (2, lambda a: (int(a["bits"]), int(a["N"]))),
    "CodebookConv": (2, lambda a: (int(a["bits"]), _prod(a["weight_shape"][1:]))),
    "TernaryMatMul": (2, lambda a: (2, int(a["N"]))),
    "CodebookGather": (1, lambda a: (int(a["bits"]), int(a["D"]))),
}


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


# function-only helpers a body calls (added to the model with it)
HELPERS: dict[str, tuple[str, ...]] = {
    "CodebookMatMul": ("UnpackCodes",),
    "CodebookConv": ("UnpackCodes",),
    "SparseCodebookMatMul": ("UnpackCodes",),
    "TernaryMatMul": ("UnpackCodes",),
    "CodebookGather": ("UnpackCodes",),
}


def function_protos(op_type: str, opset: int) -> list[onnx.FunctionProto]:
    """The function of ``op_type`` and of the helpers it calls: what a model using the op must carry."""
    return [function_proto(h, opset) for h in HELPERS.get(op_type, ())] + [function_proto(op_type, opset)]


def function_proto(op_type: str, opset: int) -> onnx.FunctionProto:
    try:
        builder = FUNCTIONS[op_type]
    except KeyError as err:
        raise ValueError(f"no com.onnxcomp op {op_type!r}; ops: {', '.join(FUNCTIONS)}") from err
    return builder(opset)


# ============================================================================================ numpy decoders
def decode_codebook(codebook: np.ndarray, codes: np.ndarray, group_size: int, axis: int) -> np.ndarray:
    """W = codebook[group(position along axis), codes]: axis 1 groups columns (MatMul), axis 0 rows (Conv)."""
    import numpy as np

    n = codes.shape[axis]
    groups = np.arange(n) // group_size
    if axis == 1:
        return codebook[groups[None, :], codes]
    return codebook[groups[:, None], codes]


def ternary_lut(scales: np.ndarray) -> np.ndarray:
    """scales [G, 2] (a_p, a_n) -> codebook [G, 4] = [0, a_p, -a_n, 0]."""
    import numpy as np

    z = np.zeros((scales.shape[0], 1), np.float32)
    return np.concatenate([z, scales[:, :1], -scales[:, 1:2], z], axis=1).astype(np.float32)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dec_codebook_matmul(node: onnx.NodeProto, v: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    a = _attrs(node)
    n = int(a["N"])
    codes = unpack_codes(v[2], int(a["bits"]), n)
    return decode_codebook(v[1], codes, int(a.get("group_size", n)), axis=1), v[3]


def _dec_ternary_matmul(node: onnx.NodeProto, v: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    a = _attrs(node)
    n = int(a["N"])
    codes = unpack_codes(v[2], 2, n)
    return decode_codebook(ternary_lut(v[1]), codes, int(a.get("group_size", n)), axis=1), v[3]


def _dec_sparse_matmul(node: onnx.NodeProto, v: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    a = _attrs(node)
    n, bits, ibits = int(a["N"]), int(a["bits"]), int(a["index_bits"])
    row_ptr = np.asarray(v[2])
    e = int(row_ptr[-1])
    deltas = unpack_codes(v[3].reshape(1, -1), ibits, e)[0]
    codes = unpack_codes(v[4].reshape(1, -1), bits, e)[0]
    dense = eie_decode(row_ptr, deltas, codes, n)
    return decode_codebook(v[1], dense, int(a.get("group_size", n)), axis=1), v[5]


def _dec_codebook_conv(node: onnx.NodeProto, v: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    a = _attrs(node)
    shape = [int(s) for s in a["weight_shape"]]
    codes = unpack_codes(v[2], int(a["bits"]), int(np.prod(shape[1:])))
    w = decode_codebook(v[1], codes, int(a.get("group_size", shape[0])), axis=0)
    return w.reshape(shape), v[3] if len(v) > 3 else None


def _dec_codebook_gather(node: onnx.NodeProto, v: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    a = _attrs(node)
    codes = unpack_codes(v[1], int(a["bits"]), int(a["D"]))
    return decode_codebook(v[0], codes, int(a.get("group_size", codes.shape[0])), axis=0), None


# op type -> (numpy decoder (node, input values) -> (weight, bias), standard op it computes)
DECODERS: dict[str, tuple[Callable[..., tuple[Any, Any]], str]] = {
    "CodebookMatMul": (_dec_codebook_matmul, "MatMul"),
    "TernaryMatMul": (_dec_ternary_matmul, "MatMul"),
    "SparseCodebookMatMul": (_dec_sparse_matmul, "MatMul"),
    "CodebookConv": (_dec_codebook_conv, "Conv"),
    "CodebookGather": (_dec_codebook_gather, "Gather"),
}


def decode_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every com.onnxcomp node replaced by standard ops on numpy-decoded float weights.

    CodebookMatMul/TernaryMatMul/SparseCodebookMatMul -> MatMul + Add(B); CodebookConv -> Conv;
    HuffmanDecode and RunLengthDecode -> an initializer holding the decoded bytes. This is "the original model
    with its weights replaced by the decoded weights", the reference of the exactness tests.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from . import _huffman

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        if not name:
            return None
        if name not in values:
            if name not in inits:
                raise ValueError(f"input {name!r} of a com.onnxcomp node is not an initializer")
            values[name] = numpy_helper.to_array(inits[name])
        return values[name]

    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in m.graph.node:
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        if node.op_type == "HuffmanDecode":
            shape = [int(s) for s in _attrs(node)["shape"]]
            dec = _huffman.decode_stream(
                value(node.input[0]), value(node.input[1]), value(node.input[2]), int(np.prod(shape))
            )
            values[node.output[0]] = dec.reshape(shape)
            new_inits.append(numpy_helper.from_array(values[node.output[0]], node.output[0]))
            continue
        if node.op_type == "RunLengthDecode":
            a = _attrs(node)
            bits, n, rows = int(a["bits"]), int(a["count"]), int(a["shape"][0])
            codes = run_length_decode(value(node.input[0]), bits, rows * n).reshape(rows, n)
            values[node.output[0]] = pack_codes(codes, bits)
            new_inits.append(numpy_helper.from_array(values[node.output[0]], node.output[0]))
            continue
        if node.op_type not in DECODERS:
            raise ValueError(f"unknown com.onnxcomp op {node.op_type!r}")
        decoder, std = DECODERS[node.op_type]
        data_inputs = {"Gather": (0, 1)}.get(std, ())  # inputs that are constants (others: the activation X)
        w, b = decoder(
            node,
            [value(i) if (k in data_inputs if data_inputs else k) else None for k, i in enumerate(node.input)],
        )
        w_name, b_name = f"{node.output[0]}__W", f"{node.output[0]}__B"
        new_inits.append(numpy_helper.from_array(np.asarray(w, np.float32), w_name))
        if std == "Gather":
            new_nodes.append(helper.make_node("Gather", [w_name, node.input[2]], list(node.output), name=node.name))
        elif std == "Conv":
            a = _attrs(node)
            conv_attrs = {k: a[k] for k in CONV_ATTRS if k in a}
            ins = [node.input[0], w_name]
            if b is not None:
                new_inits.append(numpy_helper.from_array(np.asarray(b, np.float32), b_name))
                ins.append(b_name)
            new_nodes.append(helper.make_node("Conv", ins, list(node.output), name=node.name, **conv_attrs))
        else:
            mm = f"{node.output[0]}__XW"
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm], name=f"{node.name}__mm"))
            if b is None:
                b = np.zeros(w.shape[1], np.float32)
            new_inits.append(numpy_helper.from_array(np.asarray(b, np.float32), b_name))
            new_nodes.append(helper.make_node("Add", [mm, b_name], list(node.output), name=node.name))
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    used = {i for n in new_nodes for i in n.input}
    kept = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept + [t for t in new_inits if t.name in used])
    del m.functions[:]
    keep_ops = [o for o in m.opset_import if o.domain != DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(keep_ops)
    del m.graph.value_info[:]
    return m


# ============================================================================================ gs emitters
def ensure_function(graph: gs.Graph, op_type: str) -> None:
    """Add the model-local function of ``op_type`` to the graph once (it imports the graph's ai.onnx)."""
    from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

    from onnxcomp.graph import opset_version

    for helper in HELPERS.get(op_type, ()):
        ensure_function(graph, helper)
    for fn in graph.functions:
        if fn.name == op_type and fn.domain == DOMAIN:
            return
    proto = function_proto(op_type, opset_version(graph))
    graph.functions.append(OnnxImporter.import_function(proto, model_opset=opset_version(graph)))
    _ensure_domain(graph)


def _ensure_domain(graph: gs.Graph) -> None:
    import onnx

    domains = list(graph.import_domains or [])
    if not any(d.domain == DOMAIN for d in domains):
        if not any(d.domain in ("", "ai.onnx") for d in domains):
            domains.append(onnx.helper.make_opsetid("", int(graph.opset)))
        domains.append(onnx.helper.make_opsetid(DOMAIN, 1))
        graph.import_domains = domains


def emit(graph: gs.Graph, old: gs.Node, op_type: str, inputs: list[Any], attrs: dict[str, Any], suffix: str) -> gs.Node:
    """Replace ``old`` by a com.onnxcomp node writing the same output tensor(s)."""
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import unique_name

    ensure_function(graph, op_type)
    outputs = list(old.outputs)
    old.inputs.clear()
    old.outputs.clear()
    node = gs.Node(
        op_type,
        unique_name(graph, f"{old.name or (outputs[0].name if outputs else op_type)}_{suffix}"),
        attrs=attrs,
        inputs=inputs,
        outputs=outputs,
        domain=DOMAIN,
    )
    graph.nodes.append(node)
    return node


def ensure_opset(graph: gs.Graph, ctx: PassContext, result: PassResult) -> bool:
    """Function bodies need ai.onnx >= MIN_OPSET: upgrade the graph (verified) or skip with a reason."""
    from onnxcomp.graph import opset_version

    have = opset_version(graph)
    if have >= MIN_OPSET:
        return True
    try:
        upgrade_opset(graph, ctx, UPGRADE_OPSET)
    except (ValueError, RuntimeError) as err:
        result.skip(
            "model",
            f"the com.onnxcomp function bodies need ai.onnx opset >= {MIN_OPSET}; the model "
            f"has {have} and onnx.version_converter could not upgrade it losslessly ({err})",
        )
        return False
    result.count("opset_upgraded_to", UPGRADE_OPSET)
    return True


def upgrade_opset(graph: gs.Graph, ctx: PassContext, target: int) -> None:
    """Convert the graph to ai.onnx ``target`` with onnx.version_converter; outputs must stay equal."""
    import numpy as np
    import onnx

    from onnxcomp.calib import generate_inputs
    from onnxcomp.errors import InputError
    from onnxcomp.graph import export_model, import_model
    from onnxcomp.io import normalize
    from onnxcomp.verify import run_model

    before = export_model(graph, ctx)
    try:
        after = onnx.version_converter.convert_version(before, target)
        onnx.checker.check_model(after)
    except Exception as err:  # the converter raises assorted C++ errors
        raise ValueError(" ".join(str(err).split())[:200]) from err
    try:
        feeds = generate_inputs(normalize(before, ctx.input_shapes), ctx.input_shapes, seed=ctx.seed)
        ref, new = run_model(before, feeds), run_model(after, feeds)
    except InputError as err:
        raise ValueError(str(err)) from err
    for name, r in ref.items():
        if not np.array_equal(r, new[name], equal_nan=True):
            raise ValueError(f"output {name!r} changed after conversion")
    replace_graph(graph, import_model(after))


def replace_graph(graph: gs.Graph, new: gs.Graph) -> None:
    """Make ``graph`` (the object the pipeline holds) the same graph as ``new``."""
    graph.nodes = new.nodes
    graph.inputs = new.inputs
    graph.outputs = new.outputs
    graph.opset = new.opset
    graph.import_domains = new.import_domains
    graph.functions = list(new.functions)


def inline_functions(graph: gs.Graph, ctx: PassContext) -> int:
    """Inline every model-local function (standard ops only); returns the number of nodes inlined."""
    import onnx

    from onnxcomp.graph import export_model, import_model

    calls = sum(1 for n in graph.nodes if any(n.op == f.name and n.domain == f.domain for f in graph.functions))
    if not graph.functions:
        return 0
    model = export_model(graph, ctx)
    import onnx.inliner

    inlined = onnx.inliner.inline_local_functions(model)
    del inlined.functions[:]
    ops = [o for o in inlined.opset_import if o.domain != DOMAIN or any(n.domain == DOMAIN for n in inlined.graph.node)]
    del inlined.opset_import[:]
    inlined.opset_import.extend(ops)
    new = import_model(inlined)
    replace_graph(graph, new)
    graph.import_domains = [d for d in (graph.import_domains or []) if d.domain != DOMAIN]
    ctx.model_meta.get("opset_import", {}).pop(DOMAIN, None)
    return calls
