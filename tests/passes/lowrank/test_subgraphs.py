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
    assert "activation-aware" not in decisions["loop_matmul"]  # a loop-carried input: data-free
    assert res.counters["layers_data_free_subgraph"] == 1
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        for name in ("conv", "fc", "loop"):
            err = float(np.linalg.norm(ref[name] - got[name]) / np.linalg.norm(ref[name]))
            assert 0.0 < err < 1.0, (name, err)
        np.testing.assert_array_equal(got["shared"], ref["shared"])
