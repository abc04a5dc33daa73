"""No-op nodes of the ``eliminate`` pass: one handler per op type, and the sweep that bypasses them.

A handler gets (graph, node, opset) and returns None when the node is not a no-op, or an :class:`Action`:
bypass the node onto a tensor equal to its output, it rewrote the node in place (a merged Reshape or
Transpose pair), or a reason to keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from onnxcomp.graph import bypass, const_value, is_empty, is_graph_output, is_standard, producer, shape_of

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassResult

# Exporters write "to the end" as INT_MAX / INT64_MAX; no real dimension reaches this.
_TO_END = 2**31 - 1


class Action(NamedTuple):
    """What a no-op handler found: bypass the node onto ``value``, it rewrote the node, or a skip reason."""

    kind: str  # "bypass" | "rewrote" | "skip"
    value: Any = None


def _bypass(tensor: Any) -> Action:
    return Action("bypass", tensor)


def _skip(reason: str) -> Action:
    return Action("skip", reason)


REWROTE = Action("rewrote")


def _used(graph: gs.Graph, tensor: Any) -> bool:
    return not is_empty(tensor) and (bool(tensor.outputs) or is_graph_output(graph, tensor))


def _ints(values: Any) -> list[int] | None:
    if values is None:
        return None
    import numpy as np

    return [int(v) for v in np.asarray(values).reshape(-1)]


def _attr_or_input(node: gs.Node, attr: str, index: int, opset: int, since: int) -> tuple[bool, list[int] | None]:
    """An int list given as attribute (opset < ``since``) or constant input ``index`` (opset >= ``since``).

    Returns (known, values): known False when the input is dynamic; values None when it is absent.
    """
    if opset < since or attr in node.attrs:
        return True, (_ints(node.attrs[attr]) if attr in node.attrs else None)
    if len(node.inputs) <= index or is_empty(node.inputs[index]):
        return True, None
    value = const_value(node.inputs[index])
    return (False, None) if value is None else (True, _ints(value))


def _producer_in(node_or_tensor: Any, op: str) -> gs.Node | None:
    prod = producer(node_or_tensor)
    if prod is not None and prod.op == op and is_standard(prod) and prod.outputs:
        return prod
    return None


def _norm_axes(axes: list[int], rank: int | None) -> list[int] | None:
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    return sorted(axes)


# Each handler gets (graph, node, opset) and returns None when the node is not a no-op, an Action otherwise.
def _identity(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    return _bypass(node.inputs[0])


def _dropout(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    # Inference: output = data. Before opset 12 ratio/is_test are attributes that do not matter in inference;
    # since 12, training_mode (input 2) must be absent or a constant false.
    if len(node.outputs) > 1 and _used(graph, node.outputs[1]):
        return _skip("its mask output is used")
    if opset >= 12 and len(node.inputs) > 2 and not is_empty(node.inputs[2]):
        mode = const_value(node.inputs[2])
        if mode is None:
            return _skip("training_mode is not a constant")
        if bool(mode.reshape(-1)[0]):
            return _skip("training_mode is true (random dropout at run time)")
    return _bypass(node.inputs[0])


def _reshape(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    known, target = _attr_or_input(node, "shape", 1, opset, 5)
    if not known or target is None:
        return None
    allowzero = int(node.attrs.get("allowzero", 0))
    x = node.inputs[0]
    inner = _producer_in(x, "Reshape")
    if inner is not None and (allowzero or 0 not in target):
        # Reshape(Reshape(x, s1), s2) = Reshape(x, s2): s2 does not copy dims from the intermediate.
        node.inputs[0] = inner.inputs[0]
        return REWROTE
    shape = shape_of(x)
    if shape is None or len(shape) != len(target):
        return None
    inferred = 0
    for d, xd in zip(target, shape):
        if d == 0 and not allowzero:
            continue  # copies the input dim
        if d == -1:
            inferred += 1  # equals the input dim when every other dim matches
            continue
        if not (isinstance(xd, int) and xd == d):
            return None
    return _bypass(x) if inferred <= 1 else None


def _transpose(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    x = node.inputs[0]
    perm = _perm(node, x)
    if perm is None:
        return None
    if perm == list(range(len(perm))):
        return _bypass(x)
    inner = _producer_in(x, "Transpose")
    if inner is None:
        return None
    first = _perm(inner, inner.inputs[0])
    if first is None or len(first) != len(perm):
        return None
    # y = T(x, p1): y[i] = x[p1[i]];  z = T(y, p2): z[i] = y[p2[i]] = x[p1[p2[i]]]
    composed = [first[p] for p in perm]
    if composed == list(range(len(composed))):
        return _bypass(inner.inputs[0])
    node.inputs[0] = inner.inputs[0]
    node.attrs["perm"] = composed
    return REWROTE


def _perm(node: gs.Node, x: Any) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    shape = shape_of(x)
    return list(reversed(range(len(shape)))) if shape is not None else None


def _dtype_matches(tensor: Any, onnx_type: int) -> bool:
    import numpy as np
    import onnx

    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        return False
    if isinstance(dtype, int):
        return dtype == onnx_type
    try:
        return np.dtype(dtype) == np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    except (TypeError, KeyError, ValueError):
        return False


def _cast(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    return _bypass(node.inputs[0]) if _dtype_matches(node.inputs[0], int(node.attrs["to"])) else None


def _cast_like(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    import numpy as np

    a, b = node.inputs[0].dtype, node.inputs[1].dtype
    if a is None or b is None:
        return None
    same = a == b if isinstance(a, int) or isinstance(b, int) else np.dtype(a) == np.dtype(b)
    return _bypass(node.inputs[0]) if same else None


def _pad(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    known, pads = _attr_or_input(node, "pads", 1, opset, 11)
    if known and pads is not None and not any(pads):
        return _bypass(node.inputs[0])
    return None


def _slice(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    if opset < 10:
        starts, ends = _ints(node.attrs.get("starts")), _ints(node.attrs.get("ends"))
        axes, steps = _ints(node.attrs.get("axes")), None
    else:
        vals = []
        for i in range(1, 5):
            if len(node.inputs) <= i or is_empty(node.inputs[i]):
                vals.append(None)
                continue
            v = const_value(node.inputs[i])
            if v is None:
                return None
            vals.append(_ints(v))
        starts, ends, axes, steps = vals
    if starts is None or ends is None:
        return None
    shape = shape_of(node.inputs[0])
    rank = len(shape) if shape is not None else None
    axes = _norm_axes(axes, rank) if axes is not None else list(range(len(starts)))
    if axes is None:
        return None
    for i, axis in enumerate(axes):
        if (steps[i] if steps else 1) != 1:
            return None
        s, e = starts[i], ends[i]
        dim = shape[axis] if shape is not None and axis < len(shape) else None
        if isinstance(dim, int):
            s = min(max(s + dim if s < 0 else s, 0), dim)
            e = min(max(e + dim if e < 0 else e, 0), dim)
            if s != 0 or e != dim:
                return None
        elif not ((s == 0 or s <= -_TO_END) and e >= _TO_END):
            return None
    return _bypass(node.inputs[0])


def _expand(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    target = _ints(const_value(node.inputs[1]))
    shape = shape_of(node.inputs[0])
    if target is None or shape is None or len(target) > len(shape):
        return None
    # out = broadcast(x.shape, target) equals x.shape when every target dim is 1 or x's dim
    for d, xd in zip(reversed(target), reversed(shape)):
        if d != 1 and not (isinstance(xd, int) and xd == d):
            return None
    return _bypass(node.inputs[0])


def _concat(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    return _bypass(node.inputs[0]) if len(node.inputs) == 1 else None


def _split(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    # A split into one piece is the whole tensor (the split sizes, if given, must sum to the dim).
    return _bypass(node.inputs[0]) if len(node.outputs) == 1 else None


def _squeeze_axes(node: gs.Node, opset: int) -> tuple[bool, list[int] | None]:
    return _attr_or_input(node, "axes", 1, opset, 13)


def _unsqueeze(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    # Unsqueeze(Squeeze(x, a), a) = x: Squeeze only removes dims of size 1, Unsqueeze puts them back.
    inner = _producer_in(node.inputs[0], "Squeeze")
    if inner is None:
        return None
    x = inner.inputs[0]
    shape = shape_of(x)
    rank = len(shape) if shape is not None else None
    known1, a1 = _squeeze_axes(inner, opset)
    known2, a2 = _squeeze_axes(node, opset)
    if not known1 or not known2 or a2 is None:
        return None
    if a1 is None:  # squeeze every dim of size 1
        if shape is None or any(not isinstance(d, int) for d in shape):
            return None
        a1 = [i for i, d in enumerate(shape) if d == 1]
    n1 = _norm_axes(a1, rank)
    n2 = _norm_axes(a2, None if rank is None else rank - len(a1) + len(a2))
    if n1 is None or n2 is None or n1 != n2:
        return None
    return _bypass(x)


def _squeeze(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    # Squeeze(Unsqueeze(x, a), a) = x.
    inner = _producer_in(node.inputs[0], "Unsqueeze")
    if inner is None:
        return None
    x = inner.inputs[0]
    known1, a1 = _squeeze_axes(inner, opset)
    known2, a2 = _squeeze_axes(node, opset)
    if not known1 or not known2 or a1 is None:
        return None
    shape = shape_of(x)
    rank_y = len(shape) + len(a1) if shape is not None else None
    if a2 is None:  # squeeze every dim of size 1 of y: only the inserted ones if x has no dim of size 1
        if shape is None or any(not isinstance(d, int) or d == 1 for d in shape):
            return None
        a2 = list(a1)
    n1, n2 = _norm_axes(a1, rank_y), _norm_axes(a2, rank_y)
    if n1 is None or n2 is None or n1 != n2:
        return None
    return _bypass(x)


# x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0. (x + 0.0 maps -0.0 to +0.0; removing it keeps -0.0, equal under ==.)
_NEUTRAL: dict[str, tuple[float, bool]] = {  # op -> (neutral value, commutative)
    "Mul": (1.0, True),
    "Div": (1.0, False),
    "Add": (0.0, True),
    "Sub": (0.0, False),
}


def _neutral(graph: gs.Graph, node: gs.Node, opset: int) -> Action | None:
    import numpy as np

    value, commutative = _NEUTRAL[node.op]
    pairs = [(0, 1), (1, 0)] if commutative else [(0, 1)]
    for xi, ci in pairs:
        c = const_value(node.inputs[ci])
        x = node.inputs[xi]
        if c is None or c.dtype.kind not in "fiu" or c.size == 0 or not np.all(c == value):
            continue
        shape = shape_of(x)
        if shape is None or c.ndim > len(shape):
            continue
        if all(d == 1 or (isinstance(xd, int) and xd == d) for d, xd in zip(reversed(c.shape), reversed(shape))):
            return _bypass(x)
    return None


Handler = Callable[[Any, Any, int], "Action | None"]

# op type -> (option that enables it, handler)
NOOP_HANDLERS: dict[str, tuple[str, Handler]] = {
    "Identity": ("identity", _identity),
    "Dropout": ("dropout", _dropout),
    "Reshape": ("reshape", _reshape),
    "Transpose": ("transpose", _transpose),
    "Cast": ("cast", _cast),
    "CastLike": ("cast", _cast_like),
    "Pad": ("pad", _pad),
    "Slice": ("slice", _slice),
    "Expand": ("expand", _expand),
    "Concat": ("concat", _concat),
    "Split": ("split", _split),
    "Squeeze": ("squeeze_pairs", _squeeze),
    "Unsqueeze": ("squeeze_pairs", _unsqueeze),
    "Mul": ("neutral", _neutral),
    "Div": ("neutral", _neutral),
    "Add": ("neutral", _neutral),
    "Sub": ("neutral", _neutral),
}


def remove_noops(
    graph: gs.Graph, opset: int, enabled: Callable[[str], bool], result: PassResult, skip: Callable[..., None]
) -> bool:
    """Bypass every no-op node of ``graph`` whose kind is ``enabled``; returns whether anything changed.

    One sweep over the nodes; each bypass rewires only the removed node's consumers (O(uses)), so a chain of
    n no-ops is removed in O(n).
    """
    changed = False
    for node in list(graph.nodes):
        entry = NOOP_HANDLERS.get(node.op)
        if entry is None or not node.outputs or not node.inputs or not is_standard(node):
            continue
        kind, handler = entry
        if not enabled(kind):
            continue
        action = handler(graph, node, opset)
        if action is None:
            continue
        if action.kind == "skip":
            skip(node, f"{node.op} kept: {action.value}")
            continue
        if action.kind == "rewrote":
            result.count(f"{kind}_merged")
            changed = True
            continue
        if any(_used(graph, t) for t in node.outputs[1:]):
            skip(node, f"{node.op} kept: a secondary output is used")
            continue
        why = bypass(graph, node, action.value)
        if why is not None:
            skip(node, f"{node.op} is a no-op but {why}")
            continue
        result.count(kind)
        changed = True
    return changed
