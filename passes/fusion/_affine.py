"""Fold a per-channel affine map into the linear op in front of it (shared by fuse-bn and fuse-affine).

For an op ``P`` whose output ``y`` has a channel axis (Conv/ConvTranspose: axis 1; Gemm/MatMul: the last
axis; BatchNormalization: axis 1), ``y * s + t`` with per-channel vectors ``s``, ``t`` is again ``P`` with
rewritten constants:

    Conv:            W'[o] = W[o] * s[o],                      B' = B * s + t
    ConvTranspose:   W'[:, o] = W[:, o] * s[o] (per group),     B' = B * s + t
    Gemm:            B' columns (output features) * s,          C' = beta * C * s + t, beta' = 1
    MatMul:          W'[:, o] = W[:, o] * s[o];  bias t: the following bias Add (b' = b * s + t), or
                     Gemm(A, W', t) for a 2-D A, or a new Add
    BatchNorm:       gamma' = gamma * s,                        beta' = beta * s + t

All arithmetic is done in float64 and cast back to the constant's dtype once. Constants read only by the
rewritten node are updated in place (they keep their names); shared ones are copied, never mutated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onnxcomp.fold import fill_note
from onnxcomp.graph import (
    STANDARD_DOMAINS,
    const_value,
    is_const,
    is_empty,
    is_graph_output,
    label,
    peek_values,
    set_const,
    shape_of,
    unique_name,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext


@dataclasses.dataclass
class Rewriter:
    """Graph, naming and provenance for one pass run (the name set is built once, not per new tensor)."""

    graph: gs.Graph
    ctx: PassContext
    pass_name: str
    taken: set[str] = dataclasses.field(default_factory=set)
    _earlier: dict[int, str | None] = dataclasses.field(default_factory=dict)
    _folded: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.taken = set(self.graph.tensors().keys())
        self.taken.update(n.name for n in self.graph.nodes if n.name)

    def name(self, base: str) -> str:
        return unique_name(self.graph, base, self.taken)

    def ensure_name(self, node: gs.Node) -> str:
        """Unnamed nodes get a name from their output, so that provenance can be attached."""
        if not node.name:
            node.name = self.name(f"{node.op}_{node.outputs[0].name}" if node.outputs else node.op)
        return node.name

    def tag(self, node: gs.Node, sources: list[gs.Node]) -> None:
        """Provenance: every node folded into ``node`` by this run, after what earlier passes recorded."""
        name = self.ensure_name(node)
        before = self._earlier.setdefault(id(node), self.ctx.provenance.get(name))
        folded = self._folded.setdefault(id(node), [])
        folded.extend(label(s) for s in sources)
        self.ctx.tag(node, self.pass_name, folded)
        if before:
            self.ctx.provenance[name] = f"{before}; {self.ctx.provenance[name]}"

    def set_const(self, node: gs.Node, index: int, values: np.ndarray, base: str) -> None:
        """Input ``index`` of ``node`` becomes a constant with ``values`` (:func:`onnxcomp.graph.set_const`); a
        copy is named after the old constant and this pass, or ``base`` when there was none."""
        old = node.inputs[index] if index < len(node.inputs) else None
        name = f"{old.name}_{self.pass_name}" if old is not None and not is_empty(old) else base
        set_const(self.graph, node, index, values, name, self.taken)


def is_float_const(tensor: Any) -> bool:
    """A floating-point constant with a numpy dtype: decided from its type, its values are not read."""
    import numpy as np

    if not is_const(tensor) or getattr(tensor, "_export_dtype", None) is not None:
        return False
    try:
        return np.dtype(tensor.dtype).kind == "f"
    except TypeError:
        return False


def float_const(tensor: Any) -> np.ndarray | None:
    """The value of a floating-point constant with a numpy dtype, else None (read without keeping a copy in
    the graph: checks must not hold every weight twice, see graph.peek_values)."""
    return peek_values(tensor) if is_float_const(tensor) else None


def scaled(w: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``w * factor`` computed in float64 and rounded once to ``w``'s dtype (no float64 copy of ``w``)."""
    import numpy as np

    out = np.empty(np.broadcast_shapes(w.shape, factor.shape), dtype=w.dtype)
    np.multiply(w, factor, out=out, dtype=np.float64, casting="same_kind")
    return out


