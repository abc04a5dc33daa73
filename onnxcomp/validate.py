"""Structural checks that onnx.checker and onnx shape inference do not make, run on every model loaded.

A Conv with group=3 over 4 input channels passes both and loads in onnxruntime (it fails only when run), so a
lossless pipeline would write it back with exit 0. An invalid model is an input error (exit 2) naming the node,
never passed through. Per-op rules live in :data:`RULES` (keyed by op type); each reads the static shapes that
are known (initializers, graph inputs, inferred value_info) and says nothing about unknown dims.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onnxcomp.errors import InputError
from onnxcomp.graph import AI_ONNX

if TYPE_CHECKING:
    import onnx

Dims = tuple[int | None, ...] | None
Rule = Callable[[Any, Callable[[str], Dims]], str | None]
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return deco


def validate(model: onnx.ModelProto) -> None:
    """InputError for the first main-graph node a rule finds invalid."""
    known: dict[str, Dims] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and vi.name not in known:
            known[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim
            )
    for t in model.graph.initializer:
        known[t.name] = tuple(int(d) for d in t.dims)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value" and a.type == 4), None)
            if value is not None:
                known[node.output[0]] = tuple(int(d) for d in value.dims)

    def shape(name: str) -> Dims:
        return known.get(name) if name else None

    for node in model.graph.node:
        check = RULES.get(node.op_type) if node.domain in AI_ONNX else None
        reason = check(node, shape) if check else None
        if reason:
            raise InputError(f"invalid model: node {node.name or node.output[0]!r} ({node.op_type}): {reason}")


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _input(node: Any, i: int, shape: Callable[[str], Dims]) -> Dims:
    return shape(node.input[i]) if len(node.input) > i else None


def _spatial_attrs(node: Any, nd: int) -> str | None:
    """strides/dilations >= 1 with one value per spatial dim, pads >= 0 with two."""
    for name, count, low in (("strides", nd, 1), ("dilations", nd, 1), ("pads", 2 * nd, 0)):
        values = _attr(node, name, None)
        if values is None:
            continue
        if len(values) != count:
            return f"{name} has {len(values)} values, the {nd}-D kernel needs {count}"
        if any(int(v) < low for v in values):
            return f"{name} {list(values)} must be >= {low}"
    kernel = _attr(node, "kernel_shape", None)
    if kernel is not None and (len(kernel) != nd or any(int(k) < 1 for k in kernel)):
        return f"kernel_shape {list(kernel)} does not fit a {nd}-D kernel"
    return None


@rule("Conv")
def _conv(node: Any, shape: Callable[[str], Dims]) -> str | None:
    # X [N, C, ...], W [M, C/group, k...], B [M]: C = W[1] * group, M divisible by group
    x, w, b = _input(node, 0, shape), _input(node, 1, shape), _input(node, 2, shape)
    group = int(_attr(node, "group", 1))
    if group < 1:
        return f"group={group} must be >= 1"
    if w is None:
        return None
    if len(w) < 3:
        return f"weight has rank {len(w)}, a Conv weight is [M, C/group, k...]"
    if x is not None and len(x) != len(w):
        return f"input rank {len(x)} does not match the weight's rank {len(w)}"
    if w[0] is not None and w[0] % group:
        return f"{w[0]} output channels are not divisible by group={group}"
    if x is not None and x[1] is not None and w[1] is not None and x[1] != w[1] * group:
        return f"the input has {x[1]} channels but the weight reads {w[1]} x group={group} = {w[1] * group}"
    if b is not None and w[0] is not None and (len(b) != 1 or b[0] not in (None, w[0])):
        return f"bias shape {list(b)} does not match {w[0]} output channels"
    kernel = _attr(node, "kernel_shape", None)
    if kernel is not None and all(k is not None for k in w[2:]) and tuple(int(k) for k in kernel) != tuple(w[2:]):
        return f"kernel_shape {list(kernel)} differs from the weight's {list(w[2:])}"
    return _spatial_attrs(node, len(w) - 2)


@rule("ConvTranspose")
def _conv_transpose(node: Any, shape: Callable[[str], Dims]) -> str | None:
    # X [N, C, ...], W [C, M/group, k...], B [M]: C divisible by group
    x, w, b = _input(node, 0, shape), _input(node, 1, shape), _input(node, 2, shape)
    group = int(_attr(node, "group", 1))
    if group < 1:
        return f"group={group} must be >= 1"
    if w is None:
        return None
    if len(w) < 3:
        return f"weight has rank {len(w)}, a ConvTranspose weight is [C, M/group, k...]"
    if w[0] is not None and w[0] % group:
        return f"{w[0]} input channels are not divisible by group={group}"
    if x is not None and x[1] is not None and w[0] is not None and x[1] != w[0]:
        return f"the input has {x[1]} channels but the weight reads {w[0]}"
    if b is not None and w[1] is not None and (len(b) != 1 or b[0] not in (None, w[1] * group)):
        return f"bias shape {list(b)} does not match {w[1] * group} output channels"
    return _spatial_attrs(node, len(w) - 2)


@rule("BatchNormalization")
def _batchnorm(node: Any, shape: Callable[[str], Dims]) -> str | None:
    x = _input(node, 0, shape)
    channels = x[1] if x is not None and len(x) > 1 else None
    sizes = []
    for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")):
        p = _input(node, i, shape)
        if p is None:
            continue
        if len(p) != 1 and int(_attr(node, "spatial", 1)) == 1:
            return f"{what} has shape {list(p)}, expected one value per channel"
        if len(p) == 1:
            sizes.append((what, p[0]))
    for what, n in sizes:
        if n is not None and channels is not None and n != channels:
            return f"{what} has {n} values for {channels} channels"
    return None


@rule("Gemm")
def _gemm(node: Any, shape: Callable[[str], Dims]) -> str | None:
    a, b = _input(node, 0, shape), _input(node, 1, shape)
    if a is None or b is None:
        return None
    if len(a) != 2 or len(b) != 2:
        return f"inputs must be 2-D, got ranks {len(a)} and {len(b)}"
    k_a = a[0] if int(_attr(node, "transA", 0)) else a[1]
    k_b = b[1] if int(_attr(node, "transB", 0)) else b[0]
    if k_a is not None and k_b is not None and k_a != k_b:
        return f"inner dimensions differ: A gives {k_a}, B takes {k_b}"
    return None


@rule("MatMul")
def _matmul(node: Any, shape: Callable[[str], Dims]) -> str | None:
    a, b = _input(node, 0, shape), _input(node, 1, shape)
    if a is None or b is None or not a or not b:
        return None
    k_a = a[-1]
    k_b = b[0] if len(b) == 1 else b[-2]
    if k_a is not None and k_b is not None and k_a != k_b:
        return f"inner dimensions differ: {list(a)} @ {list(b)}"
    return None
