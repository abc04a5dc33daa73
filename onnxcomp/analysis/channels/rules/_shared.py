"""Helpers the channel rules share: constant int lists, axes, and slicing members of constant inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onnxcomp.graph import const_value, is_empty

from ..analyzer import where
from ..model import PARAM

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from ..analyzer import Analyzer


def ints(node: gs.Node, attr: str, input_index: int | None) -> list[int] | bool | None:
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


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def prod(values: Sequence[int]) -> int:
    return int(math.prod(values))


def static(dims: Sequence[Any]) -> bool:
    return all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)


def param_member(
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
    an.member(node, PARAM, role, elems, input=index, axis=axis)
    return True
