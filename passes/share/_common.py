"""Shared machinery of the weight-sharing passes: layer targets, selection options, calibration energy,
per-layer records, and emitting an encoded weight as a com.onnxcomp node.

A *target* is a MatMul / Gemm / Conv whose weight is a constant. Its weight is viewed as a 2-D storage
matrix in the layout the com.onnxcomp ops use:

- MatMul / Gemm: W [K, N] (rows = input features k, columns = outputs n); Gemm's transB is applied, alpha is
  folded into W and beta * C into the bias B; a MatMul followed by Add(constant [N]) absorbs the Add as B.
- Conv: W [M, C/group * prod(kernel)] (rows = output filters m, W[m].ravel()).

Codebook groups (``group_size``) run over output channels: columns for MatMul, rows for Conv.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from onnxcomp import ops
from onnxcomp.passes_api import opt

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassContext, PassResult

logger = logging.getLogger(__name__)


# ============================================================================================ options
@dataclasses.dataclass
class SelectOptions:
    """Which layers a weight pass touches."""

    layers: list[str] = opt([], "only these layers (node or weight names, glob patterns); empty = all")
    protect: list[str] = opt([], "never touch these layers (node or weight names, glob patterns)")
    protect_first_last: bool = opt(False, "leave the first and the last weighted layer as they are")
    min_params: int = opt(0, "skip layers with fewer weights than this")


@dataclasses.dataclass
class ShareOptions(SelectOptions):
    """Options of the passes that emit com.onnxcomp ops."""

    huffman: Literal["report", "store"] = opt(
        "report",
        "report: report the Huffman-coded size per layer; store: also write the code bytes "
        "Huffman-coded on disk (a HuffmanDecode op that onnxruntime folds at load time)",
    )
    inline: bool = opt(
        False,
        "write only standard ONNX ops (function bodies inlined) for runtimes without model-local function support",
    )
    calib_samples: int = opt(256, "calibration samples used for activation statistics")


# ============================================================================================ targets
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
        return "the weight is not a constant"
    if any(c is not node for c in w.outputs):
        return f"weight {w.name} is shared with other nodes"
    if w.values.dtype != "float32":
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


def label(node: gs.Node) -> str:
    """A node's name, or (unnamed nodes) its op and first output."""
    if node.name:
        return str(node.name)
    return f"{node.op}->{node.outputs[0].name}" if node.outputs else str(node.op)


def _matches(patterns: list[str], *names: str) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)


def collect_targets(
    graph: gs.Graph,
    opts: SelectOptions,
    result: PassResult,
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv"),
) -> list[Target]:
    """Every supported layer, in graph order, filtered by the selection options (skips recorded)."""
    from onnxcomp.graph import subgraph_nodes

    found: list[Target] = []
    for node in list(graph.nodes):
        if node.op not in op_types or node.domain not in ("", "ai.onnx", None):
            continue
        t = TARGETS[node.op](graph, node)
        if isinstance(t, str):
            result.skip(label(node), t)
            continue
        found.append(t)
    for node, where in subgraph_nodes(graph, op_types):
        result.skip(label(node), f"inside the {where} subgraph (only main-graph layers are compressed)")
    edge = {id(found[0].node), id(found[-1].node)} if found and opts.protect_first_last else set()
    kept = []
    for t in found:
        names = (t.node.name, t.weight.name)
        if opts.layers and not _matches(opts.layers, *names):
            continue
        if _matches(opts.protect, *names):
            result.skip(t.name, "protected by name")
        elif id(t.node) in edge:
            result.skip(t.name, "first or last weighted layer (protect_first_last)")
        elif t.params < opts.min_params:
            result.skip(t.name, f"{t.params} weights < min_params={opts.min_params}")
        else:
            kept.append(t)
    return kept


def prepare(
    graph: gs.Graph,
    ctx: PassContext,
    o: SelectOptions,
    result: PassResult,
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv"),
) -> list[Target]:
    """Targets after making sure the model's opset can hold the function bodies (upgrading it if needed)."""
    from onnxcomp.graph import opset_version

    probe = type(result)(name=result.name)
    if not collect_targets(graph, o, probe, op_types):
        result.skips.extend(probe.skips)
        return []
    if opset_version(graph) < ops.MIN_OPSET and not ops.ensure_opset(graph, ctx, result):
        return []
    return collect_targets(graph, o, result, op_types)


