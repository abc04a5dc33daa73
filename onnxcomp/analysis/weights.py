"""Weight targets: the MatMul / Gemm / Conv layers whose weight is a constant, as 2-D storage matrices.

A *target*'s weight is viewed as a 2-D storage matrix in the layout the com.onnxcomp ops use:

- MatMul / Gemm: W [K, N] (rows = input features k, columns = outputs n); Gemm's transB is applied, alpha is
  folded into W and beta * C into the bias B; a MatMul followed by Add(constant [N]) absorbs the Add as B.
- Conv: W [M, C/group * prod(kernel)] (rows = output filters m, W[m].ravel()).

Output channels (codebook groups, per-channel scales) are columns for MatMul, rows for Conv. What makes a
layer a target is a registry keyed by op type (``TARGETS``); a layer that is not one gets a reason.

Layers inside If/Loop/Scan bodies (nested ones included) are targets too: their weight is a constant of the
body (an initializer, or a Constant node, turned into an initializer of the body first) or an initializer of
an enclosing graph captured by the body. ``Target.owner`` is the body holding the node (None: the main graph),
where new nodes replacing it are written. A weight read by several nodes (in one body, or from two branches)
is skipped as shared, as in the main graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from onnxcomp.graph import label
from onnxcomp.names import any_match
from onnxcomp.passes_api import opt

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassResult

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


@dataclasses.dataclass
class SelectOptions:
    """Which layers a weight pass touches."""

    layers: list[str] = opt([], "only these layers (node or weight names, glob patterns); empty = all")
    protect: list[str] = opt([], "never touch these layers (node or weight names, glob patterns)")
    protect_first_last: bool = opt(False, "leave the first and the last weighted layer as they are")
    min_params: int = opt(0, "skip layers with fewer weights than this")


@dataclasses.dataclass
class Target:
    node: gs.Node
    kind: Literal["matmul", "conv"]
    weight: gs.Constant
    w2: np.ndarray  # float32 storage matrix (see module docstring)
    bias: np.ndarray | None  # float32 [outputs] or None
    x: Any  # the activation input tensor
    absorbed: gs.Node | None = None  # MatMul's bias Add folded into B
    conv_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    weight_shape: tuple[int, ...] = ()
    owner: gs.Graph | None = None  # the If/Loop/Scan body holding the node; None: the main graph
    where: str = ""  # that body, e.g. "If If_0 then_branch" ("" in the main graph)

    @property
    def name(self) -> str:
        return label(self.node)

    @property
    def out_axis(self) -> int:
        return 1 if self.kind == "matmul" else 0

    @property
    def outputs(self) -> int:
        return int(self.w2.shape[self.out_axis])

    @property
    def params(self) -> int:
        return int(self.w2.size)

    @property
    def half(self) -> bool:
        """The weight is stored float16 (``w2`` holds its values in float32)."""
        return str(self.weight.values.dtype) == "float16"

    def weight_as_original(self, w2: np.ndarray) -> np.ndarray:
        """A storage matrix back in the layout of the node's weight initializer (for prune-weights)."""
        if self.kind == "conv":
            return w2.reshape(self.weight_shape)
        gemm_trans = self.node.op == "Gemm" and int(self.node.attrs.get("transB", 0))
        return w2.T if gemm_trans else w2


TargetFn = Callable[["gs.Graph", "gs.Node"], "Target | str"]
TARGETS: dict[str, TargetFn] = {}


def target_for(*op_types: str) -> Callable[[TargetFn], TargetFn]:
    def deco(fn: TargetFn) -> TargetFn:
        for op in op_types:
            TARGETS[op] = fn
        return fn

    return deco


def _weight_reason(graph: gs.Graph, node: gs.Node, w: Any) -> str | None:
    from onnxcomp.graph import is_const
    from onnxcomp.weights import nonfinite_reason

    if not is_const(w):
        prod = w.inputs[0] if getattr(w, "inputs", None) else None
        if prod is not None and prod.op == "DequantizeLinear" and prod.inputs and is_const(prod.inputs[0]):
            stored = prod.inputs[0].values.dtype
            return f"the weight is quantized already ({stored}, read through DequantizeLinear)"
        from onnxcomp.fold import fill_note

        return "the weight is not a constant" + fill_note(w)
    if any(c is not node for c in w.outputs):
        return f"weight {w.name} is shared with other nodes"
    if w.values.dtype not in ("float32", "float16"):  # float16: collect_targets' ``half``
        return f"weight {w.name} is {w.values.dtype} (the com.onnxcomp ops are float32)"
    return nonfinite_reason(w.values)


