"""optimize() report: output serialized once (checker, onnxruntime load check, size); costs of concrete models."""

from __future__ import annotations

import onnx
import pytest

from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.errors import InputError
from tests.support import models


def test_report_bytes_match_the_serialized_output():
    out, report = optimize(models.conv_relu(), "fold-constants")
    assert report.bytes_after == len(io.serialize(out))


def test_check_model_takes_bytes():
    model = models.conv_relu(dynamic=False)
    io.check_model(model.SerializeToString(), "m")
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[2].input[0] = "missing"
    with pytest.raises(InputError, match="m: invalid ONNX model"):
        io.check_model(bad.SerializeToString(), "m")


@pytest.mark.parametrize("dynamic", [False, True])
def test_report_costs_equal_costing_the_concrete_models(dynamic):
    from onnxcomp import cost

    model = models.conv_relu(dynamic=dynamic)
    shapes = {"x": (2, 3, 7, 9)} if dynamic else {}
    out, report = optimize(model, "fold-constants", input_shapes=shapes)
    norm = io.normalize(model, shapes)
    assert report.before == cost.summarize(cost.concrete(norm, shapes))
    assert report.after == cost.summarize(cost.concrete(out, shapes))
    assert report.after.flops > 0


def test_nodes_computed_from_constants_cost_nothing_per_inference():
    # a weight decode (DequantizeLinear of an int8 initializer, then a Transpose) is folded by onnxruntime at
    # session creation: 0 FLOPs and 0 bytes; the MatMul reading the decoded weight pays for reading it
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp import cost

    w = numpy_helper.from_array(np.ones((6, 5), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s"], ["wf"], name="dq"),
        helper.make_node("Transpose", ["wf"], ["wt"], name="t"),
        helper.make_node("MatMul", ["x", "wt"], ["m"], name="mm"),
        helper.make_node("RandomNormalLike", ["m"], ["r"], name="noise"),
        helper.make_node("Add", ["m", "r"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
        [w, scale],
    )
    model = io.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    by_name = {c.name: c for c in cost.analyze(model)}
    assert by_name["dq"].flops == by_name["dq"].bytes == 0
    assert by_name["t"].flops == by_name["t"].bytes == 0
    assert by_name["dq"].params == 30 + 1  # the weight and its scale
    assert by_name["mm"].flops == 2 * 3 * 5 * 6
    assert by_name["mm"].bytes == 4 * (3 * 5 + 5 * 6 + 3 * 6)  # the decoded weight is read per inference
    assert by_name["noise"].bytes > 0 and by_name["add"].flops > 0
