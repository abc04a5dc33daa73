"""UnpackCodes: packed uint8 codes -> int32 codes (a function-only helper of the weight ops' bodies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..body import FunctionBody
from ..spec import INT64, UINT8, Input, OpSpec, register_op

if TYPE_CHECKING:
    import onnx


def function(opset: int) -> onnx.FunctionProto:
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
    f = FunctionBody()
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


SPEC = register_op(
    OpSpec(
        "UnpackCodes",
        inputs=(Input("packed", UINT8), Input("bits", INT64), Input("count", INT64)),
        attributes=(),
        function=function,
        helper_only=True,
    )
)
