"""CodebookConv: Y = Conv(X, W) + B, W[m].ravel()[j] = codebook[(m // group_size) * nblocks + j // block_size,
code(m, j)] (runtime/OPS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import NO_BLOCKS, FunctionBody, flat_codebook, row_width, unpack
from ..spec import FLOAT, UINT8, Attr, Input, OpSpec, Shapes, Values, codebook_input, prod, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx

CONV_ATTRS = ("dilations", "group", "kernel_shape", "pads", "strides")


def function(opset: int) -> onnx.FunctionProto:
    # W[m].ravel()[j] = codebook[m // group_size, code(m, j)];  Y = Conv(X, W, B)

    f = FunctionBody()
    bits, gsz, shape = f.attr("bits"), f.attr("group_size"), f.attr("weight_shape", "ints")
    per_row = f.op("Size", f.op("ConstantOfShape", f.op("Slice", shape, f.const([1]), f.const([1 << 30]))))
    codes, _ = unpack(f, "codes", bits, per_row)
    m = f.op("Gather", shape, f.const(0))
    rows = f.op("Range", f.const(0), m, f.const(1))
    offset = f.op("Cast", f.op("Mul", f.op("Div", rows, gsz), row_width(f, "codebook")), to=6)  # [M]
    index = f.op("Add", codes, f.op("Unsqueeze", offset, f.const([1])))
    w = f.op("Reshape", f.op("Gather", flat_codebook(f), index), shape)
    return _conv_of(f, w, opset)


def _conv_of(f: FunctionBody, w: str, opset: int, defaults: dict[str, int] | None = None) -> onnx.FunctionProto:
    """The body's last node, Y = Conv(X, W, B) with the op's Conv attributes referenced, and the function."""
    import onnx

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
        defaults=defaults,
    )


def block_function(opset: int) -> onnx.FunctionProto:
    # W[m].ravel()[j] = codebook[(m // group_size) * nblocks + j // block_size, code(m, j)],
    # nblocks = ceil(C/group * prod(kernel) / block_size) (block_size absent: NO_BLOCKS, one block)

    f = FunctionBody()
    bits, gsz, shape = f.attr("bits"), f.attr("group_size"), f.attr("weight_shape", "ints")
    bsz = f.attr("block_size")
    per_row = f.op("Size", f.op("ConstantOfShape", f.op("Slice", shape, f.const([1]), f.const([1 << 30]))))
    codes, j = unpack(f, "codes", bits, per_row)  # [M, per_row], [1, per_row]
    nblocks = f.op("Div", f.op("Sub", f.op("Add", per_row, bsz), f.const(1)), bsz)
    m = f.op("Gather", shape, f.const(0))
    rows = f.op("Range", f.const(0), m, f.const(1))
    book = f.op("Unsqueeze", f.op("Mul", f.op("Div", rows, gsz), nblocks), f.const([1]))  # [M, 1]
    offset = f.op("Cast", f.op("Mul", f.op("Add", book, f.op("Div", j, bsz)), row_width(f, "codebook")), to=6)
    w = f.op("Reshape", f.op("Gather", flat_codebook(f), f.op("Add", codes, offset)), shape)
    return _conv_of(f, w, opset, defaults={"block_size": NO_BLOCKS})


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, np.ndarray | None]:
    from ..packing import decode_codebook, unpack_codes

    shape = [int(s) for s in a["weight_shape"]]
    codes = unpack_codes(v[2], int(a["bits"]), prod(shape[1:]))
    gsz = int(a.get("group_size", shape[0]))
    w = decode_codebook(v[1], codes, gsz, axis=0, block_size=int(a.get("block_size", 0)))
    return w.reshape(shape), v[3] if len(v) > 3 else None


MAX_CONV_ATTR = 1 << 31  # the runtime's bound on weight_shape, strides, dilations and pads values


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    bits = int(a["bits"])
    ws = [int(d) for d in a["weight_shape"]]
    if not 3 <= len(ws) <= 5:
        raise ValueError(f"attribute weight_shape={checks.shape_str(ws)} must be (M, C/group, k1[, k2[, k3]])")
    if any(not 1 <= d <= MAX_CONV_ATTR for d in ws):
        raise ValueError(f"attribute weight_shape={checks.shape_str(ws)} must hold sizes in [1, 2^31]")
    m, cg, kernel = ws[0], ws[1], ws[2:]
    s = len(kernel)
    checks.check_dim(cg * prod(kernel), "C/group * prod(kernel) of weight_shape")
    group = int(a.get("group", 1))
    if m % group:
        raise ValueError(f"M={m} (weight_shape[0]) is not divisible by group={group}")
    gsz = int(a.get("group_size", m))
    if "kernel_shape" in a and [int(k) for k in a["kernel_shape"]] != kernel:
        raise ValueError(
            f"attribute kernel_shape={checks.shape_str(a['kernel_shape'])} does not match weight_shape="
            f"{checks.shape_str(ws)}"
        )
    strides = [int(x) for x in a.get("strides", [1] * s)]
    dilations = [int(x) for x in a.get("dilations", [1] * s)]
    pads = [int(x) for x in a.get("pads", [0] * 2 * s)]
    for name, values, count, lo in (
        ("strides", strides, s, 1),
        ("dilations", dilations, s, 1),
        ("pads", pads, 2 * s, 0),
    ):
        if len(values) != count:
            raise ValueError(f"attribute {name} needs {count} values, got {len(values)}")
        if any(not lo <= x <= MAX_CONV_ATTR for x in values):
            kind = "positive" if lo else "non-negative"
            raise ValueError(f"attribute {name}={checks.shape_str(values)} must be {kind} (and <= 2^31)")
    tile = int(a.get("winograd_tile", 0))
    if tile not in (0, 2, 4, 6):
        raise ValueError(f"attribute winograd_tile={tile} must be 0, 2, 4 or 6")
    if tile and (kernel != [3, 3] or strides != [1, 1] or dilations != [1, 1] or group != 1):
        raise ValueError("attribute winograd_tile needs a 3x3 kernel, strides 1, dilations 1 and group 1")
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("", "NOTSET"):
        raise ValueError(f"attribute auto_pad={auto_pad} is not supported (use explicit pads)")
    x = shapes[0] if shapes else None
    if x is not None:
        if len(x) != 2 + s:
            raise ValueError(
                f"X must have rank {2 + s} (N, C, {s} spatial dims) for weight_shape with {s} kernel dims, "
                f"got {checks.shape_str(x)}"
            )
        if x[1] is not None and x[1] != cg * group:
            raise ValueError(f"X has {x[1]} channels, but weight_shape[1]*group = {cg}*{group} = {cg * group}")
        for i in range(s):
            span = dilations[i] * (kernel[i] - 1) + 1
            if x[2 + i] is not None and x[2 + i] + pads[i] + pads[s + i] < span:
                raise ValueError(
                    f"spatial dim {i}: input {x[2 + i]} + pads {pads[i]}+{pads[s + i]} is smaller than the "
                    f"dilated kernel {span}"
                )
    per_row = cg * prod(kernel)
    checks.check_codebook(v[1], m, gsz, bits, what="M", blocks=checks.block_rows(a, per_row) or 0)
    checks.check_rows(v[2], shapes[2], m, checks.ceil_div(per_row * bits, 8), f"M={m}")
    checks.check_bias(v[3] if len(v) > 3 else None, m, what="M", matrix=False)
    if v[1] is not None:
        checks.check_code_range(v[2], bits, per_row, int(v[1].shape[1]))


def flops(a: dict[str, Any], ins: Shapes, outs: Shapes) -> int:
    """2 C/group prod(kernel) per output element."""
    w = [int(d) for d in a.get("weight_shape", [])]
    y = outs[0]
    return 2 * prod(y) * prod(w[1:]) if y is not None and w else 0


SPEC = register_op(
    OpSpec(
        "CodebookConv",
        inputs=(
            Input("X", FLOAT, activation=True),
            codebook_input(),
            Input("codes", UINT8),
            Input("B", FLOAT, optional=True),
        ),
        attributes=(
            Attr("bits", required=True, lo=1, hi=8),
            Attr("group_size", lo=1),
            Attr("weight_shape", "ints", required=True, lo=1, hi=MAX_CONV_ATTR),
            Attr("dilations", "ints", lo=1, hi=MAX_CONV_ATTR),
            Attr("group", lo=1),
            Attr("kernel_shape", "ints", lo=1, hi=MAX_CONV_ATTR),
            Attr("pads", "ints", hi=MAX_CONV_ATTR),
            Attr("strides", "ints", lo=1, hi=MAX_CONV_ATTR),
            Attr("winograd_tile", lo=0, hi=6),
            Attr("block_size", lo=1),
        ),
        function=function,
        block_function=block_function,
        helpers=("UnpackCodes",),
        reference=reference,
        computes="Conv",
        standard_attrs=CONV_ATTRS,
        validate=validate,
        code_input=(2, lambda a: (int(a["bits"]), prod(a["weight_shape"][1:]))),
        flops=flops,
        native=True,
    )
)
