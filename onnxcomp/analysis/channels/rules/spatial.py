"""Spatial reshaping: Pad and Resize keep the channels (Resize's sizes input is rewritten)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp.graph import const_value, is_empty

from ..analyzer import Analyzer, channel_rule, where
from ..model import FOLLOWER, RESIZE
from ._shared import ints, norm_axis

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@channel_rule("Pad")
def _pad(an: Analyzer, node: gs.Node) -> None:
    lay = an.layout(node.inputs[0])
    an.block_inputs(node, [0])
    rank = an.rank(node.inputs[0])
    pads = ints(node, "pads", 1)
    axes = ints(node, "", 3)
    if lay is None or rank is None or not pads or axes is False:
        an.block(lay, f"{where(node)}: unknown rank or pads that are not constant")
        return
    axes = [norm_axis(a, rank) for a in (axes or range(rank))]
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
    axes = [norm_axis(int(a), rank) for a in node.attrs.get("axes", range(rank))]
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
        an.member(node, RESIZE, FOLLOWER, lay.elems, input=sizes_i, axis=k)
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
