"""Small hand-built models for core tests (onnx.helper only)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_relu(
    opset: int = 17, ir_version: int | None = None, dynamic: bool = True, inits_as_inputs: bool = False, seed: int = 0
) -> onnx.ModelProto:
    """x[N,3,H,W] -> Conv(4, 3x3, pad 1) -> Relu -> y; weights from a Constant node and a ConstantOfShape."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dims = ["N", 3, "H", "W"] if dynamic else [1, 3, 7, 9]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, dims[2], dims[3]])
    nodes = [
        helper.make_node("Constant", [], ["b_shape"], value=numpy_helper.from_array(np.array([4], np.int64))),
        helper.make_node(
            "ConstantOfShape", ["b_shape"], ["b"], value=numpy_helper.from_array(np.array([0.25], np.float32))
        )
        if opset >= 9
        else helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.full(4, 0.25, np.float32))),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(w, "w")]
    inputs = [x]
    if inits_as_inputs:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape)))
    g = helper.make_graph(nodes, "conv_relu", inputs, [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version or {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8}.get(opset, 8)
    return m


def with_if_subgraph() -> onnx.ModelProto:
    """y = If(cond, then: x * w_outer, else: x + w_outer) where w_outer comes from the outer scope."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    then_out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])
    else_out = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])
    then_g = helper.make_graph([helper.make_node("Mul", ["xi", "w2"], ["t_out"])], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Add", ["xi", "w2"], ["e_out"])], "else", [], [else_out])
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="id"),
        helper.make_node("Add", ["w", "w"], ["w2"], name="fold_me"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(nodes, "if_model", [x, cond], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def with_local_function() -> onnx.ModelProto:
    """y = custom.Scale2(x) + 1 where Scale2 is a model-local function (x * 2)."""
    two = helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32)))
    mul = helper.make_node("Mul", ["X", "two"], ["Y"])
    fn = helper.make_function("custom", "Scale2", ["X"], ["Y"], [two, mul], [helper.make_opsetid("", 17)])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])
    nodes = [
        helper.make_node("Scale2", ["x"], ["s"], name="scale", domain="custom"),
        helper.make_node("Add", ["s", "one"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "fn_model", [x], [y], [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], functions=[fn]
    )
    m.ir_version = 8
    return m
