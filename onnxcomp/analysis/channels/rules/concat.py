"""Concat, Split and Slice: channels at offsets, in ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..analyzer import Analyzer, channel_rule, where
from ..model import FIXED, FOLLOWER, SLICE, SPLIT, Layout
from ._shared import ints, norm_axis

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


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
    axis = norm_axis(int(node.attrs["axis"]), rank)
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
    axis = norm_axis(int(node.attrs.get("axis", 0)), rank)
    outs = node.outputs
    if axis != lay.axis:
        for t in outs:
            an.set_layout(t, lay)
        return
    total = len(lay.elems)
    sizes = ints(node, "split", 1)
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
    an.member(node, SPLIT, FOLLOWER, lay.elems, axis=axis, sizes=list(sizes))


@channel_rule("Slice")
def _slice(an: Analyzer, node: gs.Node) -> None:
    """A unit-step slice of the channel axis keeps its range (>= 1 channel); other axes: identity."""
    an.block_inputs(node, [0])
    found = an.input_layout(node)
    if found is None:
        return
    lay, rank = found
    if an.opset >= 10:
        starts, ends, axes, steps = (ints(node, "", i) for i in (1, 2, 3, 4))
    else:
        starts, ends, axes = (ints(node, k, None) for k in ("starts", "ends", "axes"))
        steps = None
    if starts is False or ends is False or axes is False or steps is False or not starts or not ends:
        an.block(lay, f"{where(node)}: slice bounds are not constant")
        return
    axes = [norm_axis(a, rank) for a in (axes or range(len(starts)))]
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
    an.member(node, SLICE, FOLLOWER, lay.elems, axis=lay.axis, index=k, start=start, end=max(start, end))
    an.segment(part)
    an.set_layout(node.outputs[0], Layout(lay.axis, part))
