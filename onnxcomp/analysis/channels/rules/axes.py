"""Axis movers: Transpose, Squeeze, Unsqueeze, Flatten and Reshape move or split the channel axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp.graph import const_value

from ..analyzer import Analyzer, channel_rule, where
from ..model import FOLLOWER, RESHAPE, Layout
from ._shared import ints, norm_axis, prod, static

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


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
    axes = ints(node, "axes", 1)
    if lay is None or shape is None or axes is False:
        an.block(lay, f"{where(node)}: unknown shape or axes")
        return
    if axes is None:
        if not static(shape):
            an.block(lay, f"{where(node)}: unknown shape")
            return
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [norm_axis(a, len(shape)) for a in axes]
    if lay.axis in axes:
        an.block(lay, f"{where(node)} squeezes the channel axis")
        return
    an.set_layout(node.outputs[0], Layout(lay.axis - sum(1 for a in axes if a < lay.axis), lay.elems))


@channel_rule("Unsqueeze")
def _unsqueeze(an: Analyzer, node: gs.Node) -> None:
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    rank = an.rank(node.inputs[0])
    axes = ints(node, "axes", 1)
    if lay is None or rank is None or not axes:
        an.block(lay, f"{where(node)}: unknown rank or axes")
        return
    out_rank = rank + len(axes)
    axes_set = {norm_axis(a, out_rank) for a in axes}
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
    k = norm_axis(int(node.attrs.get("axis", 1)), len(shape))
    inner = shape[k:]
    if lay.axis < k or not static(inner):
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
    if not static(tail):
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
    if out.count(None) == 1 and static(in_shape):
        known = prod([d for d in out if d is not None])
        if known:
            out[out.index(None)] = prod(in_shape) // known
    total = prod(tail)
    b = next(
        (j for j in range(len(out)) if out[j] not in (None, 1) and static(out[j:]) and prod(out[j:]) == total), None
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
    an.member(node, RESHAPE, FOLLOWER, elems, input=1, axis=b)
    an.set_layout(node.outputs[0], Layout(b, elems))
