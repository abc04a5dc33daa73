"""Checking the com.onnxcomp nodes of a model on load, as the native runtime checks them at run time.

A corrupt compressed model (truncated codes, bits=9, sparse entries past the row, a corrupt Huffman stream, a
conv group that does not fit) must be refused with a message naming the node, not passed through: onnxruntime's
plain path would fold the function bodies into garbage weights without a word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import DOMAIN, OPS, node_attributes

if TYPE_CHECKING:
    import numpy as np
    import onnx


def validate_model(model: onnx.ModelProto) -> int:
    """Check every com.onnxcomp node of the main graph; returns how many were checked.

    Raises ``ValueError`` ("com.onnxcomp CodebookMatMul node 'fc1': codes must have shape ...") on the first
    invalid node. Constant inputs (initializers, and the outputs of HuffmanDecode/RunLengthDecode nodes fed by
    initializers, decoded here) are checked by content; other inputs by the shapes the model records.
    """
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    if not nodes:
        return 0
    from onnxcomp.io import tensor_values

    inits = {t.name: t for t in model.graph.initializer}
    shapes = _recorded_shapes(model)
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        if name in values:
            return values[name]
        if name in inits:
            values[name] = tensor_values(inits[name])
            return values[name]
        return None

    for node in nodes:
        where = f"com.onnxcomp {node.op_type} node '{node.name}'"
        spec = OPS.get(node.op_type)
        if spec is None or spec.helper_only:
            known = ", ".join(k for k, s in OPS.items() if not s.helper_only)
            raise ValueError(f"{where}: unknown op (the com.onnxcomp ops are {known})")
        try:
            _validate_node(spec, node, value, shapes, values)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        except (IndexError, KeyError, TypeError, OverflowError, MemoryError) as err:
            raise ValueError(f"{where}: invalid data ({type(err).__name__}: {err})") from err
    return len(nodes)


def _validate_node(spec: Any, node: Any, value: Any, shapes: dict[str, Any], values: dict[str, Any]) -> None:
    from . import checks

    a = node_attributes(node)
    v = [value(i) if i else None for i in node.input]
    present = [bool(i) for i in node.input]
    checks.check_schema(spec, a, v, present)
    v += [None] * (len(spec.inputs) - len(v))
    s = []
    for k, inp in enumerate(spec.inputs):
        name = node.input[k] if k < len(node.input) else ""
        shape = tuple(v[k].shape) if v[k] is not None else shapes.get(name) if name else None
        if shape is not None and not inp.activation and any(d is None for d in shape):
            shape = None  # a weight's shape is checked only when fully known
        s.append(shape)
    if spec.validate is not None:
        spec.validate(a, v, s)
    if spec.computes is None and spec.reference is not None and all(x is not None for x in v[: len(node.input)]):
        # a decode op fed by constants: its output is a constant the consumers are checked against
        values[node.output[0]] = spec.reference(a, v)


def _recorded_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """The shapes the model records for its tensors (inputs, value_info, outputs); None for dynamic dims."""
    out = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        out.setdefault(vi.name, tuple(dims))
    return out
