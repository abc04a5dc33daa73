"""Physically remove channels: the edits of a channel plan's members (EDITS, keyed by member kind).

``apply_removal(graph, plan, removed)`` takes a boolean mask over the plan's global channels and, for
every member that loses positions, slices weights (producers' filters, BatchNormalization parameters,
per-channel constants, consumers' input channels, grouped and depthwise convolutions) and rewrites shapes
(Reshape targets, Split sizes, Slice bounds, Resize sizes). Members and layouts are updated to the
surviving positions, so removals can be applied one after another (prune-channels does, group by group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from onnxcomp.analysis.channels import GROUP, GROUPED_IN, MEMBER_KINDS, PARAM, RESHAPE, RESIZE, SLICE, SPLIT
from onnxcomp.graph import const_value, is_empty, make_constant, opset_version

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.channels import ChannelPlan, Member
    from onnxcomp.passes_api import PassContext

logger = logging.getLogger(__name__)

Edit = Callable[["gs.Graph", "Member", "np.ndarray"], None]
EDITS: dict[str, Edit] = {}


def edit(kind: str) -> Callable[[Edit], Edit]:
    def deco(fn: Edit) -> Edit:
        EDITS[kind] = fn
        return fn

    return deco


def set_const(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give input ``index`` of ``node`` new constant values (:func:`onnxcomp.graph.set_const`): a copy for this
    node is named after the old constant."""
    from onnxcomp import graph as g

    g.set_const(graph, node, index, values, f"{node.inputs[index].name}_pruned")


@edit(PARAM)
def _param(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    import numpy as np

    # W' = W[..., keep, ...] on the member's axis
    values = const_value(m.node.inputs[m.input])
    set_const(graph, m.node, m.input, np.compress(keep, values, axis=m.axis))


@edit(GROUPED_IN)
def _grouped_in(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    """Grouped convolution: the filters of group q read input channels q*Cg .. (q+1)*Cg - 1; each group
    drops its own removed channels (the same number in every group, so the weights stay rectangular)."""
    import numpy as np

    groups = int(m.info["groups"])
    w = const_value(m.node.inputs[m.input])
    mask = keep.reshape(groups, -1)
    counts = mask.sum(axis=1)
    if not (counts == counts[0]).all():
        raise ValueError(f"{m.node.name}: groups keep different channel counts {counts.tolist()}")
    rows = w.shape[0] // groups
    parts = [w[q * rows : (q + 1) * rows][:, mask[q]] for q in range(groups)]
    set_const(graph, m.node, m.input, np.concatenate(parts, axis=0))


@edit(GROUP)
def _group(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    # depthwise: one group per surviving input channel
    m.node.attrs["group"] = int(keep.sum())


@edit(RESHAPE)
def _reshape(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    shape = const_value(m.node.inputs[m.input]).copy()
    if shape[m.axis] > 0:  # -1 infers the new size, 0 copies an input dimension that shrank the same way
        shape[m.axis] = int(keep.sum())
        set_const(graph, m.node, m.input, shape)


@edit(SPLIT)
def _split(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    import numpy as np

    sizes, start, new = m.info["sizes"], 0, []
    for s in sizes:
        new.append(int(keep[start : start + s].sum()))
        start += s
    m.info["sizes"] = new
    node = m.node
    if opset_version(graph) >= 13:
        node.attrs.pop("num_outputs", None)
        values = np.array(new, dtype=np.int64)
        if len(node.inputs) > 1 and not is_empty(node.inputs[1]):
            set_const(graph, node, 1, values)
        elif len(node.inputs) > 1:
            node.inputs[1] = make_constant(graph, f"{node.name}_split", values)
        else:
            node.inputs.append(make_constant(graph, f"{node.name}_split", values))
    else:
        node.attrs["split"] = new


@edit(SLICE)
def _slice(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    import numpy as np

    k, start, end = m.info["index"], m.info["start"], m.info["end"]
    new_start = int(keep[:start].sum())
    new_end = new_start + int(keep[start:end].sum())
    m.info.update(start=new_start, end=new_end)
    node = m.node
    if opset_version(graph) >= 10:
        for index, value in ((1, new_start), (2, new_end)):
            values = const_value(node.inputs[index]).astype(np.int64).copy()
            values[k] = value
            set_const(graph, node, index, values)
    else:
        for key, value in (("starts", new_start), ("ends", new_end)):
            values = list(node.attrs[key])
            values[k] = value
            node.attrs[key] = values


@edit(RESIZE)
def _resize(graph: gs.Graph, m: Member, keep: np.ndarray) -> None:
    sizes = const_value(m.node.inputs[m.input]).copy()
    sizes[m.axis] = int(keep.sum())
    set_const(graph, m.node, m.input, sizes)


# every kind of member the channel analysis records has its edit here (checked when the module loads)
if set(EDITS) != MEMBER_KINDS:
    raise ImportError(f"prune edits {sorted(EDITS)} do not match the channel member kinds {sorted(MEMBER_KINDS)}")


def apply_removal(
    graph: gs.Graph, plan: ChannelPlan, removed: np.ndarray, ctx: PassContext | None = None, pass_name: str = ""
) -> int:
    """Remove the channels ``removed`` (bool mask over global channels); returns the number of edits."""
    edits = 0
    # a weight read by several members (two Convs sharing one initializer) that lose the same positions is
    # sliced once and stays shared: (source, kind, axis, groups, kept positions) -> (source, sliced tensor)
    sliced: dict[tuple, tuple] = {}
    for m in plan.members:
        keep = plan.keep(m.elems, removed)
        if keep.all():
            continue
        key = None
        if m.kind in (PARAM, GROUPED_IN):
            src = m.node.inputs[m.input]
            key = (id(src), m.kind, m.axis, m.info.get("groups"), keep.tobytes())
        if key is not None and key in sliced:
            m.node.inputs[m.input] = sliced[key][1]
        else:
            EDITS[m.kind](graph, m, keep)
            if key is not None:
                sliced[key] = (src, m.node.inputs[m.input])  # src kept alive: its id stays unique
        m.elems = m.elems[keep]
        edits += 1
        if ctx is not None:
            ctx.tag(m.node, pass_name, [m.node.name])
    # tensor shapes follow (value_info must agree with the new weights)
    tensors = graph.tensors()
    seen: dict[int, list[str]] = {}
    layouts = {}
    for name, lay in plan.layouts.items():
        seen.setdefault(id(lay), []).append(name)
        layouts[id(lay)] = lay
    for key, names in seen.items():
        lay = layouts[key]
        keep = plan.keep(lay.elems, removed)
        if keep.all():
            continue
        lay.elems = lay.elems[keep]
        for name in names:
            t = tensors.get(name)
            if t is not None and getattr(t, "shape", None) is not None and lay.axis < len(t.shape):
                shape = list(t.shape)
                shape[lay.axis] = len(lay.elems)
                t.shape = shape
    return edits
