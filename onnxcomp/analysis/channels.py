"""Channel dependency groups: which channel axes of which tensors must lose the same indices together.

The model (in the spirit of Torch-Pruning's dependency graph, done on the ONNX graph):

- Every prunable layer (a *producer*: Conv, ConvTranspose, Gemm or MatMul with constant weights) owns one
  *element* per output filter.
- A tensor that carries channels has a :class:`Layout`: along one axis, the element each position holds,
  or ``FIXED`` (-1) for a position no producer owns (a graph input's channel, for instance), never removed.
- Per-op rules (``CHANNEL_RULES``, keyed by op type) map layouts from inputs to outputs: identity
  (activations, BatchNormalization, pooling), offsets (Concat), ranges (Split, Slice), blocks (Flatten or
  Reshape into a Gemm: one channel becomes ``H*W`` features), repetition (a depthwise convolution with a
  channel multiplier), moved axes (Transpose, Squeeze, Unsqueeze). Element-wise ops between activations
  *couple* their inputs position by position: the elements at one position must be removed together
  (residual Add, x * Sigmoid(x), squeeze-excitation's Mul). Rules also record the *members*: the edits a
  removal needs (weights to slice, a Reshape target or Split sizes to rewrite).
- A *channel* is a class of coupled elements (what is removed as one unit); a *group* is a connected set
  of producers whose channels are tied together (a residual stream with all its producers). Constraints
  ride along: every Split/Slice output and every producer keeps at least one channel (segments), and a
  grouped convolution removes the same number of channels from each of its groups (partitions).
- An op no rule understands stops propagation: the group is blocked ("blocked by Shape /head/Shape"), as is
  a group that reaches a graph output or is coupled with channels no producer owns (graph inputs and
  outputs never change shape).

``analyze_channels(graph)`` returns a :class:`ChannelPlan`; passes choose channels to remove per group
and apply the members' edits (passes/prune/_apply.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from onnxcomp.fold import fill_note
from onnxcomp.graph import const_value, is_empty, is_standard, opset_version, toposort

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)

FIXED = -1  # a position no producer owns: never removed


# --------------------------------------------------------------------------------------------- records
@dataclasses.dataclass
class Layout:
    """The channel elements along one axis of a tensor (``FIXED`` where no producer owns the position)."""

    axis: int
    elems: np.ndarray


@dataclasses.dataclass
class Member:
    """One edit that removing channels requires.

    ``kind`` names the edit (passes/prune/_apply.py EDITS): "param" slices constant input ``input`` along
    ``axis``; "grouped_in" removes input channels of a grouped convolution; "group" sets a depthwise
    convolution's group attribute; "reshape", "split", "slice", "resize" rewrite shapes and sizes.
    ``elems`` holds the element of every position along the edited axis. ``role``: "producer" (output
    filters), "consumer" (input channels of a layer that contracts them) or "follower" (everything else).
    """

    node: gs.Node
    kind: str
    role: str
    elems: np.ndarray
    input: int = -1
    axis: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Producer:
    """A layer whose output filters own elements: weight input ``weight``, filter axis ``axis``."""

    node: gs.Node
    weight: int
    axis: int
    elems: np.ndarray
    output: str


@dataclasses.dataclass
class ChannelGroup:
    """Channels that producers share; ``blocked`` lists why the group cannot be pruned (empty: prunable).

    Channels are numbered globally ``offset .. offset + size - 1``; ``segments`` and ``partitions`` hold
    local indices (0 .. size-1): each segment keeps at least ``min(min_channels, len(segment))`` channels;
    each partition constraint (a 2-D array, one row per convolution group) loses the same number of
    channels in every row.
    """

    id: int
    name: str
    offset: int
    size: int
    producers: list[Producer] = dataclasses.field(default_factory=list)
    members: list[Member] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)
    segments: list[np.ndarray] = dataclasses.field(default_factory=list)
    partitions: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    def block(self, reason: str) -> None:
        if reason not in self.blocked:
            self.blocked.append(reason)

    def consumers(self) -> list[Member]:
        return [m for m in self.members if m.role == "consumer"]


@dataclasses.dataclass
class ChannelPlan:
    """Groups of a graph plus the element -> channel map used to turn a removal into edits."""

    groups: list[ChannelGroup]
    members: list[Member]
    layouts: dict[str, Layout]
    elem_channel: np.ndarray  # element id -> global channel id
    n_channels: int

    def channels(self, elems: np.ndarray) -> np.ndarray:
        """Global channel of every position (FIXED stays FIXED)."""
        import numpy as np

        elems = np.asarray(elems, dtype=np.int64)
        out = np.full(elems.shape, FIXED, dtype=np.int64)
        ok = elems >= 0
        out[ok] = self.elem_channel[elems[ok]]
        return out

    def keep(self, elems: np.ndarray, removed: np.ndarray) -> np.ndarray:
        """Mask of the positions that survive when the global channels ``removed`` (bool mask) go."""
        chans = self.channels(elems)
        out = chans < 0
        out[~out] = ~removed[chans[~out]]
        return out

    def group_of(self, channel: int) -> ChannelGroup:
        for g in self.groups:
            if g.offset <= channel < g.offset + g.size:
                return g
        raise KeyError(channel)

    def summary(self) -> list[str]:
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else "blocked: " + "; ".join(g.blocked)
            prods = ", ".join(p.node.name for p in g.producers)
            lines.append(f"{g.name}: {g.size} channels, producers [{prods}], {state}")
        return lines


# ------------------------------------------------------------------------------------------ the analyzer
Rule = Callable[["Analyzer", "gs.Node"], None]
CHANNEL_RULES: dict[str, Rule] = {}
PRODUCER_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def channel_rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register a rule for op types: ``rule(analyzer, node)`` maps the inputs' layouts to the outputs."""

    def deco(fn: Rule) -> Rule:
        for op in ops:
            CHANNEL_RULES[op] = fn
        return fn

    return deco


