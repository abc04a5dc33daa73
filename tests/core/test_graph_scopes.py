"""Graph helpers over If/Loop/Scan bodies: scopes in order, names unique across scopes, Constant-node weights
of a body read as initializers, one copy of a weight several bodies read, opset imports of body nodes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcomp.graph import (
    export_model,
    import_model,
    inline_constant_node,
    scoped_nodes,
    scopes,
    toposort,
    unique_name,
)
from tests.support.models import control_flow_feeds, control_flow_layers
from tests.support.run import outputs


def _inits_by_scope(model: onnx.ModelProto) -> dict[str, list[str]]:
    found = {"main": [i.name for i in model.graph.initializer]}
    stack = [(n, a) for n in model.graph.node for a in n.attribute]
    while stack:
        node, a = stack.pop()
        for g in [a.g] if a.HasField("g") else list(a.graphs):
            found[f"{node.name}.{a.name}"] = [i.name for i in g.initializer]
            stack.extend((n, b) for n in g.node for b in n.attribute)
    return found


def test_scopes_and_scoped_nodes_visit_bodies_in_place():
    graph = import_model(control_flow_layers())
    where = [w for _, w in scopes(graph)]
    assert where[0] is None and len(where) == 1 + 2 + 1 + 2
    assert {w.split()[0] for w in where[1:]} == {"If", "Loop"}
    order = [(n.name, w) for n, _, w in scoped_nodes(graph)]
    names = [n for n, _ in order]
    # a control-flow node's bodies come right after it, before the next main-graph node
    assert names.index("if_main") < names.index("then_conv") < names.index("loop")
    assert names.index("loop") < names.index("loop_matmul") < names.index("if_shared")
    assert dict(order)["loop_matmul"] == "Loop loop body"
    for node, owner, w in scoped_nodes(graph):
        assert any(n is node for n in owner.nodes)
        assert (owner is graph) == (w is None)


def test_unique_names_avoid_every_scope():
    graph = import_model(control_flow_layers())
    for taken in ("then_conv_w", "loop_matmul", "h_in", "else_fc_b"):  # body tensors and nodes
        assert unique_name(graph, taken) != taken


def test_a_body_constant_node_becomes_an_initializer_of_the_body():
    model = control_flow_layers()
    graph = import_model(model)
    node, owner, _ = next(x for x in scoped_nodes(graph) if x[0].name == "loop_matmul")
    before = len(owner.nodes)
    const = inline_constant_node(owner, node.inputs[1])
    assert const is node.inputs[1] and isinstance(const.values, np.ndarray) and const.values.shape == (24, 24)
    assert len(owner.nodes) == before - 1  # the Constant node is gone (not left dead)
    assert inline_constant_node(owner, node.inputs[0]) is node.inputs[0]  # not a Constant node's output
    out = export_model(toposort(graph))
    onnx.checker.check_model(out, full_check=True)
    assert "loop_w" in _inits_by_scope(out)["loop.body"]
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name])


def test_a_weight_read_by_two_branches_is_written_once():
    """onnx-graphsurgeon writes a constant into every graph reading it: the model grew by a copy per branch."""
    model = control_flow_layers()
    out = export_model(import_model(model))
    onnx.checker.check_model(out, full_check=True)
    where = [scope for scope, names in _inits_by_scope(out).items() for n in names if n == "shared_w"]
    assert where == ["main"]
    sizes = [sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer) for m in (model, out)]
    assert sizes[1] <= sizes[0]
    feeds = control_flow_feeds(False)
    np.testing.assert_array_equal(outputs(out, feeds)["shared"], outputs(model, feeds)["shared"])


def test_sibling_initializers_sharing_a_name_with_different_values_stay_apart():
    from onnx import TensorProto, helper

    def branch(value: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", ["twin"], [f"y{int(value)}"])],
            f"b{int(value)}",
            [],
            [helper.make_tensor_value_info(f"y{int(value)}", TensorProto.FLOAT, [3])],
            [numpy_helper.from_array(np.full(3, value, np.float32), "twin")],  # one name, two tensors
        )

    g = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="if0", then_branch=branch(1.0), else_branch=branch(2.0))],
        "g",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out = export_model(import_model(model))
    assert _inits_by_scope(out) == {"main": [], "if0.then_branch": ["twin"], "if0.else_branch": ["twin"]}
    for flag, value in ((True, 1.0), (False, 2.0)):
        np.testing.assert_array_equal(outputs(out, {"flag": np.array(flag)})["y"], np.full(3, value, np.float32))


def test_the_opset_import_covers_custom_nodes_inside_bodies():
    from onnxcomp.api import optimize

    out, _ = optimize(control_flow_layers(), "kmeans(bits=4)")
    assert not any(n.domain == "com.onnxcomp" for n in out.graph.node)
    assert {o.domain for o in out.opset_import} >= {"", "com.onnxcomp"}
    onnx.checker.check_model(out, full_check=True)
