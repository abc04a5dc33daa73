"""The channel analyzer: walks the graph in topological order and applies each op's rule (``CHANNEL_RULES``,
keyed by op type; the rules live in :mod:`.rules`, one module per op family), then turns the coupled elements
into channels and groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from onnxcomp.graph import is_empty, is_standard, opset_version, toposort

from .model import FIXED, ChannelGroup, ChannelPlan, Layout, Member, Producer

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)


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
