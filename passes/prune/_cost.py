"""FLOPs, parameters and roofline time of a graph under a candidate channel removal, without touching the graph.

Every node's cost comes from the core registry ``onnxcomp.cost.FLOPS`` fed with the shapes the node would
have after the removal: a tensor with a channel layout loses its removed positions on the layout's axis, a
constant loses them on every axis a member slices. Symbolic dimensions (a dynamic batch) count as 1, so
the numbers are per sample; ``--input-shape`` makes them exact for other sizes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any

from onnxcomp.analysis.channels import GROUPED_IN, PARAM
from onnxcomp.cost import roofline_seconds

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.channels import ChannelPlan
    from onnxcomp.cost import Hardware

logger = logging.getLogger(__name__)


class _NodeShim:
    """The two fields of a NodeProto the cost registry reads (op_type, attribute)."""

    def __init__(self, node: gs.Node) -> None:
        import onnx

        self.op_type = node.op
        self.attribute = []
        for key, value in node.attrs.items():
            try:
                self.attribute.append(onnx.helper.make_attribute(key, value))
            except (TypeError, ValueError):
                continue


@dataclasses.dataclass
class NodeCost:
    node: Any
    params: int
    flops: int
    seconds: float = 0.0  # roofline time on the cost model's hardware profile (0 without one)


class CostModel:
    """Per-node FLOPs/params of ``graph`` for a removal mask over the plan's global channels."""

    def __init__(self, graph: gs.Graph, plan: ChannelPlan | None = None, hardware: Hardware | None = None) -> None:
        """``hardware``: also each node's roofline time on that profile (onnxcomp.cost.roofline_seconds)."""
        from onnxcomp.cost import FLOPS
        from onnxcomp.graph import is_const, is_empty

        if plan is None:
            plan = _empty_plan()
        self.plan = plan
        self.hardware = hardware
        self._chan_cache: dict[int, np.ndarray] = {}
        overrides: dict[tuple[int, int], list[Any]] = {}
        for m in plan.members:
            if m.kind in (PARAM, GROUPED_IN):
                overrides.setdefault((id(m.node), m.input), []).append(m)
        self.entries = []
        for node in graph.nodes:
            fn = FLOPS.get(node.op)
            ins = []
            for i, t in enumerate(node.inputs):
                if is_empty(t):
                    ins.append(None)
                    continue
                ins.append((_base_shape(t), overrides.get((id(node), i), []), plan.layouts.get(t.name), is_const(t)))
            outs = [(_base_shape(t), [], plan.layouts.get(t.name), False) for t in node.outputs]
            self.entries.append((node, _NodeShim(node) if fn or hardware else None, fn, ins, outs))

    def _channels(self, elems: np.ndarray) -> np.ndarray:
        key = id(elems)
        hit = self._chan_cache.get(key)
        if hit is None or hit[0] is not elems:
            hit = (elems, self.plan.channels(elems))
            self._chan_cache[key] = hit
        return hit[1]

    def _kept(self, elems: np.ndarray, removed: np.ndarray) -> int:
        chans = self._channels(elems)
        owned = chans[chans >= 0]
        return int(len(chans) - removed[owned].sum())

    def _shape(self, spec: Any, removed: np.ndarray) -> tuple[int, ...] | None:
        if spec is None:
            return None
        shape, members, layout, _ = spec
        if shape is None:
            return None
        shape = list(shape)
        if layout is not None and layout.axis < len(shape):
            shape[layout.axis] = self._kept(layout.elems, removed)
        for m in members:
            kept = self._kept(m.elems, removed)
            if m.kind == GROUPED_IN:
                groups = int(m.info["groups"])
                shape[m.axis] = kept // groups
            elif m.axis < len(shape):
                shape[m.axis] = kept
        return tuple(shape)

    def nodes(self, removed: np.ndarray) -> list[NodeCost]:
        out = []
        for node, shim, fn, ins, outs in self.entries:
            in_shapes = [self._shape(s, removed) for s in ins]
            params = sum(
                math.prod(sh) for s, sh in zip(ins, in_shapes, strict=True) if s is not None and s[3] and sh is not None
            )
            flops, seconds = 0, 0.0
            out_shapes = [self._shape(s, removed) for s in outs] if fn is not None or self.hardware else []
            if fn is not None:
                try:
                    flops = int(fn(shim, in_shapes, out_shapes))
                except (TypeError, ValueError, IndexError):
                    flops = 0
            if self.hardware is not None and not all(s is None or s[3] for s in ins):  # (constants only: folded)
                seconds = roofline_seconds(shim, in_shapes, out_shapes, flops, self.hardware)
            out.append(NodeCost(node, int(params), flops, seconds))
        return out

    def total(self, removed: np.ndarray) -> tuple[int, int]:
        """(FLOPs, params) of the whole graph."""
        costs = self.nodes(removed)
        return sum(c.flops for c in costs), sum(c.params for c in costs)

    def seconds(self, removed: np.ndarray) -> float:
        """Roofline time of the whole graph on the hardware profile (its nodes one after another)."""
        return sum(c.seconds for c in self.nodes(removed))


def _base_shape(tensor: Any) -> tuple[int, ...] | None:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else 1 for d in shape)


def _empty_plan() -> ChannelPlan:
    import numpy as np

    from onnxcomp.analysis.channels import ChannelPlan

    return ChannelPlan([], [], {}, np.zeros(0, dtype=np.int64), 0)


def current_costs(graph: gs.Graph) -> dict[int, NodeCost]:
    """FLOPs and params of every node of the graph as it is now, keyed by id(node)."""
    import numpy as np

    return {id(c.node): c for c in CostModel(graph).nodes(np.zeros(0, dtype=bool))}
