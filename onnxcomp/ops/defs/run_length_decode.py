"""RunLengthDecode: packed codes from (zero run, code) byte symbols (function-only; runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import FunctionBody
from ..spec import UINT8, Attr, Input, OpSpec, Shapes, Values, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # symbols uint8 [M], s = run * 2**bits + code: run zero codes, then code; attributes bits, count = n codes
    # per row, shape = Y's shape [R, ceil(n * bits / 8)] -> Y, the R * n codes packed per row (Y is built on
    # ConstantOfShape(shape), so onnx shape inference knows its shape). Expansion: the code of symbol i
    # lands at CumSum(run + 1)_i - 1, one ScatterElements into zeros. Packing: code j of a row sits at bit
    # p = j * bits; c << (p % 8) < 2**15 adds its low byte to byte p // 8 and its high byte to byte p // 8 + 1
    # (clamped to the last byte, where the high byte is 0): two ScatterElements(reduction=add) (the codes'
    # bits do not overlap, so add = or). Stream-sized vectors are rows [1, X] (see _unpack).
    import numpy as np
    import onnx

    f = FunctionBody()
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


def reference(a: dict[str, Any], v: Values) -> np.ndarray:
    from ..packing import pack_codes, run_length_decode

    bits, n, rows = int(a["bits"]), int(a["count"]), int(a["shape"][0])
    codes = run_length_decode(v[0], bits, rows * n).reshape(rows, n)
    return pack_codes(codes, bits)


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    bits, n, shape = int(a["bits"]), int(a["count"]), [int(s) for s in a["shape"]]
    if len(shape) != 2 or shape[1] != checks.ceil_div(n * bits, 8):
        raise ValueError(
            f"attribute shape={checks.shape_str(shape)} must be [R, ceil(count * bits / 8)="
            f"{checks.ceil_div(n * bits, 8)}]"
        )
    if v[0] is not None:
        if v[0].ndim != 1:
            raise ValueError(f"symbols must be 1-D, got shape {checks.shape_str(v[0].shape)}")
        reference(a, v)  # the symbols must expand to exactly R * count codes


SPEC = register_op(
    OpSpec(
        "RunLengthDecode",
        inputs=(Input("symbols", UINT8),),
        attributes=(
            Attr("bits", required=True, lo=1, hi=7),
            Attr("count", required=True, lo=1),
            Attr("shape", "ints", required=True, lo=0),
        ),
        function=function,
        reference=reference,
        validate=validate,
    )
)
