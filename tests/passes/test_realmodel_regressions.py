"""Regressions for bugs found on real trained models (tests/e2e/test_real_models.py), reduced to small graphs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.random_graphs import Builder
from tests.support.run import apply, op_counts, reasons

RTOL, ATOL = 1e-5, 1e-5


def _x(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _bn_params(b, c):
    r = b.rng
    return [
        b.const(r.uniform(0.5, 1.5, c)),
        b.const(r.normal(0, 0.2, c)),
        b.const(r.normal(0, 0.2, c)),
        b.const(r.uniform(0.5, 2.0, c)),
    ]


# ------------------------------------------------ fuse-bn: Conv/ConvTranspose/Gemm -> Add(bias) -> BN (Paddle)
@pytest.mark.parametrize("bias_shape", [(1, 6, 1, 1), (6, 1, 1), (1,)])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_fuse_bn_through_a_separate_conv_bias_add(bias_shape, conv_bias):
    """PP-OCRv5's detector: ConvTranspose -> Add(bias) -> BatchNormalization was left unfused."""
    b = Builder(13, seed=len(bias_shape))
    x = b.input("x", [2, 3, 5, 7])
    ins = [x, b.weight((6, 3, 3, 3))] + ([b.const(b.rng.standard_normal(6))] if conv_bias else [])
    c = b.node("Conv", ins, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = b.node("Add", [c, b.const(b.rng.standard_normal(bias_shape))])
    b.node("Relu", [b.node("BatchNormalization", [a, *_bn_params(b, 6)])], outputs=["y"])
    b.output("y")
    out, res = apply(b.model(), "fuse-bn", _x((2, 3, 5, 7)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Conv": 1, "Relu": 1}
    assert res.counters["fused"] == 1


@pytest.mark.parametrize("group", [1, 2])
def test_fuse_bn_through_a_separate_conv_transpose_bias_add(group):
    b = Builder(13, seed=group)
    x = b.input("x", [1, 4, 5, 7])
    t = b.node("ConvTranspose", [x, b.weight((4, 3, 2, 2))], group=group, strides=[2, 2])
    a = b.node("Add", [b.const(b.rng.standard_normal((1, 3 * group, 1, 1))), t])  # constant first
    b.node("BatchNormalization", [a, *_bn_params(b, 3 * group)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((1, 4, 5, 7)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"ConvTranspose": 1}


def test_fuse_bn_through_a_gemm_bias_sub():
    b = Builder(13)
    x = b.input("x", [3, 4])
    g = b.node("Gemm", [x, b.weight((5, 4))], transB=1)
    s = b.node("Sub", [g, b.const(b.rng.standard_normal(5))])
    b.node("BatchNormalization", [s, *_bn_params(b, 5)], outputs=["y"])
    b.output("y")
    out, _ = apply(b.model(), "fuse-bn", _x((3, 4)), rtol=RTOL, atol=ATOL)
    assert op_counts(out) == {"Gemm": 1}


def test_bias_add_read_twice_or_varying_spatially_is_left_alone():
    b = Builder(13)
    x = b.input("x", [1, 3, 5, 7])
    c = b.node("Conv", [x, b.weight((6, 3, 1, 1))], kernel_shape=[1, 1])
    a1 = b.node("Add", [c, b.const(b.rng.standard_normal((6, 1, 7)))])  # varies along W: not a bias
    b.node("BatchNormalization", [a1, *_bn_params(b, 6)], outputs=["y1"])
    c2 = b.node("Conv", [x, b.weight((6, 3, 1, 1))], kernel_shape=[1, 1])
    a2 = b.node("Add", [c2, b.const(b.rng.standard_normal((6, 1, 1)))])
    b.node("BatchNormalization", [a2, *_bn_params(b, 6)], outputs=["y2"])
    b.node("Relu", [a2], outputs=["y3"])  # the biased conv output is read by another node too
    for y in ("y1", "y2", "y3"):
        b.output(y)
    out, res = apply(b.model(), "fuse-bn", _x((1, 3, 5, 7)), rtol=RTOL, atol=ATOL)
    assert op_counts(out)["BatchNormalization"] == 2 and op_counts(out)["Add"] == 2
    assert "no foldable op before it" in reasons(res)


# ------------------------------------------------ lossy passes: layers inside If/Loop/Scan bodies
def _if_model():
    """Silero VAD's shape: every weighted layer lives in the branches of an If on a scalar input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def branch(name, seed):
        w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), f"{name}_w")
        mm = helper.make_node("MatMul", ["h", f"{name}_w"], [f"{name}_y"], name=f"{name}_matmul")
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)
        return helper.make_graph([mm], name, [], [out], [w])

    w0 = numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) / 8, "w0")
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="main_matmul"),
        helper.make_node(
            "If", ["flag"], ["y"], name="if0", then_branch=branch("then", 1), else_branch=branch("else", 2)
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w0],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("spec", ["kmeans(bits=4)", "ternary", "prune-weights", "lowrank(min_params=1,rank=1)"])
def test_weight_passes_compress_layers_inside_subgraphs(spec):
    """They used to skip every layer of an If branch (Silero VAD: "not applied (model unchanged)")."""
    from tests.support.run import run_pipeline

    _, report = run_pipeline(_if_model(), spec)
    rows = {r.name: r for r in report.passes[-1].layers}
    assert set(rows) == {"main_matmul", "then_matmul", "else_matmul"}
    assert rows["then_matmul"].extra["subgraph"] == "If if0 then_branch"
    assert rows["else_matmul"].extra["subgraph"] == "If if0 else_branch"


def test_structured_pruning_reports_layers_inside_subgraphs():
    from tests.support.run import run_pipeline

    _, report = run_pipeline(_if_model(), "prune-filters")
    skips = {s.node: s.reason for s in report.passes[-1].skips}
    for name, where in (("then_matmul", "then_branch"), ("else_matmul", "else_branch")):
        assert f"If if0 {where} subgraph" in skips.get(name, ""), skips
    assert "only main-graph" not in skips.get("main_matmul", "")


def test_weight_sharing_on_a_graph_with_an_if_exports():
    """onnx-graphsurgeon's toposort recursed forever on a graph with both functions and an If."""
    from tests.support.run import assert_same_outputs, run_pipeline

    model = _if_model()
    out, report = run_pipeline(model, "kmeans(bits=8)")
    assert report.passes[-1].counters["layers"] == 3 and len(out.functions) >= 1
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)}
    for flag in (True, False):
        feeds["flag"] = np.array(flag)
        assert_same_outputs(model, out, feeds, rtol=0.05, atol=0.05)


# ------------------------------------------------ verify: near-zero outputs and the scale-free cosine
def test_lossless_verification_of_a_near_zero_output():
    """PP-OCRv5 det on generated inputs: a saturated sigmoid (max 7e-6) differed by 1e-7 (float32 rounding, as
    much as onnxruntime's own optimizer) and failed the lossless check on its cosine 0.99993."""
    from onnxcomp.verify import Tolerance, compare_arrays

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 7e-6, 1000)
    new = ref + rng.normal(0, 3e-8, ref.shape)
    assert compare_arrays("p", ref, new, Tolerance.lossless()).ok
    # the cosine still decides where the differences exceed the absolute tolerance ...
    big = compare_arrays("p", ref * 1e6, new * 1e6, Tolerance(atol=1e-9, rtol=None, min_cosine=0.99999))
    assert not big.ok and "cosine" in big.why
    # ... and for lossy tolerances (no atol)
    assert not compare_arrays("p", ref, new, Tolerance(atol=None, rtol=None, min_cosine=0.99999)).ok


# ------------------------------------------------ cost: weights stored in Constant nodes (Paddle, spox exports)
def test_cost_counts_weights_held_in_constant_nodes():
    """PP-OCRv5 and Silero VAD keep their weights in Constant nodes: the report said 'params 0 -> 1.17M'."""
    from onnx import helper, numpy_helper

    from onnxcomp import cost

    model = _if_model()
    as_inits = cost.summarize(model)
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    model.graph.node.insert(0, nodes[0])
    del model.graph.initializer[:]
    for branch in (a.g for a in model.graph.node[-1].attribute):
        for t in list(branch.initializer):
            branch.node.insert(0, helper.make_node("Constant", [], [t.name], value=t))
        del branch.initializer[:]
    as_constants = cost.summarize(model)
    assert as_constants.params == as_inits.params == 64 * 16 + 2 * 16 * 32
    assert as_constants.weight_bytes == as_inits.weight_bytes == 4 * as_inits.params
    assert numpy_helper.to_array(model.graph.node[0].attribute[0].t).shape == (64, 16)