class Analyzer:
    """Walks the graph in topological order, applying each op's rule (state for the rules)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.opset = opset_version(graph)
        self.layouts: dict[str, Layout] = {}
        self.parent: list[int] = []  # union-find over elements
        self.elem_space: list[int] = []
        self.producers: list[Producer] = []
        self.members: list[Member] = []
        self.blocks: list[tuple[np.ndarray, str]] = []
        self.segments: list[np.ndarray] = []
        self.partitions: list[tuple[list[np.ndarray], str]] = []

    # -- tensors ---------------------------------------------------------------------------------
    def layout(self, tensor: Any) -> Layout | None:
        if tensor is None or is_empty(tensor):
            return None
        return self.layouts.get(tensor.name)

    def set_layout(self, tensor: Any, layout: Layout) -> None:
        self.layouts[tensor.name] = layout

    @staticmethod
    def shape(tensor: Any) -> list[Any] | None:
        shape = getattr(tensor, "shape", None)
        return list(shape) if shape is not None else None

    def rank(self, tensor: Any) -> int | None:
        shape = self.shape(tensor)
        return len(shape) if shape is not None else None

    def input_layout(self, node: gs.Node) -> tuple[Layout, int] | None:
        """The channel layout and rank of the node's first input; None when there is no layout or the rank is
        unknown (then the layout is blocked: its channel axis cannot be followed through the node)."""
        lay, rank = self.layout(node.inputs[0]), self.rank(node.inputs[0])
        if lay is None or rank is None:
            self.block(lay, f"unknown rank at {where(node)}")
            return None
        return lay, rank

    def dim(self, tensor: Any, axis: int) -> int | None:
        shape = self.shape(tensor)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        d = shape[axis]
        return int(d) if isinstance(d, (int,)) and not isinstance(d, bool) and d >= 0 else None

    # -- elements --------------------------------------------------------------------------------
    def new_space(self, node: gs.Node, weight: int, axis: int, size: int, output: Any) -> np.ndarray:
        """Elements for the ``size`` output filters of a producer."""
        import numpy as np

        start = len(self.parent)
        elems = np.arange(start, start + size, dtype=np.int64)
        self.parent.extend(range(start, start + size))
        self.elem_space.extend([len(self.producers)] * size)
        self.producers.append(Producer(node, weight, axis, elems, output.name))
        return elems

    def find(self, e: int) -> int:
        parent = self.parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def couple(self, a: np.ndarray, b: np.ndarray, node: gs.Node) -> None:
        """Positions of ``a`` and ``b`` must be removed together."""
        import numpy as np

        if a.shape != b.shape:
            self.block(np.concatenate([a, b]), f"channel counts differ at {where(node)}")
            return
        lone = []
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            if x == y:
                continue
            if x < 0 or y < 0:
                lone.append(max(x, y))
                continue
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)
        if lone:
            self.block(np.array(lone), f"coupled with channels no layer owns at {where(node)}")

    def block(self, elems: np.ndarray | Layout | None, reason: str) -> None:
        import numpy as np

        if elems is None:
            return
        arr = elems.elems if isinstance(elems, Layout) else np.asarray(elems)
        arr = arr[arr >= 0]
        if arr.size:
            self.blocks.append((arr, reason))

    def block_inputs(self, node: gs.Node, skip: Sequence[int], reason: str | None = None) -> None:
        """Block the layouts of every input except ``skip`` (inputs the rule does not map)."""
        for i, t in enumerate(node.inputs):
            if i in skip:
                continue
            lay = self.layout(t)
            if lay is not None:
                self.block(lay, reason or f"channels feed input {i} of {where(node)}")

    def block_extra_outputs(self, node: gs.Node, lay: Layout | None, first: int = 1) -> bool:
        """Block when an output the rule does not map (index >= first) is used; True if it blocked."""
        for t in node.outputs[first:]:
            if t.outputs or any(o is t for o in self.graph.outputs):
                self.block(lay, f"output {t.name} of {where(node)} depends on the channel count")
                return True
        return False

    def member(
        self, node: gs.Node, kind: str, role: str, elems: np.ndarray, input: int = -1, axis: int = 0, **info: Any
    ) -> None:
        self.members.append(Member(node, kind, role, elems, input, axis, dict(info)))

    def segment(self, elems: np.ndarray) -> None:
        self.segments.append(elems)

    def partition(self, parts: list[np.ndarray], node: gs.Node) -> None:
        self.partitions.append((parts, where(node)))

    # -- walking ---------------------------------------------------------------------------------
    def visit(self, node: gs.Node) -> None:
        rule = CHANNEL_RULES.get(node.op) if is_standard(node) else None
        has = any(self.layout(t) is not None for t in node.inputs)
        if rule is None:
            if has:
                for t in node.inputs:
                    self.block(self.layout(t), f"blocked by {node.op} {node.name}")
            return
        if has or node.op in PRODUCER_OPS:
            rule(self, node)

    def finish(self) -> ChannelPlan:
        import numpy as np

        graph = self.graph
        for t in graph.outputs:
            self.block(self.layout(t), f"reaches graph output {t.name}")
        for sub in graph.subgraphs(recursive=True):
            for node in sub.nodes:
                for t in node.inputs:
                    lay = self.layout(t)
                    if lay is not None:
                        self.block(lay, f"used inside the subgraph of {node.op} {node.name}")

        n = len(self.parent)
        root = np.array([self.find(e) for e in range(n)], dtype=np.int64)
        space = np.array(self.elem_space, dtype=np.int64)
        ns = len(self.producers)
        sparent = list(range(ns))

        def sfind(s: int) -> int:
            while sparent[s] != s:
                sparent[s] = sparent[sparent[s]]
                s = sparent[s]
            return s

        def sunion(a: int, b: int) -> None:
            ra, rb = sfind(a), sfind(b)
            if ra != rb:
                sparent[max(ra, rb)] = min(ra, rb)

        for e in np.nonzero(space != space[root])[0] if n else ():
            sunion(int(space[e]), int(space[root[e]]))
        linked = list(self.segments) + [np.concatenate(parts) for parts, _ in self.partitions]
        for arr in linked:
            spaces = np.unique(space[arr[arr >= 0]])
            for s in spaces[1:]:
                sunion(int(spaces[0]), int(s))

        group_spaces: dict[int, list[int]] = {}
        for s in range(ns):
            group_spaces.setdefault(sfind(s), []).append(s)
        chan_of_root = np.full(max(n, 1), FIXED, dtype=np.int64)
        chan_group: list[int] = []
        groups: list[ChannelGroup] = []
        offset = 0
        for gid, spaces in enumerate(group_spaces.values()):
            seq = np.concatenate([root[self.producers[s].elems] for s in spaces])
            uniq, first = np.unique(seq, return_index=True)
            order = uniq[np.argsort(first, kind="stable")]
            chan_of_root[order] = np.arange(offset, offset + len(order))
            prods = [self.producers[s] for s in spaces]
            name = prods[0].node.name or prods[0].output
            groups.append(ChannelGroup(gid, name, offset, len(order), producers=prods))
            chan_group.extend([gid] * len(order))
            offset += len(order)
        elem_channel = chan_of_root[root] if n else np.zeros(0, dtype=np.int64)
        chan_group_arr = np.array(chan_group, dtype=np.int64)

        def groups_of(elems: np.ndarray) -> list[int]:
            e = elems[elems >= 0]
            return [int(g) for g in np.unique(chan_group_arr[elem_channel[e]])] if e.size else []

        for m in self.members:
            for g in groups_of(m.elems):
                groups[g].members.append(m)
        for elems, reason in self.blocks:
            for g in groups_of(elems):
                groups[g].block(reason)
        for seg in self.segments:
            chans = np.unique(elem_channel[seg[seg >= 0]])
            if chans.size:
                g = groups[int(chan_group_arr[chans[0]])]
                g.segments.append(chans - g.offset)
        for parts, at in self.partitions:
            self._add_partition(groups, chan_group_arr, elem_channel, parts, at)
        for g in groups:
            for p in g.producers:
                g.segments.append(np.unique(elem_channel[p.elems]) - g.offset)
        return ChannelPlan(groups, self.members, self.layouts, elem_channel, offset)

    @staticmethod
    def _add_partition(
        groups: list[ChannelGroup], chan_group: np.ndarray, elem_channel: np.ndarray, parts: list[np.ndarray], at: str
    ) -> None:
        import numpy as np

        allpos = np.concatenate(parts)
        if (allpos < 0).all():
            return
        owned = allpos[allpos >= 0]
        gs_ = np.unique(chan_group[elem_channel[owned]])
        g = groups[int(gs_[0])]
        if (allpos < 0).any():
            g.block(f"{at} mixes prunable channels with channels no layer owns")
            return
        chans = [elem_channel[p] - g.offset for p in parts]
        flat = np.concatenate(chans)
        uniq, mult = np.unique(flat, return_counts=True)
        rows_u = [np.unique(c) for c in chans]
        if (mult != mult[0]).any() or sum(len(r) for r in rows_u) != len(uniq) or len({len(r) for r in rows_u}) != 1:
            g.block(f"{at}: coupled channels fall in different convolution groups")
            return
        # a channel repeated (depthwise multiplier) counts once: equal channels <=> equal positions per row
        rows = np.stack(rows_u)
        flat = rows.ravel()
        for other in g.partitions:
            common = np.intersect1d(other.ravel(), flat)
            if common.size == 0:
                continue
            same = other.shape == rows.shape and {frozenset(r) for r in other.tolist()} == {
                frozenset(r) for r in rows.tolist()
            }
            if not same:
                g.block(f"{at} constrains channels that another grouped convolution groups differently")
            return
        g.partitions.append(rows)


def where(node: gs.Node) -> str:
    return f"{node.op} {node.name}" if node.name else node.op


def analyze_channels(graph: gs.Graph) -> ChannelPlan:
    """Channel dependency groups of ``graph`` (sorted topologically in place)."""
    toposort(graph)
    an = Analyzer(graph)
    for node in graph.nodes:
        an.visit(node)
    return an.finish()


# ------------------------------------------------------------------------------------------ helpers
def _ints(node: gs.Node, attr: str, input_index: int | None) -> list[int] | bool | None:
    """An int list given as an input (newer opsets) or an attribute; None if absent, False if not constant."""
    if input_index is not None and input_index < len(node.inputs) and not is_empty(node.inputs[input_index]):
        v = const_value(node.inputs[input_index])
        if v is None:
            return False
        return [int(x) for x in v.ravel()]
    if attr in node.attrs:
        v = node.attrs[attr]
        return [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return None


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _prod(values: Sequence[int]) -> int:
    return int(math.prod(values))


def _static(dims: Sequence[Any]) -> bool:
    return all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)


def _param_member(
    an: Analyzer, node: gs.Node, index: int, axis: int, elems: np.ndarray, role: str, lay_for_block: np.ndarray
) -> bool:
    """Record slicing of constant input ``index`` along ``axis``; block when it is not a constant."""
    if index >= len(node.inputs) or is_empty(node.inputs[index]):
        return True
    value = const_value(node.inputs[index])
    if value is None:
        an.block(lay_for_block, f"input {index} of {where(node)} is not a constant")
        return False
    if value.ndim <= axis or value.shape[axis] != len(elems):
        an.block(lay_for_block, f"input {index} of {where(node)} has an unexpected shape {value.shape}")
        return False
    an.member(node, "param", role, elems, input=index, axis=axis)
    return True


# ---------------------------------------------------------------------------------- element-wise ops
ELEMENTWISE = (
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Swish",
    "Tanh",
    "Gelu",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Mish",
    "ThresholdedRelu",
    "Erf",
    "Abs",
    "Neg",
    "Sqrt",
    "Exp",
    "Log",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "Identity",
    "Cast",
    "Dropout",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Where",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "IsNaN",
    "IsInf",
)


@channel_rule(*ELEMENTWISE)
def _elementwise(an: Analyzer, node: gs.Node) -> None:
    """Broadcasting element-wise op: inputs with channels are coupled position by position; a constant
    with the channel dimension is sliced with them; a broadcast (size-1) dimension is left alone."""
    import numpy as np

    ins = [(i, t) for i, t in enumerate(node.inputs) if not is_empty(t)]
    laid = [(i, t, an.layout(t)) for i, t in ins if an.layout(t) is not None]
    ranks = [an.rank(t) for _, t in ins]
    out = node.outputs[0]
    out_rank = an.rank(out)
    if out_rank is None:
        out_rank = max((r for r in ranks if r is not None), default=None)
    if out_rank is None or any(an.rank(t) is None for _, t, _ in laid):
        for _, _, lay in laid:
            an.block(lay, f"unknown rank at {where(node)}")
        return
    positions = {out_rank - an.rank(t) + lay.axis for _, t, lay in laid}
    base = laid[0][2].elems
    if len(positions) != 1:
        for _, _, lay in laid:
            an.block(lay, f"channels on different axes meet at {where(node)}")
        return
    pos = positions.pop()
    if an.block_extra_outputs(node, laid[0][2]):
        return
    for _, _, lay in laid[1:]:
        an.couple(base, lay.elems, node)
    laid_ids = {i for i, _, _ in laid}
    for i, t in ins:
        if i in laid_ids:
            continue
        r = an.rank(t)
        if r is None:
            an.block(base, f"input {t.name} of {where(node)} has an unknown shape")
            continue
        ax = pos - (out_rank - r)
        if ax < 0:
            continue
        d = an.dim(t, ax)
        if d == 1:
            continue
        if const_value(t) is not None and d == len(base):
            an.member(node, "param", "follower", base, input=i, axis=ax)
        else:
            an.block(base, f"coupled with {t.name}, whose channels no layer owns, at {where(node)}")
    an.set_layout(out, Layout(pos, np.array(base)))


# --------------------------------------------------------------------------------- channel-axis ops
# op -> inputs holding per-channel parameters (sliced along their axis 0)
CHANNEL_OPS: dict[str, tuple[int, ...]] = {
    "BatchNormalization": (1, 2, 3, 4),
    "InstanceNormalization": (1, 2),
    "MaxPool": (),
    "AveragePool": (),
    "LpPool": (),
    "GlobalAveragePool": (),
    "GlobalMaxPool": (),
    "GlobalLpPool": (),
}


@channel_rule(*CHANNEL_OPS)
def _channel_op(an: Analyzer, node: gs.Node) -> None:
    """Per-channel op on axis 1 (normalization, pooling): identity on channels, parameters sliced."""
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    if lay is None:
        return
    if lay.axis != 1:
        an.block(lay, f"{where(node)} works on axis 1 but the channels are on axis {lay.axis}")
        return
    if an.block_extra_outputs(node, lay):
        return
    for i in CHANNEL_OPS[node.op]:
        if not _param_member(an, node, i, 0, lay.elems, "follower", lay.elems):
            return
    an.set_layout(node.outputs[0], lay)


@channel_rule(
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
def _reduce(an: Analyzer, node: gs.Node) -> None:
    """Reduction over other axes keeps the channels (the axis moves when keepdims=0)."""
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    if lay is None:
        return
    rank = an.rank(node.inputs[0])
    axes = _ints(node, "axes", 1)
    if axes is False or rank is None:
        an.block(lay, f"{where(node)} reduces over axes that are not constant")
        return
    if not axes:
        if axes is not None or node.attrs.get("noop_with_empty_axes", 0):
            an.set_layout(node.outputs[0], lay)  # noop
            return
        axes = list(range(rank))
    axes = [_norm_axis(a, rank) for a in axes]
    if lay.axis in axes:
        an.block(lay, f"{where(node)} reduces over the channel axis")
        return
    keep = node.attrs.get("keepdims", 1)
    axis = lay.axis if keep else lay.axis - sum(1 for a in axes if a < lay.axis)
    an.set_layout(node.outputs[0], Layout(axis, lay.elems))


@channel_rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(an: Analyzer, node: gs.Node) -> None:
    """Normalizing over another axis keeps channels independent; over the channel axis it does not."""
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    old = an.opset < 13
    axis = _norm_axis(int(node.attrs.get("axis", 1 if old else -1)), rank)
    if (old and lay.axis >= axis) or (not old and lay.axis == axis):
        an.block(lay, f"{where(node)} normalizes over the channel axis")
        return
    an.set_layout(node.outputs[0], lay)


@channel_rule("LayerNormalization")
def _layernorm(an: Analyzer, node: gs.Node) -> None:
    an.block_inputs(node, [0])
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    axis = _norm_axis(int(node.attrs.get("axis", -1)), rank)
    if lay.axis >= axis:
        an.block(lay, f"{where(node)} normalizes over the channel axis")
        return
    if an.block_extra_outputs(node, lay):
        return
    an.set_layout(node.outputs[0], lay)


# ------------------------------------------------------------------------------------- axis movers
@channel_rule("Transpose")
def _transpose(an: Analyzer, node: gs.Node) -> None:
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    perm = list(node.attrs.get("perm", list(range(rank))[::-1]))
    an.set_layout(node.outputs[0], Layout(perm.index(lay.axis), lay.elems))


@channel_rule("Squeeze")
def _squeeze(an: Analyzer, node: gs.Node) -> None:
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    shape = an.shape(node.inputs[0])
    axes = _ints(node, "axes", 1)
    if lay is None or shape is None or axes is False:
        an.block(lay, f"{where(node)}: unknown shape or axes")
        return
    if axes is None:
        if not _static(shape):
            an.block(lay, f"{where(node)}: unknown shape")
            return
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [_norm_axis(a, len(shape)) for a in axes]
    if lay.axis in axes:
        an.block(lay, f"{where(node)} squeezes the channel axis")
        return
    an.set_layout(node.outputs[0], Layout(lay.axis - sum(1 for a in axes if a < lay.axis), lay.elems))


@channel_rule("Unsqueeze")
def _unsqueeze(an: Analyzer, node: gs.Node) -> None:
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    rank = an.rank(node.inputs[0])
    axes = _ints(node, "axes", 1)
    if lay is None or rank is None or not axes:
        an.block(lay, f"{where(node)}: unknown rank or axes")
        return
    out_rank = rank + len(axes)
    axes_set = {_norm_axis(a, out_rank) for a in axes}
    old = [i for i in range(out_rank) if i not in axes_set]
    an.set_layout(node.outputs[0], Layout(old[lay.axis], lay.elems))


@channel_rule("Flatten")
def _flatten(an: Analyzer, node: gs.Node) -> None:
    """[N, C, H, W] -> [N, C*H*W]: each channel becomes a block of H*W features."""
    import numpy as np

    lay = an.layout(node.inputs[0])
    shape = an.shape(node.inputs[0])
    if lay is None or shape is None:
        an.block(lay, f"{where(node)}: unknown shape")
        return
    k = _norm_axis(int(node.attrs.get("axis", 1)), len(shape))
    inner = shape[k:]
    if lay.axis < k or not _static(inner):
        an.block(lay, f"{where(node)} merges the channel axis with the batch or an unknown dimension")
        return
    view = [1] * len(inner)
    view[lay.axis - k] = -1
    elems = np.broadcast_to(lay.elems.reshape(view), inner).ravel().copy()
    an.set_layout(node.outputs[0], Layout(1, elems))


@channel_rule("Reshape")
def _reshape(an: Analyzer, node: gs.Node) -> None:
    """Reshape that keeps, merges (flatten) or un-merges (unflatten) the channel axis with inner axes.

    The channel axis ``a`` of the input and an output axis ``b`` must cover the same trailing elements
    (``prod(in[a:]) == prod(out[b:])``); every position of axis ``b`` must then hold a single channel.
    """
    import numpy as np

    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    in_shape = an.shape(node.inputs[0])
    target = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if lay is None or in_shape is None or target is None:
        an.block(lay, f"{where(node)}: unknown input shape or a target shape that is not constant")
        return
    a = lay.axis
    tail = in_shape[a:]
    if not _static(tail):
        an.block(lay, f"{where(node)}: unknown inner dimensions")
        return
    target = [int(v) for v in target.ravel()]
    allowzero = int(node.attrs.get("allowzero", 0))
    out_known = an.shape(node.outputs[0]) or []
    out: list[int | None] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            d = in_shape[i] if i < len(in_shape) else None
            out.append(d if isinstance(d, int) else None)
        elif v == -1:
            d = out_known[i] if i < len(out_known) else None
            out.append(d if isinstance(d, int) and d >= 0 else None)
        else:
            out.append(v)
    if out.count(None) == 1 and _static(in_shape):
        known = _prod([d for d in out if d is not None])
        if known:
            out[out.index(None)] = _prod(in_shape) // known
    total = _prod(tail)
    b = next(
        (j for j in range(len(out)) if out[j] not in (None, 1) and _static(out[j:]) and _prod(out[j:]) == total), None
    )  # type: ignore[arg-type]
    if b is None:
        an.block(lay, f"{where(node)} splits or moves the channel axis")
        return
    inner_in = total // len(lay.elems)
    nb = int(out[b])  # type: ignore[arg-type]
    inner_out = total // nb
    q = np.arange(nb)
    first = (q * inner_out) // inner_in
    last = ((q + 1) * inner_out - 1) // inner_in
    for j in np.nonzero(first != last)[0]:
        seg = lay.elems[first[j] : last[j] + 1]
        if not (seg == seg[0]).all():
            an.block(lay, f"{where(node)} splits the channel axis over several axes (heads, channel shuffle)")
            return
    if target[b] == 0 and not allowzero and not (b == a and nb == len(lay.elems)):
        an.block(lay, f"{where(node)} copies a dimension that changes")
        return
    if a < len(target) and a != b and target[a] == 0 and not allowzero:
        an.block(lay, f"{where(node)} copies the channel dimension to another axis")
        return
    elems = lay.elems[first]
    an.member(node, "reshape", "follower", elems, input=1, axis=b)
    an.set_layout(node.outputs[0], Layout(b, elems))


# -------------------------------------------------------------------------------- concat and split
@channel_rule("Concat")
def _concat(an: Analyzer, node: gs.Node) -> None:
    """On the channel axis: offsets (inputs without channels are FIXED); on another axis: coupling."""
    import numpy as np

    ins = list(node.inputs)
    laid = [an.layout(t) for t in ins]
    rank = an.rank(node.outputs[0]) or next((an.rank(t) for t in ins if an.rank(t) is not None), None)
    if rank is None:
        for lay in laid:
            an.block(lay, f"unknown rank at {where(node)}")
        return
    axis = _norm_axis(int(node.attrs["axis"]), rank)
    axes = {lay.axis for lay in laid if lay is not None}
    if len(axes) != 1:
        for lay in laid:
            an.block(lay, f"channels on different axes meet at {where(node)}")
        return
    cax = axes.pop()
    if cax == axis:
        parts = []
        for t, lay in zip(ins, laid, strict=True):
            if lay is not None:
                parts.append(lay.elems)
                continue
            d = an.dim(t, axis)
            if d is None:
                for other in laid:
                    an.block(other, f"{where(node)}: input {t.name} has an unknown size")
                return
            parts.append(np.full(d, FIXED, dtype=np.int64))
        an.set_layout(node.outputs[0], Layout(axis, np.concatenate(parts)))
        return
    base = next(lay for lay in laid if lay is not None)
    for t, lay in zip(ins, laid, strict=True):
        if lay is not None:
            an.couple(base.elems, lay.elems, node)
        elif an.dim(t, cax) != 1:
            an.block(base, f"coupled with {t.name}, whose channels no layer owns, at {where(node)}")
    an.set_layout(node.outputs[0], base)


@channel_rule("Split")
def _split(an: Analyzer, node: gs.Node) -> None:
    """On the channel axis: each output takes its range (keeps >= 1 channel); elsewhere: identity."""
    an.block_inputs(node, [0])
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    axis = _norm_axis(int(node.attrs.get("axis", 0)), rank)
    outs = node.outputs
    if axis != lay.axis:
        for t in outs:
            an.set_layout(t, lay)
        return
    total = len(lay.elems)
    sizes = _ints(node, "split", 1)
    if sizes is False:
        an.block(lay, f"{where(node)}: split sizes are not constant")
        return
    if sizes is None:
        n = int(node.attrs.get("num_outputs", len(outs)))
        chunk = -(-total // n)
        sizes = [min(chunk, total - i * chunk) for i in range(n)]
    if sum(sizes) != total or len(sizes) != len(outs):
        an.block(lay, f"{where(node)}: split sizes {sizes} do not match {total} channels")
        return
    start = 0
    for t, s in zip(outs, sizes, strict=True):
        part = lay.elems[start : start + s]
        an.set_layout(t, Layout(axis, part))
        an.segment(part)
        start += s
    an.member(node, "split", "follower", lay.elems, axis=axis, sizes=list(sizes))


@channel_rule("Slice")
def _slice(an: Analyzer, node: gs.Node) -> None:
    """A unit-step slice of the channel axis keeps its range (>= 1 channel); other axes: identity."""
    an.block_inputs(node, [0])
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    if an.opset >= 10:
        starts, ends, axes, steps = (_ints(node, "", i) for i in (1, 2, 3, 4))
    else:
        starts, ends, axes = (_ints(node, k, None) for k in ("starts", "ends", "axes"))
        steps = None
    if starts is False or ends is False or axes is False or steps is False or not starts or not ends:
        an.block(lay, f"{where(node)}: slice bounds are not constant")
        return
    axes = [_norm_axis(a, rank) for a in (axes or range(len(starts)))]
    if lay.axis not in axes:
        an.set_layout(node.outputs[0], lay)
        return
    k = axes.index(lay.axis)
    if steps and steps[k] != 1:
        an.block(lay, f"{where(node)} slices the channel axis with a step")
        return
    n = len(lay.elems)
    start, end = starts[k], ends[k]
    start = min(max(start + n if start < 0 else start, 0), n)
    end = min(max(end + n if end < 0 else end, 0), n)
    part = lay.elems[start : max(start, end)]
    if not part.size:
        an.block(lay, f"{where(node)} takes no channel")
        return
    an.member(node, "slice", "follower", lay.elems, axis=lay.axis, index=k, start=start, end=max(start, end))
    an.segment(part)
    an.set_layout(node.outputs[0], Layout(lay.axis, part))


# ------------------------------------------------------------------------------- spatial reshaping
@channel_rule("Pad")
def _pad(an: Analyzer, node: gs.Node) -> None:
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    rank = an.rank(node.inputs[0])
    pads = _ints(node, "pads", 1)
    axes = _ints(node, "", 3)
    if lay is None or rank is None or not pads or axes is False:
        an.block(lay, f"{where(node)}: unknown rank or pads that are not constant")
        return
    axes = [_norm_axis(a, rank) for a in (axes or range(rank))]
    if lay.axis in axes:
        k = axes.index(lay.axis)
        if pads[k] != 0 or pads[k + len(axes)] != 0:
            an.block(lay, f"{where(node)} pads the channel axis")
            return
    an.set_layout(node.outputs[0], lay)


@channel_rule("Resize", "Upsample")
def _resize(an: Analyzer, node: gs.Node) -> None:
    """Resizing other axes keeps channels (a constant ``sizes`` input is rewritten)."""
    import numpy as np

    an.block_inputs(node, [0])
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    axes = [_norm_axis(int(a), rank) for a in node.attrs.get("axes", range(rank))]
    if lay.axis not in axes:
        an.set_layout(node.outputs[0], lay)
        return
    k = axes.index(lay.axis)
    new_style = node.op == "Resize" and an.opset >= 11
    sizes_i, scales_i = (3, 2) if new_style else (None, 1)
    if sizes_i is not None and sizes_i < len(node.inputs) and not is_empty(node.inputs[sizes_i]):
        sizes = const_value(node.inputs[sizes_i])
        if sizes is None or int(sizes.ravel()[k]) != len(lay.elems):
            an.block(lay, f"{where(node)}: output sizes are not constant or resize the channel axis")
            return
        an.member(node, "resize", "follower", lay.elems, input=sizes_i, axis=k)
        an.set_layout(node.outputs[0], lay)
        return
    if scales_i < len(node.inputs) and not is_empty(node.inputs[scales_i]):
        scales = const_value(node.inputs[scales_i])
    else:
        scales = np.asarray(node.attrs["scales"]) if "scales" in node.attrs else None
    if scales is None or float(np.asarray(scales).ravel()[k]) != 1.0:
        an.block(lay, f"{where(node)}: scales are not constant or scale the channel axis")
        return
    an.set_layout(node.outputs[0], lay)


# ---------------------------------------------------------------------------------------- layers
@channel_rule("Conv")
def _conv(an: Analyzer, node: gs.Node) -> None:
    """Conv: a consumer of its input channels and a producer of its filters.

    group == 1: weights [Cout, Cin, k...] sliced on axis 1 (consumer) and axis 0 (producer).
    Depthwise (group == Cin, one input channel per group): no filters of its own; output channel
    ``c*m + j`` follows input channel ``c`` (lockstep), weights and group attribute follow.
    Grouped (1 < group < Cin): every group loses the same number of input channels and of filters.
    """
    import numpy as np

    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0], f"channels feed the weights of {where(node)}")
    w = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    y = node.outputs[0]
    if w is None or w.ndim < 3:
        note = fill_note(node.inputs[1]) if len(node.inputs) > 1 else ""
        an.block(lay, f"weights of {where(node)} are not constant{note}")
        return
    group = int(node.attrs.get("group", 1))
    cout, cin_g = int(w.shape[0]), int(w.shape[1])
    cin = cin_g * group
    if lay is not None and (lay.axis != 1 or len(lay.elems) != cin):
        an.block(lay, f"{where(node)} reads channels on axis {lay.axis}")
        lay = None
    has_bias = len(node.inputs) > 2 and not is_empty(node.inputs[2])
    if has_bias and const_value(node.inputs[2]) is None:
        an.block(lay, f"bias of {where(node)} is not constant")
        return
    if group == 1:
        if lay is not None:
            an.member(node, "param", "consumer", lay.elems, input=1, axis=1)
        out = an.new_space(node, 1, 0, cout, y)
        an.member(node, "param", "producer", out, input=1, axis=0)
        if has_bias:
            an.member(node, "param", "producer", out, input=2, axis=0)
        an.set_layout(y, Layout(1, out))
        return
    if cin_g == 1 and group == cin:
        if lay is None:
            return
        out = np.repeat(lay.elems, cout // cin)
        an.member(node, "param", "follower", out, input=1, axis=0)
        if has_bias:
            an.member(node, "param", "follower", out, input=2, axis=0)
        an.member(node, "group", "follower", lay.elems)
        an.set_layout(y, Layout(1, out))
        return
    if lay is not None:
        an.member(node, "grouped_in", "consumer", lay.elems, input=1, axis=1, groups=group)
        an.partition(list(lay.elems.reshape(group, cin_g)), node)
    out = an.new_space(node, 1, 0, cout, y)
    an.member(node, "param", "producer", out, input=1, axis=0)
    if has_bias:
        an.member(node, "param", "producer", out, input=2, axis=0)
    an.partition(list(out.reshape(group, cout // group)), node)
    an.set_layout(y, Layout(1, out))


@channel_rule("ConvTranspose")
def _conv_transpose(an: Analyzer, node: gs.Node) -> None:
    """ConvTranspose (group 1): weights [Cin, Cout, k...]: consumer on axis 0, producer on axis 1."""
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0], f"channels feed the weights of {where(node)}")
    w = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    has_bias = len(node.inputs) > 2 and not is_empty(node.inputs[2])
    group = int(node.attrs.get("group", 1))
    if w is None or w.ndim < 3 or group != 1 or (has_bias and const_value(node.inputs[2]) is None):
        an.block(lay, f"{where(node)}: grouped or non-constant weights")
        return
    if lay is not None and (lay.axis != 1 or len(lay.elems) != w.shape[0]):
        an.block(lay, f"{where(node)} reads channels on axis {lay.axis}")
        lay = None
    if lay is not None:
        an.member(node, "param", "consumer", lay.elems, input=1, axis=0)
    y = node.outputs[0]
    out = an.new_space(node, 1, 1, int(w.shape[1]), y)
    an.member(node, "param", "producer", out, input=1, axis=1)
    if has_bias:
        an.member(node, "param", "producer", out, input=2, axis=0)
    an.set_layout(y, Layout(1, out))


@channel_rule("Gemm")
def _gemm(an: Analyzer, node: gs.Node) -> None:
    """Gemm A[M,K] @ B: a consumer of A's K features (B sliced on its K axis) and a producer of N."""
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0], f"channels feed the weights or bias of {where(node)}")
    b = const_value(node.inputs[1])
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    if b is None or b.ndim != 2 or trans_a:
        an.block(lay, f"{where(node)}: transposed input or non-constant weights")
        return
    k_axis, n_axis = (1, 0) if trans_b else (0, 1)
    if lay is not None and (lay.axis != 1 or len(lay.elems) != b.shape[k_axis]):
        an.block(lay, f"{where(node)} reads channels on axis {lay.axis}")
        lay = None
    if lay is not None:
        an.member(node, "param", "consumer", lay.elems, input=1, axis=k_axis)
    c = node.inputs[2] if len(node.inputs) > 2 and not is_empty(node.inputs[2]) else None
    n = int(b.shape[n_axis])
    cv = const_value(c) if c is not None else None
    if c is not None and cv is None:
        return  # a non-constant C: the filters stay
    y = node.outputs[0]
    out = an.new_space(node, 1, n_axis, n, y)
    an.member(node, "param", "producer", out, input=1, axis=n_axis)
    if cv is not None and cv.ndim >= 1 and cv.shape[-1] == n and n > 1:
        an.member(node, "param", "producer", out, input=2, axis=cv.ndim - 1)
    an.set_layout(y, Layout(1, out))


@channel_rule("MatMul")
def _matmul(an: Analyzer, node: gs.Node) -> None:
    """MatMul X[..., K] @ W[K, N] (W constant): consumer of K (W axis -2), producer of N (W axis -1)."""
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0], f"channels feed the right operand of {where(node)}")
    w = const_value(node.inputs[1])
    rank = an.rank(node.inputs[0])
    if w is None or w.ndim < 2 or rank is None or rank < 2:
        an.block(lay, f"{where(node)}: right operand not a constant matrix")
        return
    if lay is not None and (lay.axis != rank - 1 or len(lay.elems) != w.shape[-2]):
        an.block(lay, f"{where(node)} keeps the channel axis in its rows")
        lay = None
    if lay is not None:
        an.member(node, "param", "consumer", lay.elems, input=1, axis=w.ndim - 2)
    y = node.outputs[0]
    out_rank = an.rank(y) or max(rank, w.ndim)
    out = an.new_space(node, 1, w.ndim - 1, int(w.shape[-1]), y)
    an.member(node, "param", "producer", out, input=1, axis=w.ndim - 1)
    an.set_layout(y, Layout(out_rank - 1, out))
