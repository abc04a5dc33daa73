"""CodebookMatMul: Y = X @ W + B, W[k, n] = codebook[(n // group_size) * nblocks + k // block_size, code(k, n)]
(runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import NO_BLOCKS, FunctionBody, flat_codebook, matmul_bias, row_width, unpack
from ..spec import FLOAT, UINT8, Attr, Input, OpSpec, Shapes, Values, codebook_input, prod, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # W[k, n] = codebook[n // group_size, code(k, n)];  Y = X @ W + B
    f = FunctionBody()
    bits, n, gsz = f.attr("bits"), f.attr("N"), f.attr("group_size")
    codes, j = unpack(f, "codes", bits, n)
    offset = f.op("Cast", f.op("Mul", f.op("Div", j, gsz), row_width(f, "codebook")), to=6)  # [1, N]
    w = f.op("Gather", flat_codebook(f), f.op("Add", codes, offset))
    matmul_bias(f, "X", w, "B", "Y")
    return f.function("CodebookMatMul", ["X", "codebook", "codes", "B"], ["Y"], ["bits", "N", "group_size"], opset)


def block_function(opset: int) -> onnx.FunctionProto:
    # W[k, n] = codebook[(n // group_size) * nblocks + k // block_size, code(k, n)],
    # nblocks = ceil(K / block_size) (block_size absent: NO_BLOCKS, one block);  Y = X @ W + B
    f = FunctionBody()
    bits, n, gsz, bsz = f.attr("bits"), f.attr("N"), f.attr("group_size"), f.attr("block_size")
    codes, j = unpack(f, "codes", bits, n)
    k = f.op("Gather", f.op("Shape", "codes"), f.const(0))  # K (scalar)
    nblocks = f.op("Div", f.op("Sub", f.op("Add", k, bsz), f.const(1)), bsz)
    kb = f.op("Div", f.op("Range", f.const(0), k, f.const(1)), bsz)  # [K]: k // block_size
    row = f.op("Add", f.op("Mul", f.op("Div", j, gsz), nblocks), f.op("Unsqueeze", kb, f.const([1])))  # [K, N]
    offset = f.op("Cast", f.op("Mul", row, row_width(f, "codebook")), to=6)
    w = f.op("Gather", flat_codebook(f), f.op("Add", codes, offset))
    matmul_bias(f, "X", w, "B", "Y")
    return f.function(
        "CodebookMatMul",
        ["X", "codebook", "codes", "B"],
        ["Y"],
        ["bits", "N", "group_size"],
        opset,
        defaults={"block_size": NO_BLOCKS},
    )


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, np.ndarray | None]:
    from ..packing import decode_codebook, unpack_codes

    n = int(a["N"])
    codes = unpack_codes(v[2], int(a["bits"]), n)
    w = decode_codebook(v[1], codes, int(a.get("group_size", n)), axis=1, block_size=int(a.get("block_size", 0)))
    return w, v[3]


def x_features(shapes: Shapes) -> int | None:
    """K, the last dim of X, when the model records X's shape."""
    x = shapes[0] if shapes else None
    return int(x[-1]) if x and x[-1] is not None else None


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    bits, n = int(a["bits"]), int(a["N"])
    gsz = int(a.get("group_size", n))
    k = x_features(shapes)
    if k is None and v[2] is not None:
        k = int(v[2].shape[0]) if v[2].ndim == 2 else None
    # K unknown (codes not constant, X's shape not recorded): any multiple of G codebook rows
    checks.check_codebook(v[1], n, gsz, bits, blocks=checks.block_rows(a, k) or 0)
    row_bytes = checks.ceil_div(n * bits, 8)
    checks.check_rows(v[2], shapes[2], k, row_bytes, f"K={k if k is not None else '?'}")
    checks.check_bias(v[3], n)
    if v[1] is not None:
        checks.check_code_range(v[2], bits, n, int(v[1].shape[1]))


def matmul_flops(a: dict[str, Any], ins: Shapes, outs: Shapes) -> int:
    """2 K per output element (the matmul ops: Y = X @ W + B)."""
    x, y = ins[0], outs[0]
    if x is None or y is None:
        return 0
    return 2 * prod(y) * int(x[-1])


SPEC = register_op(
    OpSpec(
        "CodebookMatMul",
        inputs=(
            Input("X", FLOAT, activation=True),
            codebook_input(),
            Input("codes", UINT8),
            Input("B", FLOAT, optional=True),
        ),
        attributes=(
            Attr("bits", required=True, lo=1, hi=8),
            Attr("N", required=True, lo=1),
            Attr("group_size", lo=1),
            Attr("block_size", lo=1),
        ),
        function=function,
        block_function=block_function,
        helpers=("UnpackCodes",),
        reference=reference,
        computes="MatMul",
        validate=validate,
        code_input=(2, lambda a: (int(a["bits"]), int(a["N"]))),
        flops=matmul_flops,
        native=True,
    )
)
