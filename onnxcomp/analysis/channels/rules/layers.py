"""The layers: Conv, ConvTranspose, Gemm and MatMul produce channels (their filters) and consume them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp.fold import fill_note
from onnxcomp.graph import const_value, is_empty

from ..analyzer import Analyzer, channel_rule, where
from ..model import CONSUMER, FOLLOWER, GROUP, GROUPED_IN, PARAM, PRODUCER, Layout

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


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
            an.member(node, PARAM, CONSUMER, lay.elems, input=1, axis=1)
        out = an.new_space(node, 1, 0, cout, y)
        an.member(node, PARAM, PRODUCER, out, input=1, axis=0)
        if has_bias:
            an.member(node, PARAM, PRODUCER, out, input=2, axis=0)
        an.set_layout(y, Layout(1, out))
        return
    if cin_g == 1 and group == cin:
        if lay is None:
            return
        out = np.repeat(lay.elems, cout // cin)
        an.member(node, PARAM, FOLLOWER, out, input=1, axis=0)
        if has_bias:
            an.member(node, PARAM, FOLLOWER, out, input=2, axis=0)
        an.member(node, GROUP, FOLLOWER, lay.elems)
        an.set_layout(y, Layout(1, out))
        return
    if lay is not None:
        an.member(node, GROUPED_IN, CONSUMER, lay.elems, input=1, axis=1, groups=group)
        an.partition(list(lay.elems.reshape(group, cin_g)), node)
    out = an.new_space(node, 1, 0, cout, y)
    an.member(node, PARAM, PRODUCER, out, input=1, axis=0)
    if has_bias:
        an.member(node, PARAM, PRODUCER, out, input=2, axis=0)
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
        an.member(node, PARAM, CONSUMER, lay.elems, input=1, axis=0)
    y = node.outputs[0]
    out = an.new_space(node, 1, 1, int(w.shape[1]), y)
    an.member(node, PARAM, PRODUCER, out, input=1, axis=1)
    if has_bias:
        an.member(node, PARAM, PRODUCER, out, input=2, axis=0)
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
        an.member(node, PARAM, CONSUMER, lay.elems, input=1, axis=k_axis)
    c = node.inputs[2] if len(node.inputs) > 2 and not is_empty(node.inputs[2]) else None
    n = int(b.shape[n_axis])
    cv = const_value(c) if c is not None else None
    if c is not None and cv is None:
        return  # a non-constant C: the filters stay
    y = node.outputs[0]
    out = an.new_space(node, 1, n_axis, n, y)
    an.member(node, PARAM, PRODUCER, out, input=1, axis=n_axis)
    if cv is not None and cv.ndim >= 1 and cv.shape[-1] == n and n > 1:
        an.member(node, PARAM, PRODUCER, out, input=2, axis=cv.ndim - 1)
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
        an.member(node, PARAM, CONSUMER, lay.elems, input=1, axis=w.ndim - 2)
    y = node.outputs[0]
    out_rank = an.rank(y) or max(rank, w.ndim)
    out = an.new_space(node, 1, w.ndim - 1, int(w.shape[-1]), y)
    an.member(node, PARAM, PRODUCER, out, input=1, axis=w.ndim - 1)
    an.set_layout(y, Layout(out_rank - 1, out))
