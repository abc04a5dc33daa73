"""lowrank on layers inside If branches and Loop bodies: factorized where they live, exact at full rank."""

from __future__ import annotations

import numpy as np
import onnx

from tests.support.models import control_flow_feeds, control_flow_layers
from tests.support.run import outputs, run_pipeline

BODY_LAYERS = {"then_conv", "then_gemm", "else_conv", "else_matmul", "loop_matmul"}


def _body_ops(model: onnx.ModelProto) -> list[str]:
    found, stack = [], list(model.graph.node)
    while stack:
        n = stack.pop()
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                found.extend(x.op_type for x in g.node)
                stack.extend(g.node)
    return found


def test_full_rank_factors_of_body_layers_reproduce_the_model():
    model = control_flow_layers()
    out, report = run_pipeline(model, "lowrank(rank=64,max-param-ratio=100,min-params=1)")
    onnx.checker.check_model(out, full_check=True)
    res = report.passes[-1]
    assert {r.name for r in res.layers} == BODY_LAYERS
    assert {r.extra["subgraph"].split()[0] for r in res.layers} == {"If", "Loop"}
    skips = {s.node: s.reason for s in res.skips}
    assert "shared" in skips["shared_then_matmul"] and "shared" in skips["shared_else_matmul"]
    ops = _body_ops(out)
    # two factors per layer (Gemm: MatMul + Gemm), the two shared MatMuls untouched
    assert ops.count("Conv") == 4 and ops.count("Gemm") == 1 and ops.count("MatMul") == 1 + 2 + 2 + 2
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=f"{name} flag={flag}")


def test_low_rank_body_layers_lose_what_the_dropped_singular_values_hold():
    model = control_flow_layers()
    calib = control_flow_feeds(True, seed=4)
    out, report = run_pipeline(model, "lowrank(rank=4,min-params=1)", calib=calib)
    onnx.checker.check_model(out, full_check=True)
    res = report.passes[-1]
    assert {r.name for r in res.layers} == BODY_LAYERS
    decisions = {r.name: r.decision for r in res.layers}
    assert "activation-aware" in decisions["then_gemm"]  # reads the main graph's v: captured
    assert "activation-aware" in decisions["loop_matmul"]  # the loop-carried input, captured at every trip
    assert "layers_data_free_subgraph" not in res.counters

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(a))

    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        for name in ("conv", "fc"):
            assert 0.0 < rel(ref[name], got[name]) < 1.0, name
        assert np.isfinite(got["loop"]).all()
        np.testing.assert_array_equal(got["shared"], ref["shared"])
    # the loop's 3 trips x 3 rows of the captured h (9 rows for 24 inputs) fit the calibration samples: on them
    # the activation-aware factors lose less than the data-free ones
    free, _ = run_pipeline(model, "lowrank(rank=4,min-params=1)")
    ref = outputs(model, calib)["loop"]
    assert rel(ref, outputs(out, calib)["loop"]) < rel(ref, outputs(free, calib)["loop"])


def _branch_chain(depth: int = 10) -> onnx.ModelProto:
    """y = If(flag, then: ``depth`` x (Relu, MatMul W_i), else: Tanh(x) @ W_e), all weights [16, 16]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name):
        return numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), name)

    f = TensorProto.FLOAT
    nodes, src = [], "x"
    for i in range(1, depth + 1):
        nodes.append(helper.make_node("Relu", [src], [f"r{i}"]))
        nodes.append(helper.make_node("MatMul", [f"r{i}", f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        src = f"m{i}"
    then_g = helper.make_graph(
        nodes,
        "then",
        [],
        [helper.make_tensor_value_info(src, f, [6, 16])],
        [w(f"w{i}") for i in range(1, depth + 1)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["t0"]), helper.make_node("MatMul", ["t0", "we"], ["me"], name="mm_else")],
        "else",
        [],
        [helper.make_tensor_value_info("me", f, [6, 16])],
        [w("we")],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="if0", then_branch=then_g, else_branch=else_g)],
        "g",
        [helper.make_tensor_value_info("x", f, [6, 16]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", f, [6, 16])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_activation_aware_factors_of_a_branch_captured_after_earlier_layers_were_factorized():
    """Inputs are captured 8 layers at a time: by the second capture the branch holds the first factors appended
    so far, and onnxruntime wants its nodes sorted."""
    model = _branch_chain()
    x = np.random.default_rng(1).standard_normal((6, 16)).astype(np.float32)
    out, report = run_pipeline(model, "lowrank(rank=4,min-params=1)", calib={"x": x, "flag": np.array(True)})
    onnx.checker.check_model(out, full_check=True)
    decisions = {r.name: r.decision for r in report.passes[-1].layers}
    assert all("activation-aware" in decisions[f"mm{i}"] for i in range(1, 11)), decisions
    assert "activation-aware" not in decisions["mm_else"]  # its branch is not taken by the calibration data
    assert report.passes[-1].counters["layers_data_free_subgraph"] == 1