def channel_vector(c: np.ndarray, out_rank: int | None, axis: int, channels: int) -> np.ndarray | None:
    """``c`` as a float64 vector over ``channels`` if, broadcast against an output of rank ``out_rank``, it
    varies along ``axis`` only and does not grow the output; else None."""
    import numpy as np

    if out_rank is None:
        # Unknown output rank: only a scalar-like or a vector along the last axis is safe.
        if c.ndim > 1 or (c.ndim == 1 and axis != -1 and c.shape[0] != 1):
            return None
        out_rank = max(c.ndim, 1)
    if c.ndim > out_rank:
        return None
    padded = (1,) * (out_rank - c.ndim) + tuple(c.shape)
    ax = axis % out_rank
    if any(d != 1 for i, d in enumerate(padded) if i != ax) or padded[ax] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,)).copy()


# ------------------------------------------------------------------------------------------ targets
@dataclasses.dataclass
class Match:
    """A linear op ``node`` (and, for MatMul, the constant bias Add after it) producing a channel tensor."""

    node: gs.Node
    bias_add: gs.Node | None = None
    bias_index: int = 1  # input index of the constant in bias_add

    @property
    def tail(self) -> gs.Node:
        return self.bias_add or self.node


@dataclasses.dataclass
class FoldRule:
    """How to fold a per-channel affine map into one op type."""

    check: Callable[[gs.Graph, gs.Node], str | None]  # reason it cannot be rewritten, or None
    channels: Callable[[gs.Node], int]
    out_rank: Callable[[gs.Node], int | None]
    axis: int  # channel axis of the output (negative: from the end)
    apply: Callable[[Rewriter, Match, np.ndarray, np.ndarray, bool], gs.Node]  # returns the new tail node


def _weight_reason(node: gs.Node, index: int, what: str = "weight") -> str | None:
    if len(node.inputs) <= index or not is_float_const(node.inputs[index]):
        return f"its {what} is not a floating-point constant" + (
            fill_note(node.inputs[index]) if len(node.inputs) > index else ""
        )
    return None


def _bias_reason(node: gs.Node, index: int) -> str | None:
    if len(node.inputs) > index and not is_empty(node.inputs[index]) and not is_float_const(node.inputs[index]):
        return "its bias is not a floating-point constant"
    return None


def _bias64(node: gs.Node, index: int, channels: int) -> np.ndarray:
    import numpy as np

    if len(node.inputs) > index and not is_empty(node.inputs[index]):
        return np.broadcast_to(const_value(node.inputs[index]).astype(np.float64), (channels,)).copy()
    return np.zeros(channels)


def _set_bias(rw: Rewriter, node: gs.Node, index: int, bias: np.ndarray, dtype: Any) -> None:
    """Write a bias input; an absent bias that stays zero is not added."""
    has = len(node.inputs) > index and not is_empty(node.inputs[index])
    if not has and not bias.any():
        return
    rw.set_const(node, index, bias.astype(dtype), f"{rw.ensure_name(node)}_bias")


# Conv: W [C_out, C_in/group, k...], B [C_out]
def _conv_check(graph: gs.Graph, node: gs.Node) -> str | None:
    return _weight_reason(node, 1) or _bias_reason(node, 2)


def _conv_channels(node: gs.Node) -> int:
    return int(node.inputs[1].shape[0])


def _conv_rank(node: gs.Node) -> int:
    return len(node.inputs[1].shape)


def _conv_apply(rw: Rewriter, m: Match, s: np.ndarray, t: np.ndarray, gemm: bool) -> gs.Node:

    node = m.node
    w = const_value(node.inputs[1])
    c = w.shape[0]
    bias = _bias64(node, 2, c)
    # W' = W * s (per output channel);  B' = B * s + t
    rw.set_const(node, 1, scaled(w, s.reshape((c,) + (1,) * (w.ndim - 1))), "")
    _set_bias(rw, node, 2, bias * s + t, w.dtype)
    return node


# ConvTranspose: W [C_in, C_out/group, k...], output channel o = g * (C_out/group) + j
def _convt_channels(node: gs.Node) -> int:
    return int(node.inputs[1].shape[1]) * int(node.attrs.get("group", 1))


