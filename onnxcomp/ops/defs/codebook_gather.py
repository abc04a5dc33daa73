"""CodebookGather: Y = Gather(table, indices, axis=0), table[r, d] = codebook[r // group_size, code(r, d)]
(runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import MAX_DIM, FunctionBody, flat_codebook, row_width, unpack
from ..spec import INT64, UINT8, Attr, Input, OpSpec, Shapes, Values, codebook_input, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # Y[..., d] = codebook[r // group_size, code(r, d)] with r = indices[...] (negative: + V). Only the
    # gathered rows are unpacked and decoded: the indices are data, so this runs at every inference (not
    # folded at load) on the rows it needs, and the table stays packed in memory.
    f = FunctionBody()
    bits, d, gsz = f.attr("bits"), f.attr("D"), f.attr("group_size")
    flat = f.op("Reshape", "indices", f.const([-1]))
    v = f.op("Cast", f.op("Shape", "codes", start=0, end=1), to=7)
    idx = f.op("Cast", flat, to=7)
    idx = f.op("Where", f.op("Less", idx, f.const(0)), f.op("Add", idx, v), idx)
    codes, _ = unpack(f, f.op("Gather", "codes", idx, axis=0), bits, d)  # [I, D] of the gathered rows
    offset = f.op("Cast", f.op("Mul", f.op("Div", idx, gsz), row_width(f, "codebook")), to=6)  # [I]
    index = f.op("Add", codes, f.op("Unsqueeze", offset, f.const([1])))
    vals = f.op("Gather", flat_codebook(f), index)
    shape = f.op("Concat", f.op("Shape", "indices"), f.op("Reshape", d, f.const([1])), axis=0)
    f.op("Reshape", vals, shape, out="Y")
    # group_size absent: MAX_DIM, every row in group 0 (one codebook, as the kernels read it)
    inputs = ["codebook", "codes", "indices"]
    return f.function("CodebookGather", inputs, ["Y"], ["bits", "D"], opset, defaults={"group_size": MAX_DIM})


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, None]:
    """The decoded table [V, D] (the decoded model gathers from it)."""
    from ..packing import decode_codebook, unpack_codes

    codes = unpack_codes(v[1], int(a["bits"]), int(a["D"]))
    return decode_codebook(v[0], codes, int(a.get("group_size", codes.shape[0])), axis=0), None


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    bits, d = int(a["bits"]), int(a["D"])
    row_bytes = checks.ceil_div(d * bits, 8)
    codes_shape = v[1].shape if v[1] is not None else shapes[1]
    checks.check_rows(v[1], shapes[1], None, row_bytes, "V")
    if codes_shape is None:
        return
    rows = int(codes_shape[0])
    gsz = int(a.get("group_size", rows))
    checks.check_codebook(v[0], rows, gsz, bits, what="V")
    if v[0] is not None:
        checks.check_code_range(v[1], bits, d, int(v[0].shape[1]))


SPEC = register_op(
    OpSpec(
        "CodebookGather",
        inputs=(codebook_input(), Input("codes", UINT8), Input("indices", INT64, activation=True)),
        attributes=(Attr("bits", required=True, lo=1, hi=8), Attr("D", required=True, lo=1), Attr("group_size", lo=1)),
        function=function,
        helpers=("UnpackCodes",),
        reference=reference,
        computes="Gather",
        validate=validate,
        code_input=(1, lambda a: (int(a["bits"]), int(a["D"]))),
        flops=None,
        native=True,
    )
)
