"""onnxcomp.fold: which nodes are foldable, what folding computes, how a failing node is isolated."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.fold import fold, foldable_nodes
from onnxcomp.graph import export_model, import_model
from onnxcomp.io import normalize
from tests.support.run import assert_same_outputs


def _model(nodes, inits=(), outputs=(("y", [2, 3]),), opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    g = helper.make_graph(nodes, "g", [x], outs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_v"))


def test_constant_chain_folds_to_one_initializer_with_the_same_values():
    # b = (c1 * 2) + c2, computed from constants only; x + b reads it: the chain becomes one initializer
    c1, c2 = np.arange(6, dtype=np.float32).reshape(2, 3), np.full((2, 3), 0.5, np.float32)
    nodes = [
        _const("c1", c1),
        _const("two", np.float32(2)),
        _const("c2", c2),
        helper.make_node("Mul", ["c1", "two"], ["m"]),
        helper.make_node("Add", ["m", "c2"], ["b"]),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    model = _model(nodes)
    graph = import_model(normalize(model))
    assert {n.op for n in foldable_nodes(graph)} == {"Constant", "Mul", "Add"}
    result = fold(graph)
    graph.cleanup().toposort()
    out = export_model(graph)
    assert [n.op_type for n in out.graph.node] == ["Add"]
    (b,) = (numpy_helper.to_array(t) for t in out.graph.initializer)
    np.testing.assert_array_equal(b, c1 * 2 + c2)
    assert set(result.folded) >= {n.name for n in graph.nodes if n.op == "Mul"}
    assert not result.failed
    assert_same_outputs(model, out, {"x": np.ones((2, 3), np.float32)}, exact=True)


def test_nodes_reading_an_input_or_nondeterministic_are_not_foldable():
    nodes = [
        helper.make_node("RandomNormal", [], ["r"], shape=[2, 3]),
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Add", ["rx", "r"], ["y"]),
    ]
    graph = import_model(normalize(_model(nodes)))
    assert foldable_nodes(graph) == []
    assert fold(graph).folded == []


def test_shape_of_a_graph_input_is_left_to_fold_constants():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["sf"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"]),
    ]
    model = _model(nodes)
    graph = import_model(normalize(model))
    # Shape reads the graph input, and everything after it: nothing here is computed from constants alone
    # (fold-constants folds Shape of a static tensor into a constant first, then this chain folds)
    assert foldable_nodes(graph) == []


def test_a_failing_node_blocks_only_itself():
    # a Reshape of 6 values to 4 cannot run; the independent Mul beside it still folds
    nodes = [
        _const("a", np.arange(6, dtype=np.float32)),
        _const("bad_shape", np.array([4], np.int64)),
        helper.make_node("Reshape", ["a", "bad_shape"], ["bad"]),
        _const("c", np.full((2, 3), 3.0, np.float32)),
        _const("two", np.float32(2)),
        helper.make_node("Mul", ["c", "two"], ["c2"]),
        helper.make_node("Add", ["x", "c2"], ["y"]),
        helper.make_node("Identity", ["bad"], ["z"]),
    ]
    model = _model(nodes, outputs=(("y", [2, 3]), ("z", None)))
    graph = import_model(normalize(model))
    result = fold(graph)
    bad = next(n for n in graph.nodes if n.op == "Reshape")
    assert bad.name in result.failed
    mul = [n for n in graph.nodes if n.op == "Mul"]
    assert all(n.name in result.folded for n in mul)
    graph.cleanup().toposort()
    out = export_model(graph)
    assert "Mul" not in [n.op_type for n in out.graph.node] and "Reshape" in [n.op_type for n in out.graph.node]
    onnx.checker.check_model(out)
