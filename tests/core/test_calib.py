"""calib: cutting calibration data to fewer samples."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxcomp.calib import capture_activations, first_samples


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


def _nested_if_model():
    """y = If(a, then: If(b, then: Relu(x) * 2, else: x), else: Tanh(x)); z = Loop(2 trips, h <- Sin(h), x)."""
    f = TensorProto.FLOAT

    def graph(name, nodes, out):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, f, [2, 5])])

    inner = helper.make_node(
        "If",
        ["b"],
        ["inner_y"],
        name="if_inner",
        then_branch=graph(
            "ti",
            [helper.make_node("Relu", ["x"], ["relu_x"]), helper.make_node("Add", ["relu_x", "relu_x"], ["ti_y"])],
            "ti_y",
        ),
        else_branch=graph("ei", [helper.make_node("Identity", ["x"], ["ei_y"])], "ei_y"),
    )
    outer = helper.make_node(
        "If",
        ["a"],
        ["y"],
        name="if_outer",
        then_branch=graph("t", [inner, helper.make_node("Identity", ["inner_y"], ["t_y"])], "t_y"),
        else_branch=graph(
            "e", [helper.make_node("Tanh", ["x"], ["tanh_x"]), helper.make_node("Neg", ["tanh_x"], ["e_y"])], "e_y"
        ),
    )
    body = helper.make_graph(
        [helper.make_node("Sin", ["h"], ["sin_h"]), helper.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", f, [2, 5]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("sin_h", f, [2, 5]),
        ],
    )
    loop = helper.make_node("Loop", ["trips", "", "x"], ["z"], name="loop", body=body)
    g = helper.make_graph(
        [outer, loop],
        "g",
        [
            helper.make_tensor_value_info("x", f, [2, 5]),
            helper.make_tensor_value_info("a", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", f, [2, 5]), helper.make_tensor_value_info("z", f, [2, 5])],
        [helper.make_tensor(name="trips", data_type=TensorProto.INT64, dims=[], vals=[2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_recurrent_state_is_cut_along_its_batch_axis():
    # Silero VAD's inputs: input [N, 576] and a recurrent state [2, N, 128] (fixed 2 layers, batch on axis 1);
    # a scalar and a fixed-size table are fed whole
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 3]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
            helper.make_tensor_value_info("table", TensorProto.FLOAT, [4, 7]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    state = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    feeds = {
        "x": np.ones((7, 5), np.float32),
        "state": state,
        "sr": np.array(16000, np.int64),
        "table": np.ones((4, 7), np.float32),
    }
    got = first_samples(feeds, model, 4)
    assert got["x"].shape == (4, 5) and got["sr"].shape == () and got["table"].shape == (4, 7)
    np.testing.assert_array_equal(got["state"], state[:, :4])
    assert first_samples(feeds, model, 9)["state"] is state  # fewer samples than asked: fed as they are


def test_capture_wires_tensors_out_of_the_if_branches_the_data_takes():
    from onnxcomp.calib import Capture

    model = _nested_if_model()
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    names = ["relu_x", "tanh_x", "sin_h", "y"]
    cap = Capture(model, names)
    assert not cap.unreachable
    got = cap.run({"x": x, "a": np.array(True), "b": np.array(True)}, names)
    assert set(got) == {"relu_x", "sin_h", "y"}  # tanh_x: its branch was not taken
    # the Loop body's value at each of its 2 trips, merged into the leading axis
    np.testing.assert_allclose(got["sin_h"], np.concatenate([np.sin(x), np.sin(np.sin(x))]), rtol=1e-6)
    np.testing.assert_array_equal(got["relu_x"], np.maximum(x, 0))
    np.testing.assert_array_equal(got["y"], 2 * np.maximum(x, 0))  # the model's own outputs are unchanged
    got = cap.run({"x": x, "a": np.array(False), "b": np.array(True)}, names)
    assert set(got) == {"tanh_x", "sin_h", "y"}
    np.testing.assert_allclose(got["tanh_x"], np.tanh(x), rtol=1e-6)
    assert set(cap.run({"x": x, "a": np.array(True), "b": np.array(False)}, names)) == {"sin_h", "y"}
    assert model.graph.node[0].output == ["y"]  # the caller's model is not changed


def test_a_loop_tensor_changing_shape_over_the_trips_is_left_out():
    """h <- Concat(h, h[:, :1]) grows by a column per trip: its values cannot be stacked; the capture falls back
    to a session without the loop's extra outputs and still gives the rest."""
    from onnx import numpy_helper

    from onnxcomp.calib import Capture

    f = TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Slice", ["h", "zero", "one", "one"], ["first"]),
            helper.make_node("Concat", ["h", "first"], ["grown"], axis=1),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", f, [2, None]),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("grown", f, None)],
        [
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Loop", ["trips", "", "r"], ["y"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", f, [2, 3])],
        [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    cap = Capture(model, ["grown", "r"])
    got = cap.run({"x": x}, ["grown", "r"])
    assert set(got) == {"r"} and cap.unreachable == {"grown"}
    np.testing.assert_array_equal(got["r"], np.maximum(x, 0))


def _fixed_batch_cnn(batch: int = 1):
    """A conv net exported at a fixed batch (as most exporters write it): x [batch, 3, 9, 7] -> Conv, Relu, Conv,
    GlobalAveragePool, Flatten -> y [batch, 5]; a second input ``s`` [1, 5] (a fixed-shape table) added to y."""
    from onnx import numpy_helper

    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((5, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Add", ["f", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 9, 7]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 5]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        [w1, w2],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_fixed_batch_model_takes_samples_stacked_and_runs_them_batch_by_batch():
    # exported at batch 1: 5 samples stacked on axis 0 are captured one batch at a time and concatenated (before,
    # the check refused them and a user could calibrate on one sample); ``s``, given at its exact fixed shape, goes
    # whole to every batch
    from onnxcomp.calib import check_arrays, sample_count

    model = _fixed_batch_cnn()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 3, 9, 7)).astype(np.float32), "s": np.ones((1, 5), np.float32)}
    feeds = check_arrays(feeds, model)
    assert sample_count(feeds, model) == 5
    got = capture_activations(model, feeds, ["r1", "y"])
    assert got["r1"].shape == (5, 8, 9, 7) and got["y"].shape == (5, 5)
    for i in range(5):
        one = capture_activations(model, {"x": feeds["x"][i : i + 1], "s": feeds["s"]}, ["r1", "y"])
        np.testing.assert_array_equal(got["r1"][i : i + 1], one["r1"])
        np.testing.assert_array_equal(got["y"][i : i + 1], one["y"])
    # the first 3 samples: 3 batches
    assert capture_activations(model, feeds, ["y"], max_samples=3)["y"].shape == (3, 5)


