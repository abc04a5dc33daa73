"""The numpy reference of a compressed model: every com.onnxcomp node decoded into standard ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .spec import DOMAIN, OpSpec, get_op, node_attributes

if TYPE_CHECKING:
    import numpy as np
    import onnx


def decode_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every com.onnxcomp node replaced by standard ops on numpy-decoded float weights.

    CodebookMatMul/TernaryMatMul/SparseCodebookMatMul -> MatMul + Add(B); CodebookConv -> Conv; CodebookGather ->
    Gather; CodebookDecode, HuffmanDecode and RunLengthDecode -> an initializer holding the decoded values. This
    is "the original model with its weights replaced by the decoded weights", the reference of the exactness
    tests.
    """
    import onnx
    from onnx import numpy_helper

    from onnxcomp.io import tensor_values

    m = onnx.ModelProto()
    m.CopyFrom(model)
    import numpy as np

    inits = {t.name: t for t in m.graph.initializer}
    products = {n.output[0]: n for n in m.graph.node if n.op_type in ("Mul", "Cast") and n.domain in ("", "ai.onnx")}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        if not name:
            return None
        if name not in values:
            if name in products:  # a scaled codebook's table: Mul(scales, codebook), float16 ones Cast first
                node = products[name]
                args = [value(i) for i in node.input]
                values[name] = (
                    np.multiply(*args, dtype=np.float32) if node.op_type == "Mul" else args[0].astype(np.float32)
                )
            elif name not in inits:
                raise ValueError(f"input {name!r} of a com.onnxcomp node is not an initializer")
            else:
                values[name] = tensor_values(inits[name])
        return values[name]

    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in m.graph.node:
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        try:
            spec = get_op(node.op_type)
        except ValueError as err:
            raise ValueError(f"unknown com.onnxcomp op {node.op_type!r}") from err
        if spec.reference is None:
            raise ValueError(f"com.onnxcomp op {node.op_type!r} has no reference decoder")
        a = node_attributes(node)
        inputs = [
            None if k < len(spec.inputs) and spec.inputs[k].activation else value(i) for k, i in enumerate(node.input)
        ]
        if spec.computes is None:  # a decode op: its output is a constant
            values[node.output[0]] = spec.reference(a, inputs)
            new_inits.append(numpy_helper.from_array(values[node.output[0]], node.output[0]))
            continue
        STANDARD[spec.computes](spec, node, a, spec.reference(a, inputs), new_nodes, new_inits)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    used = {i for n in new_nodes for i in n.input}
    kept = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept + [t for t in new_inits if t.name in used])
    del m.functions[:]
    keep_ops = [o for o in m.opset_import if o.domain != DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(keep_ops)
    del m.graph.value_info[:]
    return m


Emit = Callable[[OpSpec, Any, dict[str, Any], tuple[Any, Any], list[Any], list[Any]], None]


def _matmul(
    spec: OpSpec, node: Any, a: dict[str, Any], wb: tuple[Any, Any], nodes: list[Any], inits: list[Any]
) -> None:
    """Y = X @ W + B: MatMul, then Add of the bias (zeros when the node has none)."""
    import numpy as np
    from onnx import helper, numpy_helper

    w, b = wb
    w_name, b_name, mm = f"{node.output[0]}__W", f"{node.output[0]}__B", f"{node.output[0]}__XW"
    inits.append(numpy_helper.from_array(np.asarray(w, np.float32), w_name))
    nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm], name=f"{node.name}__mm"))
    if b is None:
        b = np.zeros(w.shape[1], np.float32)
    inits.append(numpy_helper.from_array(np.asarray(b, np.float32), b_name))
    nodes.append(helper.make_node("Add", [mm, b_name], list(node.output), name=node.name))


def _conv(spec: OpSpec, node: Any, a: dict[str, Any], wb: tuple[Any, Any], nodes: list[Any], inits: list[Any]) -> None:
    """Y = Conv(X, W, B) with the op's Conv attributes (then its fused activation, if any)."""
    import numpy as np
    from onnx import helper, numpy_helper

    w, b = wb
    w_name, b_name = f"{node.output[0]}__W", f"{node.output[0]}__B"
    inits.append(numpy_helper.from_array(np.asarray(w, np.float32), w_name))
    ins = [node.input[0], w_name]
    if b is not None:
        inits.append(numpy_helper.from_array(np.asarray(b, np.float32), b_name))
        ins.append(b_name)
    attrs = {k: a[k] for k in spec.standard_attrs if k in a}
    act = spec.activation(a) if spec.activation is not None else None
    if act is None:
        nodes.append(helper.make_node("Conv", ins, list(node.output), name=node.name, **attrs))
        return
    # a fused activation (WinogradConv): v < 0 ? leaky v : v, then clipped to [lo, hi]
    leaky, lo, hi = act
    y = f"{node.output[0]}__conv"
    nodes.append(helper.make_node("Conv", ins, [y], name=node.name, **attrs))
    clip = lo > -np.inf or hi < np.inf
    if leaky != 1.0:
        out = f"{node.output[0]}__leaky" if clip else node.output[0]
        nodes.append(helper.make_node("LeakyRelu", [y], [out], name=f"{node.name}__leaky", alpha=leaky))
        y = out
    if clip:
        bounds = [f"{node.output[0]}__min", f"{node.output[0]}__max"]
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in zip((lo, hi), bounds)]
        nodes.append(helper.make_node("Clip", [y, *bounds], list(node.output), name=f"{node.name}__clip"))
    elif leaky == 1.0:
        nodes.append(helper.make_node("Identity", [y], list(node.output), name=f"{node.name}__act"))


def _gather(
    spec: OpSpec, node: Any, a: dict[str, Any], wb: tuple[Any, Any], nodes: list[Any], inits: list[Any]
) -> None:
    """Y = Gather(table, indices) on the decoded table."""
    import numpy as np
    from onnx import helper, numpy_helper

    w_name = f"{node.output[0]}__W"
    inits.append(numpy_helper.from_array(np.asarray(wb[0], np.float32), w_name))
    nodes.append(helper.make_node("Gather", [w_name, node.input[2]], list(node.output), name=node.name, axis=0))


# the standard op a weight op equals -> how its decoded node is written
STANDARD: dict[str, Emit] = {"MatMul": _matmul, "Conv": _conv, "Gather": _gather}
