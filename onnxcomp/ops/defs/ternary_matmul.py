"""TernaryMatMul: Y = X @ W + B, W[k, n] = [0, a_p, -a_n][code(k, n)] per column group (runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import FunctionBody, matmul_bias, unpack
from ..spec import FLOAT, UINT8, Attr, Input, OpSpec, Shapes, Values, register_op
from .codebook_matmul import matmul_flops, x_features

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # lut[g] = [0, a_p, -a_n, 0];  W[k, n] = lut[n // group_size, code(k, n)];  Y = X @ W + B
    import onnx

    f = FunctionBody()
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
    codes, j = unpack(f, "codes", bits, n)
    offset = f.op("Cast", f.op("Mul", f.op("Div", j, gsz), f.const(4)), to=6)  # [1, N]
    w = f.op("Gather", f.op("Reshape", lut, f.const([-1])), f.op("Add", codes, offset))
    matmul_bias(f, "X", w, "B", "Y")
    return f.function("TernaryMatMul", ["X", "scales", "codes", "B"], ["Y"], ["N", "group_size"], opset)


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, np.ndarray | None]:
    from ..packing import decode_codebook, ternary_lut, unpack_codes

    n = int(a["N"])
    codes = unpack_codes(v[2], 2, n)
    return decode_codebook(ternary_lut(v[1]), codes, int(a.get("group_size", n)), axis=1), v[3]


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    n = int(a["N"])
    gsz = int(a.get("group_size", n))
    g = checks.group_count(n, gsz)
    scales = v[1]
    if scales is not None and (scales.ndim != 2 or scales.shape != (g, 2)):
        raise ValueError(
            f"scales must have shape [G={g}, 2] (N={n}, group_size={gsz}), got {checks.shape_str(scales.shape)}"
        )
    k = x_features(shapes)
    row_bytes = checks.ceil_div(n * 2, 8)
    checks.check_rows(v[2], shapes[2], k, row_bytes, f"K={k if k is not None else '?'}")
    checks.check_bias(v[3], n)
    if v[2] is not None:
        bad = find_code3(v[2], n)
        if bad is not None:
            raise ValueError(
                f"invalid ternary code 3 at codes row {bad[0]}, column {bad[1]} (valid codes: 0 -> 0, 1 -> +a_p, "
                "2 -> -a_n)"
            )


def find_code3(packed: np.ndarray, n: int) -> tuple[int, int] | None:
    """The first (row, column) holding the invalid code 3, or None (padding bits of the last byte ignored)."""
    import numpy as np

    from ..packing import unpack_codes

    rows = packed.reshape(packed.shape[0], -1)
    # a byte holds code 3 at position t iff both bits of the pair are set: b & (b >> 1) & 0b01010101
    pairs = rows & (rows >> 1) & np.uint8(0x55)
    rem = n % 4
    if rem and pairs.shape[1]:
        pairs[:, -1] &= np.uint8((1 << (2 * rem)) - 1)
    hit = np.flatnonzero(pairs.any(axis=1))
    if not hit.size:
        return None
    r = int(hit[0])
    return r, int(np.flatnonzero(unpack_codes(rows[r : r + 1], 2, n)[0] == 3)[0])


SPEC = register_op(
    OpSpec(
        "TernaryMatMul",
        inputs=(
            Input("X", FLOAT, activation=True),
            Input("scales", FLOAT),
            Input("codes", UINT8),
            Input("B", FLOAT, optional=True),
        ),
        attributes=(Attr("N", required=True, lo=1), Attr("group_size", lo=1)),
        function=function,
        helpers=("UnpackCodes",),
        reference=reference,
        computes="MatMul",
        validate=validate,
        code_input=(2, lambda a: (2, int(a["N"]))),
        flops=matmul_flops,
        native=True,
    )
)