def test_samples_of_a_fixed_batch_of_two_are_cut_in_whole_batches():
    model = _fixed_batch_cnn(batch=2)
    feeds = {"x": np.zeros((6, 3, 9, 7), np.float32), "s": np.zeros((1, 5), np.float32)}
    got = first_samples(feeds, model, 3)  # 3 samples: 2 batches of 2
    assert got["x"].shape == (4, 3, 9, 7) and got["s"] is feeds["s"]
    assert first_samples(feeds, model, 1)["x"].shape == (2, 3, 9, 7)
    assert capture_activations(model, feeds, ["y"])["y"].shape == (6, 5)


def test_stacked_samples_a_fixed_batch_model_cannot_take_are_one_line_errors():
    import pytest

    from onnxcomp.calib import check_arrays
    from onnxcomp.errors import InputError

    model = _fixed_batch_cnn(batch=2)
    x = np.zeros((5, 3, 9, 7), np.float32)  # not a multiple of the batch of 2
    with pytest.raises(InputError, match=r"expects \[2, 3, 9, 7\] \(its batch is fixed: stack samples as a multiple"):
        check_arrays({"x": x, "s": np.zeros((1, 5), np.float32)}, model)
    # s stacks 3 batches where x stacks 2
    with pytest.raises(InputError, match="its batch is fixed"):
        check_arrays({"x": np.zeros((4, 3, 9, 7), np.float32), "s": np.zeros((3, 5), np.float32)}, model)


def test_optimize_calibrates_and_verifies_a_fixed_batch_model_on_every_sample():
    from onnxcomp.api import optimize

    model = _fixed_batch_cnn()
    rng = np.random.default_rng(1)
    calib = {"x": rng.standard_normal((6, 3, 9, 7)).astype(np.float32), "s": np.zeros((1, 5), np.float32)}
    out, report = optimize(model, "kmeans(bits=6)", calib=calib, verify=True)
    assert report.verification is not None and report.verification.samples == 6
    assert report.verification.ok
    # the output keeps the model's interface: batch 1
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 9, 7]


def test_budget_trials_and_channel_pruning_run_on_a_fixed_batch_models_stacked_samples():
    # the budget mode's sensitivity probe feeds each trial weight as an extra input (its exact shape: to every
    # batch) and splits the samples it measured on from those it fits on; prune-channels reconstructs on them
    from onnxcomp.api import optimize

    model = _fixed_batch_cnn()
    rng = np.random.default_rng(2)
    calib = {"x": rng.standard_normal((12, 3, 9, 7)).astype(np.float32), "s": np.zeros((1, 5), np.float32)}
    _, report = optimize(model, "kmeans(target-bits=5,sensitivity-samples=4,trials=written)", calib=calib)
    counters = report.passes[-1].counters
    assert counters["budget_bits"] <= 5.0 and counters.get("budget_trials_held_out", 0) > 0
    out, report = optimize(model, "prune-channels(ratio=0.25)", calib=calib, verify=True, tolerance=None)
    assert report.verification.samples == 12
    assert sum(i.dims[0] for i in out.graph.initializer if i.name == "w1") == 6


def test_outputs_whose_shape_changes_from_batch_to_batch_are_verified_batch_by_batch():
    # a fixed-batch model whose output length depends on the data (boxes kept by a threshold: NonZero); stacked
    # samples give each batch its own count: verification compares them batch by batch, a different count fails
    from onnx import numpy_helper

    from onnxcomp.api import optimize
    from onnxcomp.errors import UsageError

    w = numpy_helper.from_array(np.random.default_rng(4).standard_normal((64, 96)).astype(np.float32), "w")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("NonZero", ["pos"], ["idx"]),
        helper.make_node("Unsqueeze", ["idx", "axes"], ["boxes"]),  # [1, 2, n]: n of its own per batch
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ragged",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.INT64, [1, 2, "n"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 96]),
        ],
        [w, zero, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    calib = {"x": np.random.default_rng(5).standard_normal((7, 64)).astype(np.float32)}
    _, report = optimize(model, "kmeans(bits=8)", calib=calib, verify=True)
    assert report.verification.samples == 7 and report.verification.ok
    boxes = next(o for o in report.verification.outputs if o.name == "boxes")
    assert boxes.ok and boxes.max_abs == 0.0
    # the budget's probe cannot measure an output of changing shape: a one-line usage error naming it
    import pytest

    with pytest.raises(UsageError, match="boxes change shape from one batch"):
        optimize(model, "kmeans(target-bits=6)", calib=calib)
    _, report = optimize(model, "kmeans(target-bits=6,sensitivity-outputs=y)", calib=calib)