@target_for("MatMul")
def _matmul_target(graph: gs.Graph, node: gs.Node) -> Target | str:
    import numpy as np

    from onnxcomp.graph import const_value, is_const, is_graph_output, static_shape

    if len(node.inputs) != 2:
        return "unexpected MatMul inputs"
    x, w = node.inputs
    if is_const(x):
        return "the constant is the first MatMul input (only X @ W is supported)"
    reason = _weight_reason(graph, node, w)
    if reason:
        return reason
    if w.values.ndim != 2:
        return f"weight rank {w.values.ndim} (only 2-D MatMul weights are supported)"
    n = int(w.values.shape[1])
    bias, absorbed = None, None
    out = node.outputs[0]
    add = out.outputs[0] if len(out.outputs) == 1 and not is_graph_output(graph, out) else None
    if add is not None and add.op == "Add" and len(add.inputs) == 2:
        other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        b = const_value(other)
        xs = static_shape(x)
        if (
            b is not None
            and b.dtype.kind == "f"
            and b.size == n
            and (b.ndim == 1 or (b.ndim == 2 and b.shape[0] == 1 and xs is not None and len(xs) >= 2))
        ):
            bias, absorbed = b.reshape(n).astype(np.float32), add
    return Target(node, "matmul", w, np.asarray(w.values, np.float32), bias, x, absorbed=absorbed)


@target_for("Gemm")
def _gemm_target(graph: gs.Graph, node: gs.Node) -> Target | str:
    import numpy as np

    from onnxcomp.graph import const_value, is_const, is_empty

    x, w = node.inputs[0], node.inputs[1]
    if int(node.attrs.get("transA", 0)):
        return "Gemm with transA=1 (the activation would need a transpose)"
    if is_const(x):
        return "the first Gemm input is a constant"
    reason = _weight_reason(graph, node, w)
    if reason:
        return reason
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    w2 = np.asarray(w.values, np.float32)
    if int(node.attrs.get("transB", 0)):
        w2 = w2.T
    # Y = alpha * X @ W + beta * C  ->  X @ (alpha * W) + (beta * C)
    w2 = np.ascontiguousarray(w2 * np.float32(alpha)) if alpha != 1.0 else np.ascontiguousarray(w2)
    n = int(w2.shape[1])
    bias = None
    if len(node.inputs) > 2 and not is_empty(node.inputs[2]):
        c = const_value(node.inputs[2])
        if c is None:
            return "the Gemm bias C is not a constant"
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            return f"the Gemm bias C has shape {list(c.shape)}, not a per-column bias [N]"
        bias = (np.broadcast_to(c.reshape(-1), (n,)) * np.float32(beta)).astype(np.float32)
    return Target(node, "matmul", w, w2, bias, x)


@target_for("Conv")
def _conv_target(graph: gs.Graph, node: gs.Node) -> Target | str:
    import numpy as np

    from onnxcomp.graph import const_value, is_empty, static_shape

    x, w = node.inputs[0], node.inputs[1]
    reason = _weight_reason(graph, node, w)
    if reason:
        return reason
    wv = np.asarray(w.values, np.float32)
    if wv.ndim < 3:
        return f"Conv weight rank {wv.ndim}"
    bias = None
    if len(node.inputs) > 2 and not is_empty(node.inputs[2]):
        b = const_value(node.inputs[2])
        if b is None:
            return "the Conv bias is not a constant"
        bias = np.asarray(b, np.float32)
    attrs = conv_attributes(node, wv.shape, static_shape(x))
    if isinstance(attrs, str):
        return attrs
    m = wv.shape[0]
    return Target(node, "conv", w, wv.reshape(m, -1), bias, x, conv_attrs=attrs, weight_shape=tuple(wv.shape))


def conv_attributes(node: gs.Node, wshape: tuple[int, ...], xshape: tuple[int, ...] | None) -> dict[str, Any] | str:
    """The Conv attributes with defaults filled in and auto_pad turned into explicit pads."""
    nd = len(wshape) - 2
    a = node.attrs
    kernel = [int(k) for k in a.get("kernel_shape", wshape[2:])]
    strides = [int(s) for s in a.get("strides", [1] * nd)]
    dil = [int(d) for d in a.get("dilations", [1] * nd)]
    pads = [int(p) for p in a.get("pads", [0] * (2 * nd))]
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto == "VALID":
        pads = [0] * (2 * nd)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if xshape is None or len(xshape) != nd + 2:
            return f"auto_pad={auto} with an unknown input shape (give --input-shape)"
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = xshape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto != "NOTSET":
        return f"unknown auto_pad {auto!r}"
    return {
        "dilations": dil,
        "group": int(a.get("group", 1)),
        "kernel_shape": kernel,
        "pads": pads,
        "strides": strides,
    }


