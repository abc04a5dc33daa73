"""Channel dependency groups on known graphs: who is coupled with whom, what blocks, which edits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import DIGITS_MODEL, builders
from onnxcomp.analysis.channels import CHANNEL_RULES, FIXED, analyze_channels
from onnxcomp.graph import import_model
from onnxcomp.io import normalize


def plan_of(model: onnx.ModelProto):
    return analyze_channels(import_model(normalize(model)))


def group(plan, producer: str):
    return next(g for g in plan.groups if any(p.node.name == producer for p in g.producers))


def small(nodes, inits, out_shape=None, in_shape=(1, 3, 5, 5), opset=17, outputs=("y",)):
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape) for o in outputs],
        [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def w(*shape):
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


def test_required_ops_have_rules():
    required = [
        "BatchNormalization",
        "InstanceNormalization",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Tanh",
        "Mul",
        "Add",
        "Sub",
        "Sum",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "ReduceMean",
        "Pad",
        "Resize",
        "Upsample",
        "Dropout",
        "Identity",
        "Cast",
        "Concat",
        "Split",
        "Slice",
        "Flatten",
        "Reshape",
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
    ]
    assert [op for op in required if op not in CHANNEL_RULES] == []


def test_digits_residual_group_and_flatten_blocks():
    plan = plan_of(onnx.load(DIGITS_MODEL))
    res = group(plan, "/conv2/Conv")
    assert {p.node.name for p in res.producers} == {"/stem/stem.0/Conv", "/conv2/Conv"}
    assert res.size == 32 and res.prunable
    # its consumers: conv1, down (the residual stream feeds both)
    assert {m.node.name for m in res.consumers()} == {"/conv1/Conv", "/down/down.0/Conv"}
    down = group(plan, "/down/down.0/Conv")
    fc1 = next(m for m in down.consumers() if m.node.name == "/fc1/Gemm")
    # Flatten of [N, 64, 4, 4]: each channel is a block of 16 features of fc1's input
    chans = plan.channels(fc1.elems) - down.offset
    assert len(chans) == 1024 and (chans == np.repeat(np.arange(64), 16)).all()
    head = group(plan, "/fc2/Gemm")
    assert head.blocked == ["reaches graph output logits"]


def test_unknown_op_blocks_with_its_name():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("LRN", ["c"], ["l"], name="lrn", size=3),
        helper.make_node("Conv", ["l", "w2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    plan = plan_of(small(nodes, {"w": w(6, 3, 1, 1), "w2": w(4, 6, 1, 1)}))
    assert group(plan, "conv").blocked == ["blocked by LRN lrn"]


def test_coupling_with_a_graph_input_blocks():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Add", ["c", "x"], ["a"], name="add"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    plan = plan_of(small(nodes, {"w": w(3, 3, 1, 1), "w2": w(4, 3, 1, 1)}))
    assert "coupled with x" in group(plan, "conv").blocked[0]


def test_concat_offsets_and_split_segments():
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="a", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="b", kernel_shape=[1, 1]),
        helper.make_node("Concat", ["a", "x", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Split", ["cat", "sizes"], ["s0", "s1"], name="split", axis=1),
        helper.make_node("Conv", ["s0", "w0"], ["y0"], name="c0", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["s1", "w1"], ["y1"], name="c1", kernel_shape=[1, 1]),
        helper.make_node("Add", ["y0", "y1"], ["y"], name="add"),
    ]
    inits = {
        "wa": w(4, 3, 1, 1),
        "wb": w(2, 3, 1, 1),
        "w0": w(5, 6, 1, 1),
        "w1": w(5, 3, 1, 1),
        "sizes": np.array([6, 3], np.int64),
    }
    plan = plan_of(small(nodes, inits))
    ga, gb = group(plan, "a"), group(plan, "b")
    cat = plan.channels(plan.layouts["cat"].elems)
    assert list(cat[:4]) == list(range(ga.offset, ga.offset + 4))
    assert list(cat[4:7]) == [FIXED] * 3
    assert list(cat[7:]) == [gb.offset, gb.offset + 1]
    # the split's second output holds x's channel 2 and both of b's: b keeps >= 1 channel there
    assert ga.prunable and gb.prunable
    assert any(sorted(seg.tolist()) == [0, 1] for seg in gb.segments)


def test_depthwise_lockstep_and_grouped_partitions():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="expand", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["c1", "wd"], ["d"], name="dw", kernel_shape=[3, 3], pads=[1] * 4, group=8),
        helper.make_node("Conv", ["d", "wg"], ["g"], name="grouped", kernel_shape=[1, 1], group=4),
        helper.make_node("Conv", ["g", "w2"], ["y"], name="project", kernel_shape=[1, 1]),
    ]
    inits = {"w1": w(8, 3, 1, 1), "wd": w(16, 1, 3, 3), "wg": w(12, 4, 1, 1), "w2": w(2, 12, 1, 1)}
    plan = plan_of(small(nodes, inits))
    expand = group(plan, "expand")
    # the depthwise conv (multiplier 2) follows: weights, group attribute; no filters of its own
    dw = [m for m in expand.members if m.node.name == "dw"]
    assert {m.kind for m in dw} == {"param", "group"}
    assert (plan.channels(plan.layouts["d"].elems) - expand.offset == np.repeat(np.arange(8), 2)).all()
    assert not any(p.node.name == "dw" for g in plan.groups for p in g.producers)
    # the grouped conv reads 4 groups of 4 positions (2 channels each): equal removal per group
    assert [r.tolist() for r in expand.partitions] == [[[0, 1], [2, 3], [4, 5], [6, 7]]]
    grouped = group(plan, "grouped")
    assert grouped.partitions[0].shape == (4, 3)


def test_reshape_into_heads_blocks_but_flatten_reshape_maps_blocks():
    heads = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("Reshape", ["q", "shape"], ["h"], name="split_heads"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    inits = {"wq": w(5, 8), "shape": np.array([1, 3, 2, 4], np.int64)}
    plan = plan_of(small(heads, inits, in_shape=(1, 3, 5)))
    assert "splits the channel axis" in group(plan, "q").blocked[0]
    flat = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    plan = plan_of(small(flat, {"w": w(4, 3, 1, 1), "shape": np.array([-1, 100], np.int64), "fc": w(100, 2)}))
    conv = group(plan, "conv")
    assert conv.prunable
    reshape = next(m for m in conv.members if m.kind == "reshape")
    assert (plan.channels(reshape.elems) - conv.offset == np.repeat(np.arange(4), 25)).all()


def test_se_block_couples_excitation_with_the_stream():
    plan = plan_of(builders.mobilenet(variant="tiny"))
    g = group(plan, "features.4.se.fc2")
    assert {p.node.name for p in g.producers} == {"features.4.expand.conv", "features.4.se.fc2"}
    assert g.prunable


@pytest.mark.parametrize("opset", [17, 18])
def test_yolo_heads_blocked_everything_else_prunable(opset):
    plan = plan_of(builders.yolo(opset=opset))
    blocked = {g.name: g.blocked for g in plan.groups if not g.prunable}
    assert set(blocked) == {f"model.22.{i}.cv{j}.2" for i in range(3) for j in (2, 3)}
    assert all(r[0].startswith("reaches graph output p") for r in blocked.values())
    c2f = group(plan, "model.2.cv1.conv")
    assert {p.node.name for p in c2f.producers} == {"model.2.cv1.conv", "model.2.m.0.cv2.conv"}


def test_a_member_of_an_unknown_kind_or_role_is_refused():
    import onnx_graphsurgeon as gs

    from onnxcomp.analysis.channels import CONSUMER, PARAM, Member

    node = gs.Node("Conv", "c")
    Member(node, PARAM, CONSUMER, np.zeros(2, np.int64))  # the known ones
    with pytest.raises(ValueError, match="unknown kind 'params'"):
        Member(node, "params", CONSUMER, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="role 'reader'"):
        Member(node, PARAM, "reader", np.zeros(2, np.int64))
