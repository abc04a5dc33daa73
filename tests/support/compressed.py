"""Helpers of the weight-sharing tests: tiny models, running them, the decoded-weights reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops
from onnxcomp.passes_api import load_pass_library

load_pass_library()


def make_model(nodes, inits, inputs, outputs, opset=18, functions=(), domains=True, ir_version=9):
    """A model from helper nodes; ``inputs``/``outputs`` are (name, shape) pairs of float tensors."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    imports = [helper.make_opsetid("", opset)]
    if functions and domains:
        imports.append(helper.make_opsetid(ops.DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions), ir_version=ir_version)
    if any(s is None for _, s in outputs):
        # outputs declared without a shape get the inferred one (the checker wants a shape field)
        inferred = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        for o in model.graph.output:
            o.type.tensor_type.shape.SetInParent()
    return model


def run(model: onnx.ModelProto, feeds: dict, optimize: bool = False) -> list[np.ndarray]:
    """Outputs under onnxruntime. Unoptimized sessions also turn off weight prepacking: a constant weight is
    otherwise prepacked (a different GEMM summation order) while a decoded one is not, which differs in the
    last bit although the weights are identical."""
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if not optimize:
        so.add_session_config_entry("session.disable_prepacking", "1")
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == ops.DOMAIN]


def stored_inputs(model: onnx.ModelProto, name: str) -> list[np.ndarray]:
    """The initializers a com.onnxcomp node's input is stored as: itself, or those a table maker (the Cast and Mul
    of int8 and scaled codebooks) computes it from; none for an activation."""
    inits = {t.name: t for t in model.graph.initializer}
    makers = {n.output[0]: n for n in model.graph.node if n.domain == "" and n.op_type in ("Cast", "Mul")}
    if name in inits:
        return [numpy_helper.to_array(inits[name])]
    maker = makers.get(name)
    return [] if maker is None else [a for i in maker.input for a in stored_inputs(model, i)]


def decoded_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Output tensor name of every com.onnxcomp weight op -> its decoded weight (numpy reference)."""
    ref = ops.decode_model(model)
    inits = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    out = {}
    for node in custom_nodes(model):
        if ops.is_weight_op(node.op_type):
            out[node.output[0]] = inits[f"{node.output[0]}__W"]
    return out


def with_decoded_weights(original: onnx.ModelProto, compressed: onnx.ModelProto) -> onnx.ModelProto:
    """The original model with every compressed layer's weight replaced by its decoded weight.

    Layers are matched by output tensor name (a compressed op writes the output of the node it replaced,
    or of the MatMul's absorbed bias Add). Gemm layers must have alpha = 1.
    """
    m = onnx.ModelProto()
    m.CopyFrom(original)
    inits = {t.name: t for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    for out, w in decoded_weights(compressed).items():
        node = producers[out]
        if node.op_type == "Add":
            node = next(producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm":
            assert attrs.get("alpha", 1.0) == 1.0
            if attrs.get("transB", 0):
                w = w.T
        name = node.input[1]
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w).astype(np.float32), name))
    return m


def assert_exact(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict) -> None:
    """Every output of ``b`` bit-equal to ``a``'s (optimizations and prepacking off)."""
    ra, rb = run(a, feeds), run(b, feeds)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        np.testing.assert_array_equal(y, x)