def matches(patterns: list[str], *names: str) -> bool:
    """Any of the names matches any of the layer-name patterns (onnxcomp.names: names, globs, module paths)."""
    return any_match(patterns, *names) is not None


def collect_targets(
    graph: gs.Graph,
    opts: SelectOptions,
    result: PassResult,
    op_types: tuple[str, ...] = WEIGHT_OPS,
    half: bool = False,
) -> list[Target]:
    """Every supported layer, in graph order, filtered by the selection options (skips recorded); layers with
    float16 weights only with ``half`` (the codebook passes decode them in front of the layer, _half.py)."""
    from onnxcomp.graph import inline_constant_node, is_standard, scoped_nodes

    found: list[Target] = []
    for node, owner, where in scoped_nodes(graph):
        if node.op not in op_types or not is_standard(node):
            continue
        if where is not None:
            # a body's weights and biases are often Constant nodes: read as initializers of the body
            for t_in in list(node.inputs[1:]):
                inline_constant_node(owner, t_in)
        t = TARGETS[node.op](owner, node)
        if isinstance(t, str):
            result.skip(label(node), t if where is None else f"{t} (inside the {where} subgraph)")
            continue
        if t.half and not half:
            reason = (
                f"weight {t.weight.name} is float16 (the com.onnxcomp ops are float32; "
                "kmeans, pow2, ternary and binary compress it, prune-weights prunes it)"
            )
            result.skip(label(node), reason if where is None else f"{reason} (inside the {where} subgraph)")
            continue
        if where is not None:
            t.owner, t.where = owner, where
        found.append(t)
    if not found:
        _why_none(graph, result)
    edge = {id(found[0].node), id(found[-1].node)} if found and opts.protect_first_last else set()
    kept = []
    for t in found:
        names = (t.node.name, t.weight.name)
        if opts.layers and not matches(opts.layers, *names):
            continue
        if matches(opts.protect, *names):
            result.skip(t.name, "protected by name")
        elif id(t.node) in edge:
            result.skip(t.name, "first or last weighted layer (protect-first-last)")
        elif t.params < opts.min_params:
            result.skip(t.name, f"{t.params} weights < min-params={opts.min_params}")
        else:
            kept.append(t)
    return kept


# ops whose weights are integers already (onnxruntime's quantizer, QDQ exports): a weight pass has nothing to do
QUANTIZED_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "QGemm")


def _why_none(graph: gs.Graph, result: PassResult) -> None:
    """No layer with a float weight: say so where the model's weights are quantized already (``QUANTIZED_OPS``, or
    DequantizeLinear of a constant), rather than report an unexplained "no change"."""
    from onnxcomp.graph import is_const, scoped_nodes

    ops: dict[str, int] = {}
    for node, _, _ in scoped_nodes(graph):
        dq = node.op == "DequantizeLinear" and node.inputs and is_const(node.inputs[0])
        if node.op in QUANTIZED_OPS or dq:
            ops[node.op] = ops.get(node.op, 0) + 1
    if ops:
        listed = ", ".join(f"{n} {op}" for op, n in sorted(ops.items()))
        result.skip("(model)", f"no float MatMul / Gemm / Conv weights: the model is quantized already ({listed})")


def per_layer_value(t: Target, default: Any, per_layer: dict[str, Any]) -> Any:
    """The value of the first pattern of ``per_layer`` matching the layer's node or weight name, else default."""
    for pattern, value in per_layer.items():
        if matches([pattern], t.node.name, t.weight.name):
            return value
    return default


def per_layer_value_of(default: Any, per_layer: dict[str, Any], *names: str) -> Any:
    """``per_layer_value`` for anything named (e.g. an embedding table: its node and table names)."""
    for pattern, value in per_layer.items():
        if matches([pattern], *names):
            return value
    return default


def inputs_per_output(t: Target) -> int:
    """The inputs one output channel reads: K for MatMul, C/group * prod(kernel) for Conv."""
    return int(t.w2.shape[1 - t.out_axis])


def bits_for(t: Target, default: int, per_layer: dict[str, int]) -> int:
    return int(per_layer_value(t, default, per_layer))
