"""SparseCodebookMatMul: Y = X @ W + B with W mostly zero, stored in EIE rows (runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import FunctionBody, flat_codebook, matmul_bias, row_width, unpack
from ..spec import FLOAT, INT32, UINT8, Attr, Input, OpSpec, Shapes, Values, codebook_input, register_op
from .codebook_matmul import matmul_flops, x_features

if TYPE_CHECKING:
    import numpy as np
    import onnx


def function(opset: int) -> onnx.FunctionProto:
    # Row k: p = -1; for e in row_ptr[k]..row_ptr[k+1]: p += delta[e] + 1; W[k, p] = cb[p // gs, code[e]].
    # Vectorized: rowid[e] = #{k >= 1 : row_ptr[k] <= e} (scatter-add of ones at row_ptr[1:K], then CumSum);
    # S = CumSum(delta + 1); p[e] = S[e] - S_excl[row_ptr[rowid[e]]] - 1.
    import numpy as np
    import onnx

    f = FunctionBody()
    bits, ibits, n, gsz = f.attr("bits"), f.attr("index_bits"), f.attr("N"), f.attr("group_size")
    ptr = f.op("Cast", "row_ptr", to=7)
    e = f.op("Gather", ptr, f.const(-1))
    flat = f.const([1, -1])
    # every per-entry vector is a row [1, E] (see _unpack)
    # entry-sized vectors in int64 (positions are cumulative over the whole weight)
    deltas = f.op("Cast", unpack(f, f.op("Reshape", "deltas", flat), ibits, e)[0], to=7)
    codes = f.op("Cast", unpack(f, f.op("Reshape", "codes", flat), bits, e)[0], to=7)
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
    index = f.op("Add", codes, f.op("Mul", f.op("Div", pos, gsz), row_width(f, "codebook")))
    values = f.op("Gather", flat_codebook(f), index)
    n1 = f.op("Unsqueeze", n, f.const([0]))
    dense = f.op(
        "ConstantOfShape",
        f.op("Concat", f.const([1]), f.op("Mul", k, n1), axis=0),
        value=onnx.numpy_helper.from_array(np.zeros(1, np.float32)),
    )
    target = f.op("Add", f.op("Mul", rowid, n), pos)
    w_flat = f.op("ScatterElements", dense, target, values, axis=1)
    w = f.op("Reshape", w_flat, f.op("Concat", k, n1, axis=0))
    matmul_bias(f, "X", w, "B", "Y")
    return f.function(
        "SparseCodebookMatMul",
        ["X", "codebook", "row_ptr", "deltas", "codes", "B"],
        ["Y"],
        ["bits", "index_bits", "N", "group_size"],
        opset,
    )


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    from ..packing import decode_codebook, eie_decode, unpack_codes

    n, bits, ibits = int(a["N"]), int(a["bits"]), int(a["index_bits"])
    row_ptr = np.asarray(v[2])
    e = int(row_ptr[-1])
    deltas = unpack_codes(v[3].reshape(1, -1), ibits, e)[0]
    codes = unpack_codes(v[4].reshape(1, -1), bits, e)[0]
    dense = eie_decode(row_ptr, deltas, codes, n)
    return decode_codebook(v[1], dense, int(a.get("group_size", n)), axis=1), v[5]


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    import numpy as np

    bits, ibits, n = int(a["bits"]), int(a["index_bits"]), int(a["N"])
    if ibits not in (4, 8):
        raise ValueError(f"attribute index_bits={ibits} must be 4 or 8")
    gsz = int(a.get("group_size", n))
    checks.check_codebook(v[1], n, gsz, bits)
    checks.check_bias(v[5], n)
    row_ptr, deltas, codes = v[2], v[3], v[4]
    if row_ptr is None:
        return
    k = x_features(shapes)
    if row_ptr.ndim != 1 or row_ptr.shape[0] < 1 or (k is not None and row_ptr.shape[0] != k + 1):
        raise ValueError(
            f"row_ptr must have shape [K+1={k + 1 if k is not None else '?'}], got {checks.shape_str(row_ptr.shape)}"
        )
    ptr = row_ptr.astype(np.int64)
    if ptr[0] != 0:
        raise ValueError(f"row_ptr[0] must be 0, got {int(ptr[0])}")
    step = np.diff(ptr)
    if step.size and step.min() < 0:
        i = int(np.argmax(step < 0))
        raise ValueError(
            f"row_ptr must be non-decreasing: row_ptr[{i + 1}]={int(ptr[i + 1])} < row_ptr[{i}]={int(ptr[i])}"
        )
    e = int(ptr[-1])
    for name, data, width in (("deltas", deltas, ibits), ("codes", codes, bits)):
        need = checks.ceil_div(e * width, 8)
        if data is not None and data.size < need:
            raise ValueError(
                f"{name} holds {data.size} bytes, but row_ptr[K]={e} entries at "
                f"{'index_bits' if name == 'deltas' else 'bits'}={width} need {need}"
            )
    if deltas is not None:
        check_positions(ptr, deltas, ibits, n)
    if codes is not None and v[1] is not None and e:
        checks.check_code_range(codes.reshape(1, -1), bits, e, int(v[1].shape[1]))


def check_positions(ptr: np.ndarray, deltas: np.ndarray, index_bits: int, n: int) -> None:
    """Every entry's column p < N: p = (entries' delta + 1 summed over its row so far) - 1."""
    import numpy as np

    from ..packing import unpack_codes

    e = int(ptr[-1])
    if not e:
        return
    steps = unpack_codes(deltas.reshape(1, -1), index_bits, e)[0] + 1
    incl = np.cumsum(steps)
    # position of entry i in its row: S_i - S_(row start) - 1, with S the running sum over all entries
    counts = np.diff(ptr)
    starts = np.repeat(np.concatenate([[0], incl])[ptr[:-1]], counts)
    pos = incl - starts - 1
    bad = np.flatnonzero(pos >= n)
    if bad.size:
        i = int(bad[0])
        row = int(np.searchsorted(ptr, i, side="right") - 1)
        raise ValueError(f"row {row}: entry {i} decodes to column {int(pos[i])} >= N={n}")


SPEC = register_op(
    OpSpec(
        "SparseCodebookMatMul",
        inputs=(
            Input("X", FLOAT, activation=True),
            codebook_input(),
            Input("row_ptr", INT32),
            Input("deltas", UINT8),
            Input("codes", UINT8),
            Input("B", FLOAT, optional=True),
        ),
        attributes=(
            Attr("bits", required=True, lo=1, hi=8),
            Attr("index_bits", required=True, lo=4, hi=8),
            Attr("N", required=True, lo=1),
            Attr("group_size", lo=1),
        ),
        function=function,
        helpers=("UnpackCodes",),
        reference=reference,
        computes="MatMul",
        validate=validate,
        flops=matmul_flops,
        native=True,
    )
)
