"""Element-wise ops: activations pass channels through; binary ops between activations couple their inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcomp.graph import const_value, is_empty

from ..analyzer import Analyzer, channel_rule, where
from ..model import FOLLOWER, PARAM, Layout

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


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
            an.member(node, PARAM, FOLLOWER, base, input=i, axis=ax)
        else:
            an.block(base, f"coupled with {t.name}, whose channels no layer owns, at {where(node)}")
    an.set_layout(out, Layout(pos, np.array(base)))
