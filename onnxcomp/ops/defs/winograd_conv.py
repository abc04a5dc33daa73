"""WinogradConv: Y = act(Conv(X, W) + B) for 3x3 stride-1 one-group convolutions, computed by a runtime with
Winograd F(tile x tile, 3 x 3) (runtime/OPS.md). W stays float32: the op changes how, not what."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import checks
from ..body import FunctionBody
from ..spec import FLOAT, Attr, Input, OpSpec, Shapes, Values, register_op

if TYPE_CHECKING:
    import numpy as np
    import onnx

CONV_ATTRS = ("dilations", "group", "kernel_shape", "pads", "strides")
TILES = (2, 4, 6)
# the fused activation: attribute -> default (none)
ACTIVATION_DEFAULTS = (("leaky_alpha", 1.0), ("clip_min", -math.inf), ("clip_max", math.inf))
MAX_PAD = 1 << 31  # the runtime's bound on pads


def function(opset: int) -> onnx.FunctionProto:
    # Y = Clip(LeakyRelu(Conv(X, W, B), leaky_alpha), clip_min, clip_max); `tile` tells a runtime how to compute
    # the convolution (Winograd F(tile x tile, 3 x 3)), not what
    import onnx

    f = FunctionBody()
    conv = f.op("Conv", "X", "W", "B")
    a = onnx.AttributeProto
    f.ref_attrs(
        len(f.nodes) - 1,
        {"dilations": a.INTS, "group": a.INT, "kernel_shape": a.INTS, "pads": a.INTS, "strides": a.INTS},
    )
    leaky = f.op("LeakyRelu", conv)
    f.nodes[-1].attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="leaky_alpha", type=a.FLOAT))
    f.op("Clip", leaky, f.attr("clip_min", "float"), f.attr("clip_max", "float"), out="Y")
    fn = f.function("WinogradConv", ["X", "W", "B"], ["Y"], [*CONV_ATTRS, "tile"], opset)
    # the activation attributes have defaults (LeakyRelu(1) and Clip(-inf, inf) are the identity): a node without
    # a fused activation omits them
    for name, default in ACTIVATION_DEFAULTS:
        fn.attribute_proto.append(onnx.helper.make_attribute(name, default))
    return fn


def activation(a: dict[str, Any]) -> tuple[float, float, float] | None:
    """(leaky_alpha, clip_min, clip_max) of the fused activation, None when there is none."""
    leaky, lo, hi = (float(a.get(k, d)) for k, d in ACTIVATION_DEFAULTS)
    return None if (leaky, lo, hi) == (1.0, -math.inf, math.inf) else (leaky, lo, hi)


def reference(a: dict[str, Any], v: Values) -> tuple[np.ndarray, np.ndarray | None]:
    return v[1], v[2] if len(v) > 2 else None


def validate(a: dict[str, Any], v: Values, shapes: Shapes) -> None:
    tile = int(a.get("tile", 4))
    if tile not in TILES:
        raise ValueError(f"attribute tile={tile} must be 2, 4 or 6")
    for name, want in (("kernel_shape", [3, 3]), ("strides", [1, 1]), ("dilations", [1, 1])):
        if name in a and [int(x) for x in a[name]] != want:
            raise ValueError(
                f"attribute {name}={checks.shape_str(a[name])} is not supported (WinogradConv needs "
                f"{checks.shape_str(want)})"
            )
    if int(a.get("group", 1)) != 1:
        raise ValueError("attribute group must be 1")
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("", "NOTSET"):
        raise ValueError(f"attribute auto_pad={auto_pad} is not supported (use explicit pads)")
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    if len(pads) != 4 or any(not 0 <= p <= MAX_PAD for p in pads):
        raise ValueError(f"attribute pads={checks.shape_str(pads)} must be 4 values (top, left, bottom, right) >= 0")
    leaky, lo, hi = (float(a.get(k, d)) for k, d in ACTIVATION_DEFAULTS)
    if math.isnan(leaky) or math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError("attributes leaky_alpha, clip_min, clip_max must be numbers with clip_min <= clip_max")
    w = shapes[1] if len(shapes) > 1 else None
    if w is not None and (len(w) != 4 or w[2:] != (3, 3) or min(w) < 1):
        raise ValueError(f"W must have shape [M, C, 3, 3], got {checks.shape_str(w)}")
    x = shapes[0] if shapes else None
    if x is not None:
        if len(x) != 4:
            raise ValueError(f"X must have rank 4 (N, C, H, W), got {checks.shape_str(d or 0 for d in x)}")
        if w is not None and x[1] is not None and x[1] != w[1]:
            raise ValueError(f"X has {x[1]} channels, W has {w[1]}")
        for i in range(2):
            if x[2 + i] is not None and x[2 + i] + pads[i] + pads[2 + i] < 3:
                raise ValueError(f"input {x[2]}x{x[3]} with pads {checks.shape_str(pads)} is smaller than the kernel")
    if w is not None:
        checks.check_bias(v[2] if len(v) > 2 else None, w[0], what="M", matrix=False)


def flops(a: dict[str, Any], ins: Shapes, outs: Shapes) -> int:
    """The Winograd algorithm's arithmetic: alpha^2 / (9 m^2) of the direct multiply-adds, plus the tile padding
    and the transforms (onnxcomp.estimator.winograd_terms)."""
    from onnxcomp.estimator import ConvShape, winograd_terms

    x, w, y = ins[0], ins[1] if len(ins) > 1 else None, outs[0]
    if x is None or w is None or y is None or len(x) != 4 or len(y) != 4:
        return 0
    s = ConvShape(x[0], x[1], x[2], x[3], y[1], 3, 3, y[2], y[3])
    gemm, transform, _ = winograd_terms(s, int(a.get("tile", 4)))
    return gemm + transform


SPEC = register_op(
    OpSpec(
        "WinogradConv",
        inputs=(Input("X", FLOAT, activation=True), Input("W", FLOAT), Input("B", FLOAT, optional=True)),
        attributes=(
            Attr("tile", lo=2, hi=6),
            Attr("dilations", "ints", lo=1, hi=MAX_PAD),
            Attr("group", lo=1),
            Attr("kernel_shape", "ints", lo=1, hi=MAX_PAD),
            Attr("pads", "ints", hi=MAX_PAD),
            Attr("strides", "ints", lo=1, hi=MAX_PAD),
            Attr("leaky_alpha", "float"),
            Attr("clip_min", "float"),
            Attr("clip_max", "float"),
        ),
        function=function,
        reference=reference,
        computes="Conv",
        standard_attrs=CONV_ATTRS,
        validate=validate,
        flops=flops,
        native=True,
        compressed=False,
        activation=activation,
    )
)
