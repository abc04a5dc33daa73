"""Structured pruning does not descend into If/Loop/Scan bodies, and a channel group whose tensor a body reads
(captured from the outer scope) is blocked with a reason: pruning it would change the tensor the body sees."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.run import outputs, run_pipeline


def _model() -> onnx.ModelProto:
    """x -> conv_a (16) -> Relu -> h, read inside both branches of an If (a Conv and a ReduceMean of h);
    x -> conv_b (16) -> Relu -> conv_c (4) -> z, main graph only (prunable)."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT

    def w(name, *shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name
        )

    then_g = helper.make_graph(
        [helper.make_node("Conv", ["h", "w_then"], ["t_y"], name="conv_then", pads=[1, 1, 1, 1])],
        "then",
        [],
        [helper.make_tensor_value_info("t_y", f, [1, 4, 9, 11])],
        [w("w_then", 4, 16, 3, 3)],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Slice", ["h", "s0", "s1", "ax"], ["e_s"], name="slice_else"),
            helper.make_node("Identity", ["e_s"], ["e_y"], name="id_else"),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e_y", f, [1, 4, 9, 11])],
        [
            numpy_helper.from_array(np.array([0], np.int64), "s0"),
            numpy_helper.from_array(np.array([4], np.int64), "s1"),
            numpy_helper.from_array(np.array([1], np.int64), "ax"),
        ],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["h"], name="relu_a"),
        helper.make_node("If", ["flag"], ["y"], name="if0", then_branch=then_g, else_branch=else_g),
        helper.make_node("Conv", ["x", "w_b", "b_b"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["hb"], name="relu_b"),
        helper.make_node("Conv", ["hb", "w_c"], ["z"], name="conv_c", pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", f, [1, 3, 9, 11]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", f, [1, 4, 9, 11]), helper.make_tensor_value_info("z", f, [1, 4, 9, 11])],
        [
            w("w_a", 16, 3, 3, 3),
            numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b_a"),
            w("w_b", 16, 3, 3, 3),
            numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b_b"),
            w("w_c", 4, 16, 3, 3),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("spec", ["prune-filters(ratio=0.5,round-to=1)", "prune-channels(ratio=0.5,round-to=1)"])
def test_a_channel_group_read_inside_a_body_is_blocked_and_the_body_sees_the_same_tensor(spec):
    model = _model()
    x = np.random.default_rng(1).standard_normal((1, 3, 9, 11)).astype(np.float32)
    calib = {"x": np.random.default_rng(2).standard_normal((1, 3, 9, 11)).astype(np.float32), "flag": np.array(True)}
    out, report = run_pipeline(model, spec, calib=calib if spec.startswith("prune-channels") else None)
    onnx.checker.check_model(out, full_check=True)
    res = report.passes[-1]
    skips = {s.node: s.reason for s in res.skips}
    assert "used inside the subgraph" in skips.get("conv_a", ""), skips
    assert "subgraph" in skips.get("conv_then", ""), skips
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert inits["w_a"].shape[0] == 16  # conv_a keeps every filter
    w_b = next(v for k, v in inits.items() if k.startswith("w_b"))
    assert w_b.shape[0] == 8  # while the main-graph-only group was pruned
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        ref, got = outputs(model, feeds), outputs(out, feeds)
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-5, atol=1e-5)  # the body's input is unchanged
        assert not np.allclose(got["z"], ref["z"])


def _loop_model() -> onnx.ModelProto:
    """x -> conv_a (16) -> Relu -> h, the initial value of a Loop carrying it through 2 trips of h <- Relu(h) * s;
    the loop's result -> conv_z (4) -> z."""
    rng = np.random.default_rng(3)
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Relu", ["h_in"], ["h_r"], name="body_relu"),
            helper.make_node("Mul", ["h_r", "s"], ["h_out"], name="body_mul"),
            helper.make_node("Identity", ["c_in"], ["c_out"], name="body_cond"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", f, [1, 16, 9, 11]),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("h_out", f, None)],
        [numpy_helper.from_array(np.float32(0.9), "s")],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w_a", "b_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["h"], name="relu_a"),
        helper.make_node("Loop", ["trips", "", "h"], ["looped"], name="loop", body=body),
        helper.make_node("Conv", ["looped", "w_z"], ["z"], name="conv_z", pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [1, 3, 9, 11])],
        [helper.make_tensor_value_info("z", f, [1, 4, 9, 11])],
        [
            numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32), "w_a"),
            numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b_a"),
            numpy_helper.from_array((rng.standard_normal((4, 16, 3, 3)) / 12).astype(np.float32), "w_z"),
            numpy_helper.from_array(np.array(2, np.int64), "trips"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("spec", ["prune-filters(ratio=0.5,round-to=1)"])
def test_a_channel_group_carried_into_a_loop_is_blocked(spec):
    """The Loop reads h as its initial value (a node input, not an outer-scope capture): it is not a layer the
    channel analysis knows, so the group stays whole and the model computes the same."""
    model = _loop_model()
    out, report = run_pipeline(model, spec)
    onnx.checker.check_model(out, full_check=True)
    skips = {s.node: s.reason for s in report.passes[-1].skips}
    assert "blocked by Loop loop" in skips.get("conv_a", ""), skips
    assert not report.passes[-1].layers
    feeds = {"x": np.random.default_rng(4).standard_normal((1, 3, 9, 11)).astype(np.float32)}
    np.testing.assert_array_equal(outputs(out, feeds)["z"], outputs(model, feeds)["z"])
