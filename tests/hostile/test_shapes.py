"""Issue 9 items 1 and 2: never verify or cost on made-up dims; Paddle-style -1 dims are dynamic."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxcomp import io, shapes
from onnxcomp.api import optimize
from onnxcomp.errors import InputError
from tests.support import models
from tests.support.cli import assert_one_line_error, run, save


def test_image_defaults_are_224_and_announced():
    plan = shapes.resolve(io.normalize(models.conv()))
    assert plan.shapes() == {"x": (1, 3, 224, 224)}
    line = plan.summary()
    assert "batch 1 (dim 0)" in line and "image H/W 224 (dims 2, 3)" in line
    assert "--input-shape x:1x3x224x224" in line  # how to override


def test_exporter_metadata_sizes_the_image():
    plan = shapes.resolve(io.normalize(models.conv(imgsz="[64, 96]")))
    assert plan.shapes() == {"x": (1, 3, 64, 96)}
    assert "from the model's metadata" in plan.summary()


def test_text_inputs_share_the_sequence_symbol_and_the_user_sets_it():
    m = io.normalize(models.text())
    assert shapes.resolve(m).shapes() == {"input_ids": (1, 128), "attention_mask": (1, 128)}
    # the user's size for one input sizes every dim with the same symbol
    got = shapes.resolve(m, {"input_ids": (2, 7)}).shapes()
    assert got == {"input_ids": (2, 7), "attention_mask": (2, 7)}


def test_calibration_shapes_win_and_cost_counts_one_sample():
    m = io.normalize(models.conv())
    plan = shapes.resolve(m, calib={"x": np.zeros((5, 3, 9, 11), np.float32)})
    assert plan.shapes() == {"x": (5, 3, 9, 11)} and plan.cost_shapes() == {"x": (1, 3, 9, 11)}


def test_unsized_dims_are_an_input_error_naming_them():
    plan = shapes.resolve(io.normalize(models.signal()))
    assert not plan.complete and plan.missing == {"x": ["dim 1 (L)"]}
    with pytest.raises(InputError, match=r"'x' dim 1 \(L\).*--input-shape x:1xL"):
        plan.require()


@pytest.mark.parametrize("command", ["verify", "inspect", "bench", "optimize --verify"])
def test_unsized_dims_exit_2_everywhere(tmp_path, capsys, command):
    p = save(models.signal(), tmp_path / "sig.onnx")
    args = {
        "verify": ["verify", p, p],
        "inspect": ["inspect", p],
        "bench": ["bench", p, "--runs", "1"],
        "optimize --verify": ["optimize", p, tmp_path / "o.onnx", "--verify"],
    }[command]
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err)
    assert "dim 1 (L)" in err and "--input-shape x:1xL" in err
    assert not (tmp_path / "o.onnx").exists()
    # with the size given, it works
    code, _, err = run(capsys, *args, "--input-shape", "x:1x50")
    assert code == 0, err


def test_optimize_without_verify_reports_flops_unknown_not_made_up(tmp_path, capsys):
    p = save(models.signal(), tmp_path / "sig.onnx")
    code, stdout, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--report", tmp_path / "r.json")
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["model"]["before"]["flops"] is None and rep["inputs"]["missing"] == {"x": ["dim 1 (L)"]}
    assert "FLOPs not computed" in stdout


def test_verification_runs_at_the_realistic_size_and_says_so(tmp_path, capsys):
    # B differs from A only in the off-centre taps of a 3x3 kernel: on a 1x1 image (the old "dynamic dim = 1")
    # those taps only ever read padding and B "verified" with cosine 1.000000
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = w.copy()
    w2[:, :, 0, :] = 0.0
    a, b = save(models.conv(weight=w), tmp_path / "a.onnx"), save(models.conv(weight=w2), tmp_path / "b.onnx")
    code, stdout, err = run(capsys, "verify", a, b)
    assert code == 3, stdout
    assert "x 1x3x224x224" in stdout and "image H/W 224" in stdout
    code, _, err = run(capsys, "verify", a, a)
    assert code == 0, err


def test_report_stores_the_shapes_and_the_cost_uses_them(tmp_path, capsys):
    p = save(models.conv(), tmp_path / "m.onnx")
    code, stdout, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--verify", "--report", tmp_path / "r.json")
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["inputs"]["inputs"]["x"]["shape"] == [1, 3, 224, 224]
    assert rep["verification"]["inputs"]["x"]["shape"] == [1, 3, 224, 224]
    assert rep["model"]["before"]["flops"] == 2 * 4 * 224 * 224 * 27
    assert "input shapes: x 1x3x224x224" in stdout


def test_inspect_costs_at_the_announced_size(tmp_path, capsys):
    p = save(models.conv(), tmp_path / "m.onnx")
    code, stdout, err = run(capsys, "inspect", p, "--json", tmp_path / "i.json")
    assert code == 0, err
    assert "input shapes: x 1x3x224x224" in stdout
    doc = json.loads((tmp_path / "i.json").read_text())
    assert doc["summary"]["flops"] == 2 * 4 * 224 * 224 * 27 and doc["inputs"]["x"]["shape"] == [1, 3, 224, 224]


# ------------------------------------------------------------------------------------- item 2: -1 dims
def test_paddle_minus_one_dims_take_an_input_shape(tmp_path, capsys):
    p = save(models.conv(dims=(-1, 3, -1, -1)), tmp_path / "paddle.onnx")
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, "optimize", p, out, "--input-shape", "x:1x3x48x192", "--verify")
    assert code == 0, err
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 192]
    # without it, the -1 dims are dynamic dims like any other (image defaults, announced)
    code, stdout, err = run(capsys, "verify", p, p)
    assert code == 0 and "x 1x3x224x224" in stdout, err


@pytest.mark.parametrize("spec", ["x:-1x3x48x192", "x:0x3x48x192"])
def test_minus_one_in_the_users_spec_is_refused_clearly(tmp_path, capsys, spec):
    p = save(models.conv(dims=(-1, 3, -1, -1)), tmp_path / "paddle.onnx")
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--input-shape", spec)
    assert_one_line_error(code, err)
    assert "cannot keep a dim dynamic" in err and "1 for the batch" in err


def test_fixed_dims_still_refuse_another_size(tmp_path, capsys):
    p = save(models.conv(dims=(1, 3, 8, 8)), tmp_path / "m.onnx")
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--input-shape", "x:1x3x9x8")
    assert_one_line_error(code, err)
    assert "dim 2 is fixed to 8" in err


def test_api_optimize_verify_refuses_unsized_dims_before_any_work():
    with pytest.raises(InputError, match="cannot size"):
        optimize(models.signal(), "fold-constants", verify=True)


def test_value_info_of_an_input_records_its_traced_size():
    from onnx import TensorProto, helper

    m = models.conv()
    m.graph.value_info.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 256]))
    plan = shapes.resolve(io.normalize(m))
    assert plan.shapes() == {"x": (1, 3, 320, 256)} and not plan.guessed


@pytest.mark.parametrize("command", ["optimize --verify", "inspect", "bench"])
def test_huge_input_shape_is_refused_before_allocating(tmp_path, capsys, command):
    # 1x3x100000x100000 float32 is 120 GB: MemoryError (exit 1) when the inputs were generated
    p = save(models.conv(), tmp_path / "m.onnx")
    args = {
        "optimize --verify": ["optimize", p, tmp_path / "o.onnx", "--verify"],
        "inspect": ["inspect", p],
        "bench": ["bench", p, "--runs", "1"],
    }[command]
    code, _, err = run(capsys, *args, "--input-shape", "x:1x3x100000x100000")
    assert_one_line_error(code, err)
    assert "3e+10 elements" in err


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_shapeless_value_info_of_an_input_or_output_keeps_the_declared_shape(tmp_path, capsys, where):
    # onnxruntime's quantizer writes the model's output once in graph.output with a shape and once in value_info
    # without one; the graph IR took the shapeless entry and the optimized model failed the checker (exit 2)
    from onnx import TensorProto, helper

    m = models.conv()
    name = m.graph.input[0].name if where == "input" else m.graph.output[0].name
    m.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    assert not m.graph.value_info[-1].type.tensor_type.HasField("shape")
    want = [d for v in (*m.graph.input, *m.graph.output) if v.name == name for d in v.type.tensor_type.shape.dim]
    p = save(m, tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    code, _, err = run(capsys, "optimize", p, out, "--verify", "-q")
    assert code == 0, err
    got = onnx.load(str(out))
    again = [v for v in (*got.graph.input, *got.graph.output) if v.name == name]
    assert again and list(again[0].type.tensor_type.shape.dim) == want


def _lstm_in_branch(seq_nodes: list, inits: list) -> onnx.ModelProto:
    """x [1, N] -> If(flag): the then-branch computes ``seq`` from x with ``seq_nodes`` and sums an LSTM (hidden 2,
    4 inputs) over it; the else-branch sums x. ``inits``: main-graph initializers the nodes read (besides the
    LSTM's w and r)."""
    from onnx import TensorProto, helper, numpy_helper

    h = 2
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * h, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * h, h)).astype(np.float32), "r"),
    ]
    lstm = [
        helper.make_node("LSTM", ["seq", "w", "r"], ["", "yh"], hidden_size=h),
        helper.make_node("ReduceSum", ["yh"], ["y_then"], keepdims=0),
    ]
    scalar = [helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in ("y_then", "y_else", "y")]
    then = helper.make_graph([*seq_nodes, *lstm], "then", [], [scalar[0]])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["y_else"], keepdims=0)], "else", [], [scalar[1]])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "N"]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [scalar[2]],
        [*weights, *inits],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _branch_fits_one_size() -> onnx.ModelProto:
    """x [1, N] -> If(flag): the then-branch feeds an LSTM with x reshaped by an inner If on N == 24, to
    [1, 1, -1, 4] when it holds (rank 4: ill-typed for the LSTM) and to [1, -1, 4] otherwise; the else-branch sums
    x. As Silero VAD's 8 kHz branch at a 16 kHz chunk: with N fixed to 24, onnxruntime's constant folding picks the
    rank-4 reshape and the model no longer loads with its graph optimizations on, although the branch never runs
    for the inputs it is meant for."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, v):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.int64), name))

    def reshaped(name, shape):
        return helper.make_graph(
            [const(f"{name}_s", shape), helper.make_node("Reshape", ["x", f"{name}_s"], [name])],
            name,
            [],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)],
        )

    seq_nodes = [
        const("i1", [1]),
        const("i2", [2]),
        const("n24", [24]),
        helper.make_node("Shape", ["x"], ["sx"]),
        helper.make_node("Slice", ["sx", "i1", "i2"], ["n"]),
        helper.make_node("Equal", ["n", "n24"], ["is24v"]),
        helper.make_node("Squeeze", ["is24v"], ["is24"]),
        helper.make_node(
            "If",
            ["is24"],
            ["seq"],
            then_branch=reshaped("rank4", [1, 1, -1, 4]),
            else_branch=reshaped("rank3", [1, -1, 4]),
        ),
    ]
    return _lstm_in_branch(seq_nodes, [])


def test_an_input_shape_the_model_cannot_load_at_is_an_error():
    # the output takes exactly the --input-shape sizes; where onnxruntime (optimizations on, as users load models)
    # rejects the model at them, optimize fails with one line instead of writing a file that does not load
    model = _branch_fits_one_size()
    out, _ = optimize(model, input_shapes={"x": (1, 16)})
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [1, 16]
    optimize(model)  # dynamic dims: loads
    with pytest.raises(InputError, match=r"does not load in onnxruntime.*--input-shape x:1x24"):
        optimize(model, input_shapes={"x": (1, 24)})
    with pytest.raises(InputError, match=r"does not load in onnxruntime"):
        optimize(model, input_shapes={"x": (1, 24)}, verify=True)  # verification's sessions load it: checked too


def test_an_input_that_onnxruntime_only_loads_unoptimized_is_held_to_that():
    # the same model with N = 24 in its own input: the input itself does not load with onnxruntime's optimizations
    # on, so the output is only held to loading without them, and the report warns
    model = _branch_fits_one_size()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 24
    out, report = optimize(model)
    assert any("input model does not load in onnxruntime with its graph optimizations on" in w for w in report.warnings)
    feeds = {"x": np.ones((1, 24), np.float32), "flag": np.array(False)}
    from tests.support.run import outputs

    np.testing.assert_array_equal(outputs(out, feeds)["y"], outputs(model, feeds)["y"])


def _slice_start_from_equal() -> onnx.ModelProto:
    """x [1, N] -> If(flag): the then-branch runs an LSTM over x reshaped to Slice([1, 1, -1, 4], start) with start =
    4 - (3 + (N == 24)), rank 3 for N != 24. onnx's data propagation cannot compute the start (Equal has none) and
    propagates the slice as if it started at 0, so it infers the Reshape output at rank 4: value_info onnxruntime
    rejects (in a branch, where fold-constants does not fold the shape arithmetic away)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        *(
            numpy_helper.from_array(np.array(v, np.int64), n)
            for n, v in [("i0", [0]), ("i1", [1]), ("i2", [2]), ("n24", 24), ("three", 3), ("four", 4)]
        ),
        numpy_helper.from_array(np.array([1, 1, -1, 4], np.int64), "full"),
        numpy_helper.from_array(np.array([4], np.int64), "end"),
    ]
    seq_nodes = [
        helper.make_node("Shape", ["x"], ["sx"]),
        helper.make_node("Slice", ["sx", "i1", "i2"], ["n1"]),
        helper.make_node("Squeeze", ["n1"], ["n"]),
        helper.make_node("Equal", ["n", "n24"], ["is24"]),
        helper.make_node("Cast", ["is24"], ["k1"], to=TensorProto.INT64),
        helper.make_node("Add", ["three", "k1"], ["k"]),
        helper.make_node("Sub", ["four", "k"], ["start"]),
        helper.make_node("Unsqueeze", ["start", "i0"], ["start1"]),
        helper.make_node("Slice", ["full", "start1", "end"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["seq"]),
    ]
    return _lstm_in_branch(seq_nodes, inits)


def test_a_wrong_shape_from_data_propagation_is_not_written():
    # the output's value_info came from onnx's shape inference with data propagation, which gets this model's
    # Reshape wrong at N = 16; onnxruntime refused the file. It is now inferred again without data propagation,
    # and the report says so
    from tests.support.run import outputs

    model = _slice_start_from_equal()
    out, report = optimize(model, input_shapes={"x": (1, 16)})
    assert any("data propagation" in w for w in report.warnings), report.warnings
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32), "flag": np.array(True)}
    np.testing.assert_allclose(outputs(out, feeds)["y"], outputs(model, feeds)["y"], rtol=1e-6, atol=1e-6)
    import onnxruntime as ort

    ort.InferenceSession(out.SerializeToString())  # loads as users load it
