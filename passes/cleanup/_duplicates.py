"""Duplicates of the ``eliminate`` pass: equal initializers merged, and common subexpressions (CSE)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onnxcomp.fold import NONDETERMINISTIC
from onnxcomp.graph import STANDARD_DOMAINS, is_empty, is_graph_output, label, peek_values
from onnxcomp.ops import DOMAIN

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

    from onnxcomp.passes_api import PassResult

# Deterministic domains whose nodes may be merged when they compute the same thing from the same inputs.
CSE_DOMAINS = (*STANDARD_DOMAINS, DOMAIN)


def _hashable(value: Any) -> Any:
    """A hashable key for an attribute value, or raise TypeError (subgraphs, attribute references)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    if isinstance(value, (bool, int, float, str, bytes)) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_hashable(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, gs.Constant):
        v = value.values
        return ("tensor", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str, value.item())
    raise TypeError(f"unhashable attribute {type(value).__name__}")


def _node_key(node: gs.Node) -> tuple[Any, ...] | None:
    try:
        attrs = tuple(sorted((k, _hashable(v)) for k, v in node.attrs.items()))
    except TypeError:
        return None
    inputs = tuple(None if is_empty(t) else id(t) for t in node.inputs)
    outputs = tuple(is_empty(t) for t in node.outputs)
    return (node.op, node.domain or "", inputs, outputs, attrs)


def _rewire(old: Any, new: Any) -> None:
    """Every consumer of ``old`` (subgraph nodes included: they share the tensor object) reads ``new``."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new


def _sample(values: np.ndarray, n: int = 64) -> bytes:
    """The bytes of ``n`` evenly spaced elements (all of them for small tensors)."""
    import numpy as np

    flat = values.reshape(-1)
    if flat.size <= n:
        return flat.tobytes()
    return flat[np.linspace(0, flat.size - 1, n).astype(np.int64)].tobytes()


def _sample_of(t: gs.Constant, n: int = 64) -> bytes:
    """:func:`_sample` of a constant; a weight still in its file is sampled there, not read whole."""
    sample = getattr(getattr(t, "_values", None), "sample", None)
    quick = sample(n) if sample is not None else None
    return quick if quick is not None else _sample(peek_values(t), n)


def _digest(values: np.ndarray) -> bytes:
    import numpy as np

    return hashlib.blake2b(memoryview(np.ascontiguousarray(values)).cast("B"), digest_size=32).digest()


def merge_initializers(graph: gs.Graph, result: PassResult) -> bool:
    """Initializers with equal dtype, shape and bytes -> the first in node order; returns whether any merged."""
    import onnx_graphsurgeon as gs

    outputs = {id(t) for t in graph.outputs}
    order: list[gs.Constant] = []
    seen: set[int] = set()
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant) and id(t) not in seen and id(t) not in outputs:
                seen.add(id(t))
                order.append(t)
    buckets: dict[tuple[Any, ...], list[gs.Constant]] = {}
    for t in order:
        export = getattr(t, "_export_dtype", None)
        buckets.setdefault((t.dtype.str, tuple(t.shape), str(export)), []).append(t)
    # Within a (dtype, shape) bucket, a strided sample of the values splits unequal tensors apart cheaply;
    # only tensors whose samples agree are hashed in full.
    groups: dict[tuple[Any, ...], list[gs.Constant]] = {}
    for key, bucket in buckets.items():
        if len(bucket) > 1:
            for t in bucket:
                groups.setdefault((*key, _sample_of(t)), []).append(t)
    changed = False
    for group in groups.values():
        if len(group) < 2:
            continue
        keep: dict[bytes, gs.Constant] = {}
        for t in group:
            first = keep.setdefault(_digest(peek_values(t)), t)
            if first is not t:
                _rewire(t, first)
                result.count("duplicate_initializers")
                changed = True
    return changed


def merge_nodes(graph: gs.Graph, result: PassResult, skip: Callable[[gs.Node, str], None]) -> bool:
    """Common subexpression elimination in topological order (merges cascade in one sweep).

    Two nodes are the same when op, domain, attributes and input tensors (by identity) are equal; only
    deterministic ops without subgraph attributes. Returns whether any merged.
    """
    table: dict[tuple[Any, ...], gs.Node] = {}
    changed = False
    for node in list(graph.nodes):
        if not node.outputs or node.domain not in CSE_DOMAINS or node.op in NONDETERMINISTIC:
            continue
        key = _node_key(node)
        if key is None:
            continue
        first = table.setdefault(key, node)
        if first is node:
            continue
        keep, drop = first, node
        if any(is_graph_output(graph, t) for t in drop.outputs):
            if any(is_graph_output(graph, t) for t in keep.outputs):
                skip(node, f"duplicate of {label(first)} but both write graph outputs")
                continue
            keep, drop = drop, keep  # keep the one whose outputs are graph outputs
            table[key] = keep
        for old, new in zip(drop.outputs, keep.outputs):
            if not is_empty(old):
                _rewire(old, new)
        drop.inputs.clear()
        drop.outputs.clear()
        result.count("duplicate_nodes")
        changed = True
    return changed
