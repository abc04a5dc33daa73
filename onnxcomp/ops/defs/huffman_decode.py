"""HuffmanDecode: the bytes of a canonical Huffman stream (function-only; runtime/OPS.md).

The stream format and its numpy encoder/decoder are :mod:`onnxcomp.ops.huffman`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import FunctionBody
from ..huffman import CHUNK_LOG2, MAX_LEN
from ..spec import INT32, UINT8, Attr, Input, OpSpec, Shapes, Values, prod, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # Canonical Huffman, codes written MSB first (stream bit i = bit 7 - i % 8 of byte i // 8), lengths <= 16.
    # table[0] = symbols in canonical order, table[1] = their code lengths (non-decreasing).
    # A 16-bit window w at a code start decodes to the symbol i with base_i <= w < base_i + 2**(16 - len_i),
    # base = exclusive CumSum(2**(16 - len)): a lookup table over all 2**16 windows (scatter + CumSum).
    # Decoding is parallel: every bit position i gets next[i] = i + len(window at i); the symbol starts of a
    # chunk (2**CHUNK symbols, its first bit offset stored) are next^k(offset), k < 2**CHUNK, found by pointer
    # doubling: P <- Concat(P, J[P]), J <- J[J].
    import numpy as np
    import onnx

    f = FunctionBody()
    win = MAX_LEN
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
    for step in range(CHUNK_LOG2):
        pos = f.op("Concat", pos, f.op("GatherElements", jump, pos, axis=1), axis=1)
        if step + 1 < CHUNK_LOG2:
            jump = f.op("GatherElements", jump, jump, axis=1)
    # [2**CHUNK, chunks] -> chunk-major order = symbol order
    pos = f.op(
        "Reshape",
        f.op("Transpose", f.op("Reshape", pos, f.const([1 << CHUNK_LOG2, -1])), perm=[1, 0]),
        row,
    )
    starts = f.op("Slice", pos, f.const([0]), count, f.const([1]))
    # starts < T for the first count symbols
    f.op("Reshape", f.op("GatherElements", sym_at, starts, axis=1), shape, out="Y")
    return f.function("HuffmanDecode", ["stream", "table", "offsets"], ["Y"], ["shape"], opset)


def reference(a: dict[str, Any], v: Values) -> np.ndarray:
    from ..huffman import decode_stream

    shape = [int(s) for s in a["shape"]]
    return decode_stream(v[0], v[1], v[2], prod(shape)).reshape(shape)


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    from ..huffman import check_table

    shape = [int(s) for s in a["shape"]]
    count = prod(shape)
    if v[1] is not None:
        check_table(v[1])
    offsets = v[2]
    if offsets is not None and (offsets.ndim != 1 or offsets.shape[0] != checks.ceil_div(count, 1 << CHUNK_LOG2)):
        raise ValueError(
            f"offsets must have shape [ceil(count / {1 << CHUNK_LOG2})={checks.ceil_div(count, 1 << CHUNK_LOG2)}] "
            f"(shape {checks.shape_str(shape)}), got {checks.shape_str(offsets.shape)}"
        )
    if v[0] is not None and v[0].ndim != 1:
        raise ValueError(f"stream must be 1-D, got shape {checks.shape_str(v[0].shape)}")
    if all(x is not None for x in v[:3]):
        reference(a, v)  # decoding checks the codes, the stream's end and the chunk offsets


SPEC = register_op(
    OpSpec(
        "HuffmanDecode",
        inputs=(Input("stream", UINT8), Input("table", UINT8), Input("offsets", INT32)),
        attributes=(Attr("shape", "ints", required=True, lo=0),),
        function=function,
        reference=reference,
        validate=validate,
    )
)
