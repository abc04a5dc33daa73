"""onnxcomp.graph.bypass: graph outputs keep their names; subgraph outputs never rename outer-scope tensors."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxcomp.graph import bypass, export_model, import_model
from onnxcomp.io import normalize
from tests.support.run import outputs


def _if_model(inner_input: str):
    """y = If(cond, then: Identity(<inner_input>), else: Neg(r)), r = Relu(x) in the outer graph."""
    then_g = helper.make_graph(
        [helper.make_node("Identity", [inner_input], ["t_out"], name="inner_id")],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e_out"], name="neg")],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_subgraph_output_fed_by_outer_tensor_is_refused():
    model = _if_model("r")
    graph = import_model(normalize(model))
    then = next(iter(graph.subgraphs()))
    inner = then.nodes[0]
    reason = bypass(then, inner)
    assert reason is not None and "outer-scope" in reason
    assert [t.name for t in graph.nodes[0].outputs] == ["r"]  # the outer Relu still writes r
    out = export_model(graph)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2, "cond": np.array(True)}
    np.testing.assert_array_equal(outputs(out, feeds)["y"], np.maximum(feeds["x"], 0))


def test_graph_output_renames_the_producer():
    m = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("Identity", ["r"], ["y"], name="id"),
                helper.make_node("Neg", ["r"], ["z"], name="neg"),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [
                helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3]),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph = import_model(normalize(m))
    assert bypass(graph, graph.nodes[1]) is None
    graph.cleanup().toposort()
    assert [n.name for n in graph.nodes] == ["relu", "neg"]
    assert graph.nodes[0].outputs[0].name == "y" and graph.nodes[1].inputs[0].name == "y"
