"""CodebookDecode: Y[r, d] = codebook[r // group_size, code(r, d)], every row of a constant table (runtime/OPS.md).

The decode of a weight that a standard op reads whole (an LSTM / GRU / RNN ``W`` or ``R``, a float16 layer's
weight, Cast to float16 after it): function body only, no native kernel, so that every runtime folds it into an
initializer when it loads the model (onnxruntime folds no custom-domain op: a native decode would run at every
inference, and the recurrent op could not prepack the weight)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..body import MAX_DIM, FunctionBody, flat_codebook, row_width, unpack
from ..spec import UINT8, Attr, Input, OpSpec, Shapes, Values, codebook_input, register_op
from .codebook_gather import validate as gather_validate

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # Y[r, d] = codebook[r // group_size, code(r, d)] for every row r of the packed codes [V, ceil(D * bits / 8)]
    f = FunctionBody()
    bits, d, gsz = f.attr("bits"), f.attr("D"), f.attr("group_size")
    codes, _ = unpack(f, "codes", bits, d)  # [V, D]
    rows = f.op("Shape", "codes", start=0, end=1)
    r = f.op("Range", f.const(0), f.op("Squeeze", rows, f.const([0])), f.const(1))  # [V]
    offset = f.op("Cast", f.op("Mul", f.op("Div", r, gsz), row_width(f, "codebook")), to=6)
    index = f.op("Add", codes, f.op("Unsqueeze", offset, f.const([1])))
    f.op("Gather", flat_codebook(f), index, out="Y")
    # group_size absent: MAX_DIM, every row in group 0 (one codebook)
    return f.function(
        "CodebookDecode", ["codebook", "codes"], ["Y"], ["bits", "D"], opset, defaults={"group_size": MAX_DIM}
    )


def reference(a: dict[str, Any], v: Values) -> np.ndarray:
    """The decoded table [V, D]."""
    from ..packing import decode_codebook, unpack_codes

    codes = unpack_codes(v[1], int(a["bits"]), int(a["D"]))
    return decode_codebook(v[0], codes, int(a.get("group_size", codes.shape[0])), axis=0)


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    gather_validate(a, [*v[:2], None], [*shapes[:2], None])  # the table checks of CodebookGather


SPEC = register_op(
    OpSpec(
        "CodebookDecode",
        inputs=(codebook_input(), Input("codes", UINT8)),
        attributes=(Attr("bits", required=True, lo=1, hi=8), Attr("D", required=True, lo=1), Attr("group_size", lo=1)),
        function=function,
        helpers=("UnpackCodes",),
        reference=reference,
        validate=validate,
        code_input=(1, lambda a: (int(a["bits"]), int(a["D"]))),
        flops=None,
    )
)
