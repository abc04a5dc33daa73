"""The exactness oracle: removing channels whose consumer weights are zero changes no output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxcomp.passes.prune import apply_removal, choose

from onnxcomp.analysis.channels import analyze_channels
from onnxcomp.graph import export_model, import_model
from onnxcomp.io import infer_shapes, normalize
from tests.support.random_cnns import random_cnn, zero_consumers
from tests.support.run import assert_same_outputs


def _export(graph) -> onnx.ModelProto:
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = export_model(graph)
    del model.graph.value_info[:]
    model = infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def prune_with_oracle(model: onnx.ModelProto, ratios, seed: int = 0):
    """(reference with zeroed consumer weights, pruned model, channels removed)."""
    graph = import_model(normalize(model))
    plan = analyze_channels(graph)
    removed = np.zeros(plan.n_channels, dtype=bool)
    rng = np.random.default_rng(seed)
    for g, ratio in zip([g for g in plan.groups if g.prunable], ratios, strict=False):
        removed[g.offset : g.offset + g.size] = choose(g, rng.random(g.size), round(ratio * g.size))
    zero_consumers(plan, removed)
    reference = _export(graph)
    apply_removal(graph, plan, removed)
    return reference, _export(graph), int(removed.sum())


@given(random_cnn(), st.lists(st.floats(0.2, 0.95), min_size=30, max_size=30), st.integers(0, 100))
@settings(max_examples=40)
def test_random_graphs_zeroed_channels_prune_exactly(model, ratios, seed):
    reference, pruned, n = prune_with_oracle(model, ratios, seed)
    feeds = {
        "input": np.random.default_rng(seed)
        .standard_normal([2, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]])
        .astype(np.float32)
    }
    assert_same_outputs(reference, pruned, feeds, rtol=1e-4, atol=1e-5)
    if n:
        assert _params(pruned) < _params(reference)


# ------------------------------------------------------------------ ops in their older and newer forms
def _model(nodes, inits, opset, in_shape=(2, 4, 6, 5), outputs=("y",)):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return onnx.shape_inference.infer_shapes(model)


def _w(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def _op_cases():
    from onnx import helper

    conv = helper.make_node("Conv", ["x", "w0"], ["c"], name="conv0", kernel_shape=[1, 1])
    head = [helper.make_node("Conv", ["h", "w1"], ["y"], name="head", kernel_shape=[1, 1])]
    cases = {}
    # Split without sizes: equal parts (opset 13) and num_outputs (opset 18)
    for opset, attrs in ((13, {}), (18, {"num_outputs": 2})):
        nodes = [
            conv,
            helper.make_node("Split", ["c"], ["s0", "s1"], name="split", axis=1, **attrs),
            helper.make_node("Conv", ["s1", "ws"], ["t"], name="convs", kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("Concat", ["s0", "t"], ["h"], name="cat", axis=1),
            *head,
        ]
        cases[f"split-equal-{opset}"] = (
            nodes,
            {"w0": _w(8, 4, 1, 1), "ws": _w(4, 4, 3, 3), "w1": _w(3, 8, 1, 1)},
            opset,
        )
    # Slice with attributes (opset 9) and Upsample (opset 9)
    nodes = [
        conv,
        helper.make_node("Slice", ["c"], ["s"], name="slice", axes=[1], starts=[2], ends=[100]),
        helper.make_node("Upsample", ["s", "scales"], ["h"], name="up", mode="nearest"),
        *head,
    ]
    cases["slice-upsample-9"] = (
        nodes,
        {"w0": _w(8, 4, 1, 1), "w1": _w(3, 6, 1, 1), "scales": np.array([1, 1, 2, 2], np.float32)},
        9,
    )
    # Resize with a sizes input, Pad with attributes (opset 10 has no Resize sizes: use 13 / pads input)
    nodes = [
        conv,
        helper.make_node("Resize", ["c", "", "", "sizes"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Pad", ["r", "pads"], ["h"], name="pad"),
        *head,
    ]
    cases["resize-sizes-pad-13"] = (
        nodes,
        {
            "w0": _w(8, 4, 1, 1),
            "w1": _w(3, 8, 1, 1),
            "sizes": np.array([2, 8, 9, 7], np.int64),
            "pads": np.array([0, 0, 1, 1, 0, 0, 0, 2], np.int64),
        },
        13,
    )
    # squeeze-excitation through ReduceMean(keepdims=0) -> Gemm -> Unsqueeze, InstanceNorm, Dropout
    for opset in (11, 13):
        axes_in = opset >= 13
        nodes = [
            conv,
            helper.make_node("InstanceNormalization", ["c", "g", "b"], ["n"], name="inorm"),
            helper.make_node("Dropout", ["n"], ["d"], name="drop"),
            helper.make_node("ReduceMean", ["d"], ["m"], name="mean", axes=[2, 3], keepdims=0),
            helper.make_node("Gemm", ["m", "f1"], ["e1"], name="fc1", transB=1),
            helper.make_node("Relu", ["e1"], ["e2"], name="relu"),
            helper.make_node("Gemm", ["e2", "f2"], ["e3"], name="fc2"),
            helper.make_node("Sigmoid", ["e3"], ["e4"], name="gate"),
            helper.make_node(
                "Unsqueeze",
                ["e4", "axes"] if axes_in else ["e4"],
                ["e5"],
                name="unsq",
                **({} if axes_in else {"axes": [2, 3]}),
            ),
            helper.make_node("Mul", ["d", "e5"], ["h"], name="scale"),
            *head,
        ]
        inits = {
            "w0": _w(8, 4, 1, 1),
            "g": _w(8),
            "b": _w(8, seed=1),
            "f1": _w(3, 8),
            "f2": _w(3, 8),
            "w1": _w(3, 8, 1, 1),
        }
        if axes_in:
            inits["axes"] = np.array([2, 3], np.int64)
        cases[f"se-squeeze-{opset}"] = (nodes, inits, opset)
    return cases


OP_CASES = _op_cases()


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_forms_prune_exactly(case):
    nodes, inits, opset = OP_CASES[case]
    model = _model(nodes, inits, opset)
    graph = import_model(normalize(model))
    plan = analyze_channels(graph)
    assert all(g.prunable for g in plan.groups if g.producers[0].node.name != "head"), plan.summary()
    reference, pruned, n = prune_with_oracle(model, [0.5] * 10, seed=1)
    assert n > 0
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 6, 5)).astype(np.float32)}
    assert_same_outputs(reference, pruned, feeds, rtol=1e-4, atol=1e-5)


def test_every_member_kind_of_the_channel_analysis_has_an_edit():
    from onnxcomp.passes.prune import EDITS

    from onnxcomp.analysis.channels import MEMBER_KINDS

    assert set(EDITS) == MEMBER_KINDS