def saves_bytes(t: Target, e: Encoded) -> bool:
    """Table plus packed codes smaller than the float32 weight (ternary convolutions store [G, 4] tables)."""
    rows, cols = t.w2.shape
    table = e.table.shape[0] * (4 if e.ternary and t.kind == "conv" else e.table.shape[1])
    return 4 * table + rows * ops.packed_row_bytes(cols, e.bits) < 4 * t.params


def per_layer_value(t: Target, default: Any, per_layer: dict[str, Any]) -> Any:
    """The value of the first pattern of ``per_layer`` matching the layer's node or weight name, else default."""
    for pattern, value in per_layer.items():
        if _matches([pattern], t.node.name, t.weight.name):
            return value
    return default


def bits_for(t: Target, default: int, per_layer: dict[str, int]) -> int:
    return int(per_layer_value(t, default, per_layer))


# ============================================================================================ calibration
def input_energy(
    graph: gs.Graph,
    ctx: PassContext,
    targets: list[Target],
    max_samples: int,
    acts: dict[str, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Per target: the mean squared activation of each input feature, broadcast to the storage matrix.

    MatMul: e[k] = mean over all other axes of x[..., k]**2, element weight of W[k, n] = e[k].
    Conv: e[c] = mean over batch and space of x[:, c]**2, element weight of W[m, (c', kernel...)] = e[c] with
    c = (m // (M / group)) * C/group + c'. Returns {} without calibration data.
    """
    import numpy as np

    if ctx.calib is None or not targets:
        return {}
    if acts is None:
        acts = layer_inputs(graph, ctx, targets, max_samples)
    out: dict[int, np.ndarray] = {}
    for t in targets:
        a = np.asarray(acts[t.x.name], np.float64)
        if t.kind == "matmul":
            e = (a.reshape(-1, a.shape[-1]) ** 2).mean(0)
            out[id(t)] = np.broadcast_to(e[:, None], t.w2.shape)
        else:
            c = a.shape[1]
            e = (np.moveaxis(a, 1, 0).reshape(c, -1) ** 2).mean(1)
            m, per = t.w2.shape
            group = int(t.conv_attrs["group"])
            cg = c // group
            kk = per // cg
            ch = (np.arange(m)[:, None] // (m // group)) * cg + (np.arange(per)[None, :] // kk)
            out[id(t)] = e[ch]
    return out


def layer_inputs(graph: gs.Graph, ctx: PassContext, targets: list[Target], max_samples: int) -> dict[str, np.ndarray]:
    """The activation input of every target on the calibration data ({} without calibration data)."""
    if ctx.calib is None or not targets:
        return {}
    return ctx.capture(graph, sorted({t.x.name for t in targets}), max_samples=max_samples)


def im2col(x: np.ndarray, t: Target, max_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per conv group: the input patches [positions, C/group * prod(kernel)] in W[m].ravel() order.

    MatMul targets: one matrix [positions, K]. At most ``max_rows`` positions (a random subset).
    """
    rows = _patch_rows(x, t)
    if rows.shape[0] > max_rows:
        rows = rows[rng.choice(rows.shape[0], max_rows, replace=False)]
    return _group_blocks(rows, t)


def im2col_pair(
    x_cur: np.ndarray, x_orig: np.ndarray, t: Target, max_rows: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``im2col`` of a layer's current and original inputs over the SAME positions (one random subset).

    Row i of both results is the same (sample, output position) patch, so X_cur^T X_orig pairs the
    current input of a position with the original input of that position.
    """
    if x_cur.shape != x_orig.shape:
        raise ValueError(f"current input {x_cur.shape} and original input {x_orig.shape} differ in shape")
    cur, orig = _patch_rows(x_cur, t), _patch_rows(x_orig, t)
    if cur.shape[0] > max_rows:
        pick = rng.choice(cur.shape[0], max_rows, replace=False)
        cur, orig = cur[pick], orig[pick]
    return _group_blocks(cur, t), _group_blocks(orig, t)


def positions(x: np.ndarray, t: Target) -> int:
    """The number of im2col rows of a layer input: samples x output positions (MatMul: all but the last axis)."""
    import numpy as np

    if t.kind == "matmul":
        return int(np.prod(x.shape[:-1]))
    a = t.conv_attrs
    nd = x.ndim - 2
    count = int(x.shape[0])
    for i in range(nd):
        span = (a["kernel_shape"][i] - 1) * a["dilations"][i] + 1
        count *= (x.shape[2 + i] + a["pads"][i] + a["pads"][i + nd] - span) // a["strides"][i] + 1
    return count


def _patch_rows(x: np.ndarray, t: Target) -> np.ndarray:
    """All input patches of a layer as rows [positions, C * prod(kernel)] (MatMul: [positions, K])."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    if t.kind == "matmul":
        return x.reshape(-1, x.shape[-1])
    a = t.conv_attrs
    nd = x.ndim - 2
    pads = a["pads"]
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    xp = np.pad(x, width)
    span = [(k - 1) * d + 1 for k, d in zip(a["kernel_shape"], a["dilations"], strict=True)]
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))  # [N, C, out..., span...]
    sl = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in a["strides"]),
        *(slice(None, None, d) for d in a["dilations"]),
    )
    win = win[sl]
    n = win.shape[0]
    out_sp = win.shape[2 : 2 + nd]
    # [N, out..., C, kernel...] -> [positions, C * prod(kernel)]
    return np.moveaxis(win, 1, 1 + nd).reshape(n * int(np.prod(out_sp)), -1)


def _group_blocks(rows: np.ndarray, t: Target) -> list[np.ndarray]:
    """Patch rows split into the conv groups' column blocks (one block for MatMul), as float64."""
    import numpy as np

    group = int(t.conv_attrs["group"]) if t.kind == "conv" else 1
    per = rows.shape[1] // group
    return [rows[:, g * per : (g + 1) * per].astype(np.float64) for g in range(group)]


def gram(blocks: list[np.ndarray]) -> list[np.ndarray]:
    """H = X^T X / rows per block."""
    return [b.T @ b / max(1, b.shape[0]) for b in blocks]


def cross_gram(cur: list[np.ndarray], orig: list[np.ndarray]) -> list[np.ndarray]:
    """H_co = X_cur^T X_orig / rows per block (rows of the two paired, see ``im2col_pair``)."""
    return [c.T @ o / max(1, c.shape[0]) for c, o in zip(cur, orig, strict=True)]


# ============================================================================================ sequential
def sequential_waves(targets: list[Target]) -> list[list[Target]]:
    """Targets grouped for sequential calibration, in dependency order.

    A target's level is the largest number of targets on any path from a graph input to its activation
    input; wave k holds the targets of level k. No target depends on a target of its own or a later wave,
    so one capture of the current graph gives the current inputs of a whole wave (e.g. the Q/K/V
    projections reading one tensor).
    """
    is_target = {id(t.node) for t in targets}
    level: dict[int, int] = {}  # id(tensor) -> targets on the longest path producing it

    def node_input_level(node: gs.Node) -> int:
        return max((level[id(i)] for i in node.inputs), default=0)

    for t in targets:
        stack = [t.x]
        while stack:  # depth-first over the producers, each tensor's level once its inputs have theirs
            tensor = stack[-1]
            if id(tensor) in level:
                stack.pop()
                continue
            node = tensor.inputs[0] if tensor.inputs else None
            pending = [] if node is None else [i for i in node.inputs if id(i) not in level]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            level[id(tensor)] = 0 if node is None else node_input_level(node) + (1 if id(node) in is_target else 0)
    waves: dict[int, list[Target]] = {}
    for t in targets:
        waves.setdefault(level[id(t.x)], []).append(t)
    return [waves[k] for k in sorted(waves)]


def current_inputs(graph: gs.Graph, ctx: PassContext, wave: list[Target], max_samples: int) -> dict[str, np.ndarray]:
    """The activation inputs of ``wave`` captured from the graph as it is now (earlier layers changed).

    Cleans and sorts the graph first (as the pipeline does after a pass): replaced nodes are dead and new
    ones appended at the end.
    """
    from onnxcomp.graph import toposort

    toposort(graph.cleanup(remove_unused_graph_inputs=False))
    return ctx.capture(graph, sorted({t.x.name for t in wave}), max_samples=max_samples)


# ============================================================================================ encodings
@dataclasses.dataclass
class Encoded:
    """A weight as codes into per-group tables (codebook [G, 2**bits], or ternary scales [G, 2])."""

    table: np.ndarray
    codes: np.ndarray  # int64, shape of the storage matrix
    bits: int
    group_size: int
    ternary: bool = False
    zero_code: bool = False  # code 0 decodes to exactly 0.0 in every group (sparse layout possible)

    def decoded(self, out_axis: int) -> np.ndarray:
        import numpy as np

        table = ops.ternary_lut(self.table) if self.ternary else self.table
        return np.asarray(ops.decode_codebook(table, self.codes, self.group_size, out_axis), np.float32)


def rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||W - W_hat||_F / ||W||_F."""
    import numpy as np

    den = float(np.linalg.norm(w.astype(np.float64)))
    num = float(np.linalg.norm(w.astype(np.float64) - w_hat.astype(np.float64)))
    return num / den if den > 0 else num


@dataclasses.dataclass
class Emitted:
    format: str
    bytes_before: int
    bytes_packed: int
    bytes_huffman: int
    bytes_stored: int  # packed: the Huffman store (huffman=store) is decided for all layers in finish()
    node: str  # the com.onnxcomp node written


def emit_encoded(
    graph: gs.Graph,
    ctx: PassContext,
    t: Target,
    e: Encoded,
    *,
    pass_name: str,
    sparse: Literal["auto", "never", "always"] = "never",
    huffman: str = "report",
) -> Emitted:
    """Replace the target by the com.onnxcomp node of its encoding; returns the byte accounting."""
    import numpy as np

    from onnxcomp.graph import make_constant

    w_name = t.weight.name
    bias_bytes = 0 if t.bias is None else 4 * t.bias.size
    before = 4 * t.params + bias_bytes
    # ternary convolutions are CodebookConv with codebook rows [0, a_p, -a_n, 0]
    table_value = ops.ternary_lut(e.table) if e.ternary and t.kind == "conv" else e.table
    table = make_constant(
        graph,
        f"{w_name}_{'scales' if e.ternary and t.kind == 'matmul' else 'codebook'}",
        np.asarray(table_value, np.float32),
    )
    streams: list[tuple[np.ndarray, tuple[int, int] | None]] = []  # packed, code layout
    layout = None
    if (
        t.kind == "matmul"
        and e.zero_code
        and not e.ternary
        and sparse != "never"
        and (sparse == "always" or _sparse_may_win(e, huffman))
    ):
        candidate = ops.best_sparse(e.codes, e.bits)
        s_streams = [
            (ops.pack_codes(candidate.deltas, candidate.index_bits)[0], None),
            (ops.pack_codes(candidate.codes, e.bits)[0], None),
        ]
        # the dense side is costed without the zero-run form: at equal-ish size the EIE layout wins, since
        # the native runtime skips its zeros and its decode at load touches only the nonzero entries
        d_streams = [(ops.pack_codes(e.codes, e.bits), None)]
        if sparse == "always" or _stream_bytes(s_streams, huffman) + 4 * candidate.row_ptr.size < _stream_bytes(
            d_streams, huffman
        ):
            layout, streams = candidate, s_streams
    if layout is None:
        streams = [(ops.pack_codes(e.codes, e.bits), (e.bits, e.codes.shape[1]))]
    extra_fixed = 4 * layout.row_ptr.size if layout is not None else 0
    table_bytes = 4 * int(np.asarray(table_value).size)
    bias_after = 4 * t.outputs  # B is always written (zeros when the layer had none)
    packed = table_bytes + extra_fixed + sum(s.size for s, _ in streams) + bias_after
    huff = table_bytes + extra_fixed + _stream_bytes(streams, "store") + bias_after
    consts = [
        make_constant(graph, f"{w_name}_{'deltas' if layout is not None and i == 0 else 'codes'}", s)
        for i, (s, _) in enumerate(streams)
    ]
    # B is always written: the MatMul bodies add it unconditionally, and a Conv with an empty bias input
    # keeps onnxruntime from fusing a following BatchNormalization and from its NCHWc layout.
    bias = t.bias if t.bias is not None else np.zeros(t.outputs, np.float32)
    b_const = [make_constant(graph, f"{w_name}_bias", np.asarray(bias, np.float32))]
    n = t.outputs
    if t.kind == "conv":
        attrs = {
            "bits": 2 if e.ternary else e.bits,
            "group_size": e.group_size,
            "weight_shape": list(t.weight_shape),
            **t.conv_attrs,
        }
        node = ops.emit(graph, t.node, "CodebookConv", [t.x, table, *consts, *b_const], attrs, "codebook")
        fmt = "conv"
    elif e.ternary:
        node = ops.emit(
            graph,
            t.node,
            "TernaryMatMul",
            [t.x, table, *consts, *b_const],
            {"N": n, "group_size": e.group_size},
            "ternary",
        )
        fmt = "ternary"
    elif layout is not None:
        row_ptr = make_constant(graph, f"{w_name}_row_ptr", layout.row_ptr)
        node = ops.emit(
            graph,
            t.node,
            "SparseCodebookMatMul",
            [t.x, table, row_ptr, *consts, *b_const],
            {"bits": e.bits, "index_bits": layout.index_bits, "N": n, "group_size": e.group_size},
            "sparse",
        )
        fmt = f"sparse(index_bits={layout.index_bits}, fillers={layout.fillers})"
    else:
        node = ops.emit(
            graph,
            t.node,
            "CodebookMatMul",
            [t.x, table, *consts, *b_const],
            {"bits": e.bits, "N": n, "group_size": e.group_size},
            "codebook",
        )
        fmt = "dense"
    if t.absorbed is not None:
        # MatMul + Add(bias): the new node writes the Add's output
        out = t.absorbed.outputs[0]
        t.absorbed.inputs.clear()
        t.absorbed.outputs.clear()
        node.outputs[0] = out
    ctx.tag(node, pass_name, [t.name, t.absorbed.name if t.absorbed is not None else ""])
    return Emitted(fmt, before, packed, huff, packed, node.name)


def _sparse_may_win(e: Encoded, huffman: str) -> bool:
    """Cheap bound before building the EIE layout: an entry costs at least bits + 4 bits (+ row pointers)."""
    import numpy as np

    nnz = int(np.count_nonzero(e.codes))
    rows, cols = e.codes.shape
    if huffman == "store":
        return nnz <= 0.5 * e.codes.size
    return 4 * (rows + 1) + nnz * (e.bits + 4) // 8 < rows * ops.packed_row_bytes(cols, e.bits)


def _stream_bytes(streams: list[tuple[np.ndarray, tuple[int, int] | None]], huffman: str) -> int:
    """Stored bytes of packed streams, each with its code layout (bits, codes per row) or None."""
    if huffman != "store":
        return sum(int(s.size) for s, _ in streams)
    return sum(_huffman_or_packed(s, layout) for s, layout in streams)


def _huffman_or_packed(stream: np.ndarray, layout: tuple[int, int] | None) -> int:
    coded = huffman_form(stream, layout)[0]
    return coded if int(stream.size) - coded >= HUFFMAN_MIN_GAIN else int(stream.size)


# A HuffmanDecode node and its three initializers cost about 300 bytes of graph: code a tensor only when
# the coded stream (with its table and chunk offsets) is at least this much smaller than the packed bytes.
HUFFMAN_MIN_GAIN = 256
# What a RunLengthDecode node adds to the graph (name, attributes, one more tensor name): the zero-run form
# is chosen only when it is smaller by more than this.
RUN_LENGTH_NODE_BYTES = 96
RUN_LENGTH_MIN_ZEROS = 0.5


def huffman_form(packed: np.ndarray, layout: tuple[int, int] | None) -> tuple[int, np.ndarray | None]:
    """(coded bytes, zero-run symbols or None): the smaller of two Huffman codings of a packed tensor.

    Either the packed bytes themselves are the Huffman symbols, or, for packed codes (``layout`` = (bits,
    codes per row)), the zero-run symbols of :func:`zero_run_form`.
    """
    from onnxcomp.ops import huffman as _huffman

    size = _huffman.coded_size(packed)
    runs = zero_run_form(packed, layout)
    return (runs[0], runs[1]) if runs is not None and runs[0] < size else (size, None)


def zero_run_form(packed: np.ndarray, layout: tuple[int, int] | None) -> tuple[int, np.ndarray] | None:
    """(Huffman-coded bytes + :data:`RUN_LENGTH_NODE_BYTES`, symbols) of packed codes as zero runs, or None.

    For packed codes (``layout`` = (bits, codes per row), bits <= 7): the (zero run, code) symbols of
    :func:`ops.run_length_encode` (Deep Compression's "relative index" coding, which gets close to the
    entropy of a pruned layer: a byte symbol cannot cost less than one bit, a long zero run in one symbol
    can). Only tried when at least :data:`RUN_LENGTH_MIN_ZEROS` of the codes are zero (pruned layers): with
    fewer, one symbol per nonzero code is no gain over a byte symbol holding 8 / bits codes, and building
    it costs ~40 ns per code.
    """
    import numpy as np

    from onnxcomp.ops import huffman as _huffman

    if layout is None or layout[0] > 7 or not packed.size:
        return None
    bits, n = layout
    codes = ops.unpack_codes(packed, bits, n)
    if np.count_nonzero(codes) > (1 - RUN_LENGTH_MIN_ZEROS) * codes.size:
        return None
    runs = ops.run_length_encode(codes, bits)
    return (_huffman.coded_size(runs) + RUN_LENGTH_NODE_BYTES, runs) if runs.size else None


@dataclasses.dataclass
class _Coding:
    """How one packed input of a com.onnxcomp node is stored by the Huffman store."""

    node: gs.Node
    index: int
    values: np.ndarray
    layout: tuple[int, int] | None
    gain: int  # packed bytes - coded bytes (stream, table, offsets; + RUN_LENGTH_NODE_BYTES for runs)
    runs: np.ndarray | None  # zero-run symbols, or None: the packed bytes are the symbols


def huffman_store(
    graph: gs.Graph, ctx: PassContext, nodes: list[gs.Node], pass_name: str, min_gain: int = HUFFMAN_MIN_GAIN
) -> dict[str, int]:
    """Huffman-code the packed uint8 constant inputs of com.onnxcomp nodes (HuffmanDecode in front).

    Per tensor, the smaller of the two codings of :func:`huffman_form` (the packed codes of a pruned layer
    as zero runs: RunLengthDecode after the HuffmanDecode); a tensor that would not shrink by at least
    ``min_gain`` bytes stays packed. The decoders' function bodies are stored once per model (HuffmanDecode
    ~3.5 kB, RunLengthDecode ~1.5 kB): the zero-run form, and Huffman coding at all, are used only when the
    coded tensors save more than the bodies the model does not carry yet. Returns the bytes saved per node
    name (coded tensors vs packed, bodies not counted).
    """
    import numpy as np

    from onnxcomp.graph import is_const, opset_version
    from onnxcomp.ops import huffman as _huffman

    plans: list[tuple[_Coding, _Coding | None]] = []  # (coded bytes, coded zero runs if smaller)
    for node in nodes:
        code_input = _code_input(node.op)
        for i, tensor in enumerate(node.inputs):
            if not is_const(tensor) or tensor.values.dtype != np.uint8 or tensor.values.size == 0:
                continue
            values = np.asarray(tensor.values)
            layout = None
            if code_input is not None and code_input[0] == i and values.ndim == 2:
                layout = code_input[1](node.attrs)
            plain = _Coding(node, i, values, layout, values.size - _huffman.coded_size(values), None)
            runs = zero_run_form(values, layout)
            zr = None if runs is None else _Coding(node, i, values, layout, values.size - runs[0], runs[1])
            plans.append((plain, zr))

    present = {f.name for f in graph.functions if f.domain == ops.DOMAIN}

    def body(op: str) -> int:
        return 0 if op in present else len(ops.function_proto(op, opset_version(graph)).SerializeToString())

    best: tuple[int, list[_Coding]] = (0, [])
    for allow_runs in (False, True):
        chosen = []
        for plain, runs in plans:
            c = runs if allow_runs and runs is not None and runs.gain > plain.gain else plain
            if c.gain >= min_gain:
                chosen.append(c)
        net = sum(c.gain for c in chosen)
        if chosen:
            net -= body("HuffmanDecode")
        if any(c.runs is not None for c in chosen):
            net -= body("RunLengthDecode")
        if net > best[0]:
            best = (net, chosen)
    saved: dict[str, int] = {}
    for c in best[1]:
        saved[c.node.name] = saved.get(c.node.name, 0) + _store_one(graph, ctx, c, pass_name)
    return saved


def _code_input(op_type: str) -> tuple[int, Callable[[dict[str, Any]], tuple[int, int]]] | None:
    """The packed-code input of a com.onnxcomp op and its layout (what may be coded as zero runs)."""
    spec = ops.OPS.get(op_type)
    return spec.code_input if spec is not None else None


def _store_one(graph: gs.Graph, ctx: PassContext, c: _Coding, pass_name: str) -> int:
    """Replace one packed input by HuffmanDecode (-> RunLengthDecode); returns the bytes saved."""
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.graph import make_constant, unique_name
    from onnxcomp.ops import huffman as _huffman

    coded = _huffman.encode(c.values if c.runs is None else c.runs)
    base = c.node.inputs[c.index].name
    ins = [
        make_constant(graph, f"{base}_huff", coded.stream),
        make_constant(graph, f"{base}_huff_table", coded.table),
        make_constant(graph, f"{base}_huff_offsets", coded.offsets),
    ]
    out = gs.Variable(unique_name(graph, f"{base}_decoded"), dtype=np.uint8, shape=list(c.values.shape))
    decoded = out
    if c.runs is not None:
        assert c.layout is not None
        decoded = gs.Variable(unique_name(graph, f"{base}_runs"), dtype=np.uint8, shape=[int(c.runs.size)])
        ops.ensure_function(graph, "RunLengthDecode")
        rl = gs.Node(
            "RunLengthDecode",
            unique_name(graph, f"{base}_zero_runs"),
            attrs={
                "bits": int(c.layout[0]),
                "count": int(c.layout[1]),
                "shape": [int(v) for v in c.values.shape],
            },
            inputs=[decoded],
            outputs=[out],
            domain=ops.DOMAIN,
        )
        graph.nodes.append(rl)
        ctx.tag(rl, pass_name, [base])
    ops.ensure_function(graph, "HuffmanDecode")
    dec = gs.Node(
        "HuffmanDecode",
        unique_name(graph, f"{base}_huffman"),
        attrs={"shape": list(decoded.shape)},
        inputs=ins,
        outputs=[decoded],
        domain=ops.DOMAIN,
    )
    graph.nodes.append(dec)
    ctx.tag(dec, pass_name, [base])
    c.node.inputs[c.index] = out
    return int(c.values.size - coded.nbytes)


def record(
    result: PassResult,
    t: Target,
    decision: str,
    e: Encoded,
    em: Emitted,
    error: float,
    sparsity: float,
    **extra: Any,
) -> None:
    """The per-layer report row: bits, codebook size, sparsity, bytes before/after (packed, Huffman),
    reconstruction error."""
    result.layer(
        t.name,
        op=t.node.op,
        decision=decision,
        params_before=t.params,
        params_after=t.params,
        error=error,
        extra={
            "bits": e.bits,
            "codebook_size": 3 if e.ternary else 1 << e.bits,
            "groups": int(e.table.shape[0]),
            "sparsity": round(sparsity, 6),
            "format": em.format,
            "bytes_before": em.bytes_before,
            "bytes_packed": em.bytes_packed,
            "bytes_huffman": em.bytes_huffman,
            "bytes_stored": em.bytes_stored,
            "node": em.node,
            **extra,
        },
    )
    result.count("layers")
    result.count("bytes_before", em.bytes_before)
    result.count("bytes_packed", em.bytes_packed)
    result.count("bytes_huffman", em.bytes_huffman)
    result.count("bytes_stored", em.bytes_stored)


def finish(graph: gs.Graph, ctx: PassContext, result: PassResult, o: ShareOptions) -> PassResult:
    """The Huffman store of every layer the pass encoded (``huffman=store``), totals (compression ratios)
    and the optional inlining into standard ops."""
    if o.huffman == "store" and result.layers:
        by_name = {n.name: n for n in graph.nodes}
        rows = [r for r in result.layers if r.extra.get("node") in by_name]
        saved = huffman_store(graph, ctx, [by_name[r.extra["node"]] for r in rows], result.name)
        for r in rows:
            cut = saved.get(r.extra["node"], 0)
            r.extra["bytes_stored"] -= cut
            result.count("bytes_stored", -cut)
    before = result.counters.get("bytes_before", 0)
    for key in ("packed", "huffman", "stored"):
        after = result.counters.get(f"bytes_{key}", 0)
        if before and after:
            result.counters[f"ratio_{key}"] = round(before / after, 3)
    if o.inline:
        result.count("functions_inlined", ops.inline_functions(graph, ctx))
    return result
