"""Size figures of a model whose weights sit in If/Loop bodies: the totals and the control-flow node's row."""

from __future__ import annotations

from onnx import numpy_helper

from onnxcomp.cost import analyze, concrete, summarize
from tests.support.models import control_flow_layers


def test_body_weights_count_in_the_totals_and_in_their_control_flow_node():
    model = control_flow_layers()
    rows = {r.name: r for r in analyze(concrete(model))}
    then_g, else_g = (a.g for a in model.graph.node[0].attribute)
    held = 0
    for g in (then_g, else_g):
        held += sum(numpy_helper.to_array(i).size for i in g.initializer)
        held += sum(numpy_helper.to_array(n.attribute[0].t).size for n in g.node if n.op_type == "Constant")
    assert rows["if_main"].params == held == 216 + 8 + 960 + 40 + 960 + 40
    assert rows["loop"].params == 24 * 24 + 1  # the body's Constant node and the trip count
    total = summarize(concrete(model))
    every = held + 24 * 24 + sum(numpy_helper.to_array(i).size for i in model.graph.initializer)
    assert total.params == every
    assert total.weight_bytes == 4 * every + 4  # float32 weights + the int64 trip count's 4 extra bytes


def test_the_node_count_includes_body_nodes():
    model = control_flow_layers()
    # main: 3; then: Constant, Conv, Gemm; else: Conv, MatMul, Add; loop: Constant, MatMul, Tanh, Identity;
    # shared: MatMul | Relu, MatMul
    assert summarize(concrete(model)).nodes == 3 + 3 + 3 + 4 + 1 + 2
