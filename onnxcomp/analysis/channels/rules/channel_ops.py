"""Ops that keep the channel axis: normalizations, pooling, reductions over other axes, Softmax, LayerNormalization."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..analyzer import Analyzer, channel_rule, where
from ..model import FOLLOWER, Layout
from ._shared import ints, norm_axis, param_member

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


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
        if not param_member(an, node, i, 0, lay.elems, FOLLOWER, lay.elems):
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
    axes = ints(node, "axes", 1)
    if axes is False or rank is None:
        an.block(lay, f"{where(node)} reduces over axes that are not constant")
        return
    if not axes:
        if axes is not None or node.attrs.get("noop_with_empty_axes", 0):
            an.set_layout(node.outputs[0], lay)  # noop
            return
        axes = list(range(rank))
    axes = [norm_axis(a, rank) for a in axes]
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
    axis = norm_axis(int(node.attrs.get("axis", 1 if old else -1)), rank)
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
    axis = norm_axis(int(node.attrs.get("axis", -1)), rank)
    if lay.axis >= axis:
        an.block(lay, f"{where(node)} normalizes over the channel axis")
        return
    if an.block_extra_outputs(node, lay):
        return
    an.set_layout(node.outputs[0], lay)
