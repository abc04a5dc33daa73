"""onnxcomp.io.infer_shapes: shape inference on a weightless copy gives onnx's own result."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.io import infer_shapes


def _model():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w")  # 432: kept
    fc = numpy_helper.from_array(rng.standard_normal((16 * 5 * 7, 10)).astype(np.float32), "fc")  # stubbed
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")  # data propagation needs its values
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "fc"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, fc, shape],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_same_result_as_onnx_written_in_place():
    model = _model()
    weights = [t.SerializeToString() for t in model.graph.initializer]
    ref = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    ours = infer_shapes(model)
    assert ours is model  # in place: the weights are never copied
    assert ours == ref
    assert [t.SerializeToString() for t in ours.graph.initializer] == weights
    dims = {
        vi.name: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in ours.graph.value_info
    }
    assert dims["r"] == ["N", 560] and dims["c"] == ["N", 16, 5, 7]
    assert [d.dim_value or d.dim_param for d in ours.graph.output[0].type.tensor_type.shape.dim] == ["N", 10]
    np.testing.assert_array_equal(
        numpy_helper.to_array(ours.graph.initializer[1]), numpy_helper.to_array(model.graph.initializer[1])
    )
