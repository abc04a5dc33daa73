"""calib: cutting calibration data to fewer samples."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxcomp.calib import capture_activations


def test_capture_keeps_fixed_batch_inputs_whole():
    # x has a fixed batch of 6 (onnxruntime refuses any other), z a dynamic one: only z is cut to 4
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["z"], ["b"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [6, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"x": np.ones((6, 2), np.float32), "z": np.ones((6, 2), np.float32)}
    got = capture_activations(model, feeds, ["a", "b"], max_samples=4)
    assert got["a"].shape == (6, 2) and got["b"].shape == (4, 2)