def _convt_apply(rw: Rewriter, m: Match, s: np.ndarray, t: np.ndarray, gemm: bool) -> gs.Node:

    node = m.node
    w = const_value(node.inputs[1])
    g = int(node.attrs.get("group", 1))
    cin, cog = w.shape[0], w.shape[1]
    bias = _bias64(node, 2, cog * g)
    k = w.shape[2:]
    # W'[g, i, j] = W[g, i, j] * s[g * C_out/group + j]
    w_new = scaled(w.reshape((g, cin // g, cog, *k)), s.reshape((g, 1, cog) + (1,) * len(k)))
    rw.set_const(node, 1, w_new.reshape(w.shape), "")
    _set_bias(rw, node, 2, bias * s + t, w.dtype)
    return node


# Gemm: Y = alpha * A' @ B' + beta * C, output [M, N]; B' = B^T when transB
def _gemm_check(graph: gs.Graph, node: gs.Node) -> str | None:
    reason = _weight_reason(node, 1, "B input")
    if reason:
        return reason
    if len(node.inputs[1].shape) != 2:
        return "its B input is not 2-D"
    return _bias_reason(node, 2)


def _gemm_channels(node: gs.Node) -> int:
    b = node.inputs[1].shape
    return int(b[0] if node.attrs.get("transB", 0) else b[1])


def _gemm_apply(rw: Rewriter, m: Match, s: np.ndarray, t: np.ndarray, gemm: bool) -> gs.Node:
    import numpy as np

    node = m.node
    b = const_value(node.inputs[1])
    trans_b = bool(node.attrs.get("transB", 0))
    # alpha * A' @ (B' * s) = (alpha * A' @ B') * s: scale the output-feature columns of B'
    rw.set_const(node, 1, scaled(b, s[:, None] if trans_b else s[None, :]), "")
    beta = float(node.attrs.get("beta", 1.0))
    has_c = len(node.inputs) > 2 and not is_empty(node.inputs[2])
    if has_c:
        c = const_value(node.inputs[2]).astype(np.float64)
        # C' = beta * C * s + t (C broadcasts to [M, N]), beta' = 1
        c_new = beta * c * s + t
    elif t.any():
        c_new = t
    else:
        return node
    rw.set_const(node, 2, c_new.astype(b.dtype), f"{rw.ensure_name(node)}_bias")
    node.attrs["beta"] = 1.0
    return node


# MatMul with a constant 2-D right operand: Y = A @ W, output [..., N]
def _matmul_check(graph: gs.Graph, node: gs.Node) -> str | None:
    reason = _weight_reason(node, 1)
    if reason:
        return reason
    if len(node.inputs[1].shape) != 2:
        return "its weight is not 2-D"
    return None


def _matmul_channels(node: gs.Node) -> int:
    return int(node.inputs[1].shape[1])


def _matmul_rank(node: gs.Node) -> int | None:
    shape = shape_of(node.inputs[0])
    if shape is None:
        return None
    return max(len(shape), 2) if len(shape) != 1 else 1


def _matmul_apply(rw: Rewriter, m: Match, s: np.ndarray, t: np.ndarray, gemm: bool) -> gs.Node:
    import numpy as np
    import onnx_graphsurgeon as gs

    node = m.node
    w = const_value(node.inputs[1])
    # W'[:, o] = W[:, o] * s[o]
    rw.set_const(node, 1, scaled(w, s[None, :]), "")
    if m.bias_add is not None:
        add, idx = m.bias_add, m.bias_index
        b = const_value(add.inputs[idx]).astype(np.float64)
        rw.set_const(add, idx, (b * s + t).astype(w.dtype), "")  # b' = b * s + t (b: per output feature)
        rw.tag(add, [])
        return add
    if not t.any():
        return node
    if gemm and _matmul_rank(node) == 2:
        # A @ W' + t as one Gemm (2-D A)
        node.op = "Gemm"
        rw.set_const(node, 2, t.astype(w.dtype), f"{rw.ensure_name(node)}_bias")
        return node
    out = node.outputs[0]
    mid = gs.Variable(rw.name(f"{out.name}_matmul"), dtype=out.dtype, shape=out.shape)
    node.outputs[0] = mid
    bias = gs.Constant(rw.name(f"{rw.ensure_name(node)}_bias"), t.astype(w.dtype))
    add = gs.Node("Add", rw.name(f"{node.name}_bias_add"), {}, [mid, bias], [out])
    rw.graph.nodes.append(add)
    return add


# BatchNormalization(X, scale, B, mean, var): y = (x - mean) / sqrt(var + eps) * scale + B
def _bn_check(graph: gs.Graph, node: gs.Node) -> str | None:
    for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")):
        if len(node.inputs) <= i or not is_float_const(node.inputs[i]):
            return f"its {what} is not a floating-point constant"
    return bn_mode_reason(graph, node)


def bn_mode_reason(graph: gs.Graph, node: gs.Node) -> str | None:
    """Why a BatchNormalization (constant parameters) is not an inference-mode per-channel affine map."""
    if int(node.attrs.get("training_mode", 0)):
        return "it is in training mode"
    if int(node.attrs.get("spatial", 1)) != 1:
        return "spatial=0 (per-activation statistics)"
    if any(not is_empty(t) and (t.outputs or is_graph_output(graph, t)) for t in node.outputs[1:]):
        return "its training-mode outputs (running/saved statistics) are used"
    shapes = {tuple(node.inputs[i].shape) for i in range(1, 5)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        return "its parameters are not per-channel vectors of one length"
    return None


def _bn_channels(node: gs.Node) -> int:
    return int(node.inputs[1].shape[0])


def _bn_rank(node: gs.Node) -> int | None:
    shape = shape_of(node.inputs[0])
    return len(shape) if shape is not None else None


def _bn_apply(rw: Rewriter, m: Match, s: np.ndarray, t: np.ndarray, gemm: bool) -> gs.Node:
    import numpy as np

    node = m.node
    gamma, beta = const_value(node.inputs[1]), const_value(node.inputs[2])
    # gamma' = gamma * s;  beta' = beta * s + t
    rw.set_const(node, 1, scaled(gamma, s), "")
    rw.set_const(node, 2, (beta.astype(np.float64) * s + t).astype(beta.dtype), "")
    return node


TARGETS: dict[str, FoldRule] = {
    "Conv": FoldRule(_conv_check, _conv_channels, _conv_rank, 1, _conv_apply),
    "ConvTranspose": FoldRule(_conv_check, _convt_channels, _conv_rank, 1, _convt_apply),
    "Gemm": FoldRule(_gemm_check, _gemm_channels, lambda n: 2, -1, _gemm_apply),
    "MatMul": FoldRule(_matmul_check, _matmul_channels, _matmul_rank, -1, _matmul_apply),
    "BatchNormalization": FoldRule(_bn_check, _bn_channels, _bn_rank, 1, _bn_apply),
}


def bn_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization as y = x * s + t per channel: s = gamma / sqrt(var + eps), t = beta - mean * s."""
    import numpy as np

    gamma, beta, mean, var = (const_value(node.inputs[i]).astype(np.float64) for i in range(1, 5))
    eps = float(node.attrs.get("epsilon", 1e-5))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # var + eps <= 0: callers check s, t
        s = gamma / np.sqrt(var + eps)
        return s, beta - mean * s


def find_target(graph: gs.Graph, tensor: Any, ops: set[str]) -> tuple[Match | None, str | None]:
    """The foldable op (of ``ops``) producing ``tensor``, or (None, reason) / (None, None) if there is none.

    ``tensor`` must be read by a single node and not be a graph output. A MatMul followed by a constant bias
    Add counts as one target when "MatMul" is in ``ops``.
    """
    prod = tensor.inputs[0] if tensor.inputs else None
    if prod is None or prod.domain not in STANDARD_DOMAINS:
        return None, None
    match = None
    if prod.op == "Add" and "MatMul" in ops:
        match = _matmul_bias(graph, prod)
    if match is None:
        if prod.op not in ops:
            return None, None
        match = Match(prod)
    if len(tensor.outputs) != 1:
        return None, f"the output of {label(match.tail)} is also read by other nodes"
    if is_graph_output(graph, tensor):
        return None, f"the output of {label(match.tail)} is a graph output"
    reason = TARGETS[match.node.op].check(graph, match.node)
    if reason is not None:
        return None, f"{label(match.node)}: {reason}"
    return match, None


def _matmul_bias(graph: gs.Graph, add: gs.Node) -> Match | None:
    """Add(MatMul(A, W), b) with a constant per-feature b and the MatMul output read by the Add only."""
    for xi, bi in ((0, 1), (1, 0)):
        if len(add.inputs) != 2:
            return None
        x, b = add.inputs[xi], add.inputs[bi]
        value = float_const(b)
        mm = x.inputs[0] if x.inputs else None
        if value is None or mm is None or mm.op != "MatMul" or mm.domain not in STANDARD_DOMAINS:
            continue
        if len(x.outputs) != 1 or is_graph_output(graph, x) or _matmul_check(graph, mm) is not None:
            continue
        if channel_vector(value, _matmul_rank(mm), -1, _matmul_channels(mm)) is None or value.ndim > 1:
            continue
        return Match(mm, add, bi)
    return None


def fold(rw: Rewriter, match: Match, s: np.ndarray, t: np.ndarray, consumer: gs.Node, gemm: bool = True) -> None:
    """Fold ``y * s + t`` into ``match`` and let it write ``consumer``'s output; ``consumer`` is removed."""
    target = TARGETS[match.node.op]
    rw.tag(match.node, [consumer])
    tail = target.apply(rw, match, s, t, gemm)
    out = consumer.outputs[0]
    consumer.inputs.clear()
    consumer.outputs.clear()
    tail.outputs[0] = out
