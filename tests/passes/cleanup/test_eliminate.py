"""eliminate: each no-op kind, duplicates, dead nodes, options, opsets, graph outputs, subgraphs, functions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxcomp.graph import import_model
from onnxcomp.io import normalize
from onnxcomp.passes_api import PassContext, get_pass
from tests.support import models
from tests.support.random_graphs import Builder
from tests.support.run import apply, init, op_counts, reasons, run_on_graph

INT_MAX = 2**31 - 1


def _feeds(shape=(3, 4, 5), seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _unary(op_builder, shape=(3, 4, 5), opset=17, out_shape=None):
    """x -> <nodes from op_builder(b, x)> -> Relu -> y."""
    b = Builder(opset)
    x = b.input("x", list(shape))
    mid = op_builder(b, x)
    b.node("Relu", [mid], outputs=["y"])
    b.output("y", out_shape)
    return b.model()


# ------------------------------------------------------------------------------------------ Identity
def test_identity_chain_removed_and_graph_output_name_kept():
    b = Builder()
    x = b.input("x", [3, 5])
    a = b.node("Identity", [b.node("Identity", [x])])
    b.node("Identity", [b.node("Relu", [a])], outputs=["y"])
    b.output("y", [3, 5])
    out, res = apply(b.model(), "eliminate", _feeds((3, 5)), exact=True)
    assert op_counts(out) == {"Relu": 1}
    assert [o.name for o in out.graph.output] == ["y"] and out.graph.node[0].output == ["y"]
    assert res.counters["identity"] == 3


def test_identity_from_input_to_output_is_kept_with_reason():
    b = Builder()
    b.input("x", [3, 5])
    b.node("Identity", ["x"], outputs=["y"])
    b.output("y", [3, 5])
    out, res = apply(b.model(), "eliminate", _feeds((3, 5)), exact=True)
    assert op_counts(out) == {"Identity": 1}
    assert "graph output fed directly by a graph input" in reasons(res)


def test_identity_onto_another_graph_output_is_kept():
    b = Builder()
    x = b.input("x", [3, 5])
    b.node("Relu", [x], outputs=["y1"])
    b.node("Identity", ["y1"], outputs=["y2"])
    b.output("y1", [3, 5])
    b.output("y2", [3, 5])
    out, res = apply(b.model(), "eliminate", _feeds((3, 5)), exact=True)
    assert op_counts(out) == {"Relu": 1, "Identity": 1}
    assert res.skips


# ------------------------------------------------------------------------------------------ Dropout
@pytest.mark.parametrize("opset", [7, 9, 10, 11, 12, 13, 17])
def test_inference_dropout_removed(opset):
    def build(b, x):
        if opset < 12:
            return b.node("Dropout", [x], n_out=2 if opset >= 10 else 1, ratio=0.4)
        return b.node("Dropout", [x, b.const(0.4), b.const(False, dtype=np.bool_)], n_out=2)

    model = _unary(lambda b, x: build(b, x)[0] if isinstance(build(b, x), list) else build(b, x), opset=opset)
    out, res = apply(model, "eliminate", _feeds(), exact=True)
    assert "Dropout" not in op_counts(out)
    assert res.counters["dropout"] >= 1


def test_dropout_with_used_mask_is_kept():
    b = Builder(13)
    x = b.input("x", [3, 4, 5])
    b.node("Dropout", [x], outputs=["y", "mask"])
    b.output("y", [3, 4, 5])
    b.output("mask", [3, 4, 5], TensorProto.BOOL)
    out, res = apply(b.model(), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Dropout": 1}
    assert "mask output is used" in reasons(res)


@pytest.mark.parametrize("mode", ["true", "input"])
def test_training_mode_dropout_is_kept(mode):
    b = Builder(13)
    x = b.input("x", [3, 4, 5])
    tm = b.const(True, dtype=np.bool_) if mode == "true" else b.input("train", [], TensorProto.BOOL)
    b.node("Relu", [b.node("Dropout", [x, b.const(0.5), tm])], outputs=["y"])
    b.output("y", [3, 4, 5])
    graph, res = run_on_graph(b.model(), "eliminate")
    assert [n.op for n in graph.nodes] == ["Dropout", "Relu"]
    assert ("training_mode is true" if mode == "true" else "not a constant") in reasons(res)


# ------------------------------------------------------------------------------------------ Reshape
@pytest.mark.parametrize("target", [[3, 4, 5], [0, -1, 5], [0, 0, 0], [-1, 4, 5]])
def test_noop_reshape_removed(target):
    model = _unary(lambda b, x: b.node("Reshape", [x, b.const(target, dtype=np.int64)]))
    out, _ = apply(model, "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}


@pytest.mark.parametrize("target", [[3, 20], [4, 3, 5], [3, 5, 4]])
def test_real_reshape_kept(target):
    model = _unary(lambda b, x: b.node("Reshape", [x, b.const(target, dtype=np.int64)]))
    out, _ = apply(model, "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Reshape": 1, "Relu": 1}


def test_noop_reshape_with_dynamic_batch_removed():
    model = _unary(lambda b, x: b.node("Reshape", [x, b.const([-1, 4], dtype=np.int64)]), shape=["N", 4])
    out, _ = apply(model, "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Relu": 1}


def test_reshape_chain_merged():
    def build(b, x):
        return b.node(
            "Reshape", [b.node("Reshape", [x, b.const([12, 5], dtype=np.int64)]), b.const([3, 20], dtype=np.int64)]
        )

    out, res = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Reshape": 1, "Relu": 1}
    assert res.counters["reshape_merged"] == 1


def test_reshape_chain_copying_a_dim_not_merged():
    def build(b, x):  # the 0 copies dim 0 of the intermediate (12), not of x (3)
        return b.node(
            "Reshape", [b.node("Reshape", [x, b.const([12, 5], dtype=np.int64)]), b.const([0, 5, 1], dtype=np.int64)]
        )

    out, _ = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert op_counts(out)["Reshape"] == 2


def test_noop_reshape_writing_a_graph_output():
    b = Builder()
    x = b.input("x", [3, 4, 5])
    r = b.node("Relu", [x])
    b.node("Reshape", [r, b.const([3, 4, 5], dtype=np.int64)], outputs=["y"])
    b.node("Neg", [r], outputs=["z"])  # another reader of the bypassed tensor
    b.output("y", [3, 4, 5])
    b.output("z", [3, 4, 5])
    out, _ = apply(b.model(), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1, "Neg": 1}
    assert [o.name for o in out.graph.output] == ["y", "z"]


# ------------------------------------------------------------------------------------------ Transpose
def test_identity_transpose_removed():
    out, _ = apply(_unary(lambda b, x: b.node("Transpose", [x], perm=[0, 1, 2])), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}


def test_transpose_pair_cancelled():
    def build(b, x):
        return b.node("Transpose", [b.node("Transpose", [x], perm=[2, 0, 1])], perm=[1, 2, 0])

    out, res = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}
    assert res.counters["dead_nodes"] == 1  # the first Transpose, dead after the bypass


def test_transpose_pair_composed():
    def build(b, x):
        return b.node("Transpose", [b.node("Transpose", [x], perm=[2, 0, 1])], perm=[0, 2, 1])

    out, res = apply(_unary(build, out_shape=None), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Transpose": 1, "Relu": 1}
    assert res.counters["transpose_merged"] == 1


def test_transpose_without_perm_reverses():
    out, _ = apply(_unary(lambda b, x: b.node("Transpose", [x])), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Transpose": 1, "Relu": 1}


# ------------------------------------------------------------------------------------------ Cast, Pad, Slice...
def test_cast_to_same_type_removed_other_kept():
    def build(b, x):
        same = b.node("Cast", [x], to=TensorProto.FLOAT)
        like = b.node("CastLike", [same, b.const([1.0])])
        return b.node("Cast", [b.node("Cast", [like], to=TensorProto.INT32)], to=TensorProto.FLOAT)

    out, res = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Cast": 2, "Relu": 1}
    assert res.counters["cast"] == 2


@pytest.mark.parametrize("opset", [7, 11, 13, 18])
def test_zero_pad_removed(opset):
    def build(b, x):
        if opset < 11:
            return b.node("Pad", [x], pads=[0] * 6)
        return b.node("Pad", [x, b.const([0] * 6, dtype=np.int64)])

    out, _ = apply(_unary(build, opset=opset), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}


def test_nonzero_pad_kept():
    model = _unary(lambda b, x: b.node("Pad", [x, b.const([0, 0, 1, 0, 0, 0], dtype=np.int64)]))
    out, _ = apply(model, "eliminate", _feeds(), exact=True)
    assert op_counts(out)["Pad"] == 1


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps", "noop"),
    [
        ([0], [INT_MAX], [1], None, True),
        ([-4], [100], [-2], None, True),
        ([0, 0], [3, 5], [0, 2], [1, 1], True),
        ([0], [3], [1], None, False),
        ([1], [INT_MAX], [2], None, False),
        ([-1], [-INT_MAX], [1], [-1], False),
    ],
)
@pytest.mark.parametrize("opset", [9, 13])
def test_slice(starts, ends, axes, steps, noop, opset):
    if opset < 10 and steps:
        pytest.skip("steps since opset 10")

    def build(b, x):
        if opset < 10:
            return b.node("Slice", [x], starts=starts, ends=ends, axes=axes)
        ins = [x, b.const(starts, dtype=np.int64), b.const(ends, dtype=np.int64), b.const(axes, dtype=np.int64)]
        if steps:
            ins.append(b.const(steps, dtype=np.int64))
        return b.node("Slice", ins)

    out, _ = apply(_unary(build, opset=opset), "eliminate", _feeds(), exact=True)
    assert ("Slice" not in op_counts(out)) == noop


def test_slice_to_the_end_of_a_dynamic_dim_removed():
    def build(b, x):
        return b.node("Slice", [x, *(b.const(v, dtype=np.int64) for v in ([0], [INT_MAX], [0]))])

    out, _ = apply(_unary(build, shape=["N", 4]), "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Relu": 1}


@pytest.mark.parametrize(
    ("target", "noop"), [([1, 5], True), ([3, 1, 5], True), ([3, 4, 5], False), ([2, 3, 1, 5], False)]
)
def test_expand(target, noop):
    model = _unary(lambda b, x: b.node("Expand", [x, b.const(target, dtype=np.int64)]), shape=(3, 1, 5))
    out, _ = apply(model, "eliminate", _feeds((3, 1, 5)), exact=True)
    assert ("Expand" not in op_counts(out)) == noop


def test_single_input_concat_and_single_output_split_removed():
    def build(b, x):
        return b.node("Split", [b.node("Concat", [x], axis=1)], axis=1)

    out, res = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}
    assert res.counters["concat"] == 1 and res.counters["split"] == 1


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize(
    ("first", "a1", "a2", "noop"),
    [
        ("Squeeze", [1], [1], True),
        ("Squeeze", [-2], [1], True),
        ("Squeeze", None, [1], True),
        ("Unsqueeze", [-1], [-1], True),
        ("Unsqueeze", [0], [2], False),
        ("Squeeze", [1], [0], False),
    ],
)
def test_squeeze_unsqueeze_pairs(opset, first, a1, a2, noop):
    second = "Unsqueeze" if first == "Squeeze" else "Squeeze"

    def node(b, op, x, axes):
        if axes is None:
            return b.node(op, [x])
        if opset < 13:
            return b.node(op, [x], axes=axes)
        return b.node(op, [x, b.const(axes, dtype=np.int64)])

    model = _unary(lambda b, x: node(b, second, node(b, first, x, a1), a2), shape=(3, 1, 5), opset=opset)
    out, _ = apply(model, "eliminate", _feeds((3, 1, 5)), exact=True)
    assert (op_counts(out) == {"Relu": 1}) == noop


@pytest.mark.parametrize(
    ("op", "value", "const_first", "noop"),
    [
        ("Mul", np.ones(5), False, True),
        ("Mul", np.ones((1, 1, 5)), True, True),
        ("Div", 1.0, False, True),
        ("Add", 0.0, True, True),
        ("Sub", np.zeros((4, 1)), False, True),
        ("Sub", 0.0, True, False),  # 0 - x
        ("Div", 1.0, True, False),  # 1 / x
        ("Mul", np.ones((2, 3, 4, 5)), False, False),  # broadcast grows the output
        ("Mul", np.array([1.0, 1.0, 1.0, 1.0, 2.0]), False, False),
    ],
)
def test_neutral_arithmetic(op, value, const_first, noop):
    def build(b, x):
        c = b.const(value)
        return b.node(op, [c, x] if const_first else [x, c])

    out, _ = apply(_unary(build), "eliminate", _feeds(), exact=True)
    assert (op_counts(out) == {"Relu": 1}) == noop


# ------------------------------------------------------------------------------------------ duplicates
def test_duplicate_initializers_merged_first_name_kept():
    b = Builder()
    x = b.input("x", [3, 4])
    v = np.arange(4, dtype=np.float32) + 0.5
    a = b.node("Mul", [x, b.const(v, "w_first")])
    c = b.node("Add", [a, b.const(v, "w_second")])
    d = b.node("Mul", [c, b.const(np.array([2.0, -0.0, 1.0, 3.0]), "neg_zero")])
    b.node("Add", [d, b.const(np.array([2.0, 0.0, 1.0, 3.0]), "pos_zero")], outputs=["y"])
    b.output("y", [3, 4])
    out, res = apply(b.model(), "eliminate", _feeds((3, 4)), exact=True)
    names = sorted(t.name for t in out.graph.initializer)
    assert names == ["neg_zero", "pos_zero", "w_first"]
    assert res.counters["duplicate_initializers"] == 1
    np.testing.assert_array_equal(init(out, "w_first"), v)


def test_duplicate_nodes_merged_in_cascade():
    b = Builder()
    x = b.input("x", [3, 4])
    e1 = b.node("Exp", [b.node("Relu", [x])])
    e2 = b.node("Exp", [b.node("Relu", [x])])
    t1 = b.node("Transpose", [e1], perm=[1, 0])
    t2 = b.node("Transpose", [e2], perm=[1, 0])
    t3 = b.node("Transpose", [e2], perm=[0, 1])  # different attribute (identity: removed as a no-op)
    b.node("Sum", [t1, t2, b.node("Transpose", [t3], perm=[1, 0])], outputs=["y"])
    b.output("y", [4, 3])
    out, res = apply(b.model(), "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Relu": 1, "Exp": 1, "Transpose": 1, "Sum": 1}
    assert res.counters["duplicate_nodes"] == 4


def test_duplicate_writing_graph_output_is_the_one_kept():
    b = Builder()
    x = b.input("x", [3, 4])
    a = b.node("Relu", [x])
    b.node("Relu", [x], outputs=["y"])
    b.node("Exp", [a], outputs=["z"])
    b.output("z", [3, 4])
    b.output("y", [3, 4])
    out, _ = apply(b.model(), "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Relu": 1, "Exp": 1}
    assert [o.name for o in out.graph.output] == ["z", "y"]


def test_duplicates_both_writing_graph_outputs_kept():
    b = Builder()
    x = b.input("x", [3, 4])
    b.node("Relu", [x], outputs=["y1"])
    b.node("Relu", [x], outputs=["y2"])
    b.output("y1", [3, 4])
    b.output("y2", [3, 4])
    out, res = apply(b.model(), "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Relu": 2}
    assert "both write graph outputs" in reasons(res)


def test_nondeterministic_nodes_not_merged():
    b = Builder()
    x = b.input("x", [3, 4])
    r1 = b.node("RandomNormalLike", [x], seed=1.0)
    r2 = b.node("RandomNormalLike", [x], seed=1.0)
    b.node("Add", [r1, r2], outputs=["y"])
    b.output("y", [3, 4])
    graph, _ = run_on_graph(b.model(), "eliminate")
    assert [n.op for n in graph.nodes].count("RandomNormalLike") == 2


def test_dead_nodes_counted():
    b = Builder()
    x = b.input("x", [3, 4])
    b.node("Exp", [b.node("Neg", [x])])  # reaches no output
    b.node("Relu", [x], outputs=["y"])
    b.output("y", [3, 4])
    graph, res = run_on_graph(b.model(), "eliminate")
    assert res.counters["dead_nodes"] == 2
    assert [n.op for n in graph.nodes] == ["Relu"]


# ------------------------------------------------------------------------------------------ options
def _all_kinds(b, x):
    t = b.node("Identity", [x])
    t = b.node("Dropout", [t])
    t = b.node("Reshape", [t, b.const([3, 4, 5], dtype=np.int64)])
    t = b.node("Transpose", [t], perm=[0, 1, 2])
    t = b.node("Cast", [t], to=TensorProto.FLOAT)
    t = b.node("Pad", [t, b.const([0] * 6, dtype=np.int64)])
    t = b.node("Slice", [t, *(b.const(v, dtype=np.int64) for v in ([0], [INT_MAX], [1]))])
    t = b.node("Expand", [t, b.const([1], dtype=np.int64)])
    t = b.node("Concat", [t], axis=0)
    t = b.node("Split", [t], axis=0)
    t = b.node("Squeeze", [b.node("Unsqueeze", [t, b.const([0], dtype=np.int64)]), b.const([0], dtype=np.int64)])
    return b.node("Mul", [t, b.const(1.0)])


KIND_OPS = {
    "identity": "Identity",
    "dropout": "Dropout",
    "reshape": "Reshape",
    "transpose": "Transpose",
    "cast": "Cast",
    "pad": "Pad",
    "slice": "Slice",
    "expand": "Expand",
    "concat": "Concat",
    "split": "Split",
    "squeeze_pairs": "Squeeze",
    "neutral": "Mul",
}


def test_every_kind_removed_by_default():
    out, res = apply(_unary(_all_kinds), "eliminate", _feeds(), exact=True)
    assert op_counts(out) == {"Relu": 1}
    for kind in KIND_OPS:
        assert res.counters.get(kind, 0) >= 1, kind


@pytest.mark.parametrize("kind", sorted(KIND_OPS))
def test_each_kind_can_be_disabled(kind):
    out, _ = apply(_unary(_all_kinds), f"eliminate({kind}=false)", _feeds(), exact=True)
    assert op_counts(out)[KIND_OPS[kind]] == 1
    assert sum(op_counts(out).values()) == 2 + (kind == "squeeze_pairs")


def test_duplicate_options_can_be_disabled():
    b = Builder()
    x = b.input("x", [3, 4])
    b.node("Add", [b.node("Mul", [x, b.const([2.0])]), b.node("Mul", [x, b.const([2.0])])], outputs=["y"])
    b.output("y", [3, 4])
    out, _ = apply(b.model(), "eliminate(duplicate_initializers=false)", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Mul": 2, "Add": 1} and len(out.graph.initializer) == 2
    out, _ = apply(b.model(), "eliminate(duplicate_nodes=false)", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Mul": 2, "Add": 1} and len(out.graph.initializer) == 1
    out, _ = apply(b.model(), "eliminate", _feeds((3, 4)), exact=True)
    assert op_counts(out) == {"Mul": 1, "Add": 1}


# ------------------------------------------------------------------------------------------ subgraphs, functions
def _if_feeds(cond):
    return {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, "cond": np.array(cond)}


@pytest.mark.parametrize("cond", [True, False])
def test_outer_identity_read_inside_if_branches_removed(cond):
    model = models.with_if_subgraph()  # both branches read the outer Identity's output
    out, res = apply(model, "eliminate", _if_feeds(cond), exact=True)
    assert "Identity" not in op_counts(out)
    assert res.counters["identity"] == 1
    for branch in out.graph.node[0].attribute:
        assert branch.g.node[0].input[0] == "x"  # the capture now reads the graph input


def _if_model(then_nodes, then_out):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    then_g = helper.make_graph(
        then_nodes, "then", [], [helper.make_tensor_value_info(then_out, TensorProto.FLOAT, [2, 3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    m = helper.make_model(helper.make_graph(nodes, "g", [x, cond], [y]), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("cond", [True, False])
def test_identity_inside_branch_removed(cond):
    model = _if_model(
        [
            helper.make_node("Identity", ["r"], ["i"], name="inner_id"),
            helper.make_node("Exp", ["i"], ["t_out"], name="exp"),
        ],
        "t_out",
    )
    out, res = apply(model, "eliminate", _if_feeds(cond), exact=True)
    then = next(a.g for a in out.graph.node[1].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Exp"] and then.node[0].input[0] == "r"
    assert res.counters["identity"] == 1


@pytest.mark.parametrize("cond", [True, False])
def test_branch_output_identity_of_outer_tensor_kept(cond):
    model = _if_model([helper.make_node("Identity", ["r"], ["t_out"], name="inner_id")], "t_out")
    out, res = apply(model, "eliminate", _if_feeds(cond), exact=True)
    then = next(a.g for a in out.graph.node[1].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Identity"]
    assert [n.op_type for n in out.graph.node] == ["Relu", "If"]  # the outer Relu still writes "r"
    assert "outer-scope tensor" in reasons(res)


def test_loop_body_with_pass_through_condition():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond_id"),
            helper.make_node("Add", ["v_in", "one_id"], ["v_out"], name="body_add"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 3]),
        ],
    )
    b = Builder(13)
    x = b.input("x", [2, 3])
    b.node("Identity", [x], outputs=["one_id"])
    b.node("Loop", [b.const(3, dtype=np.int64), b.const(True, dtype=np.bool_), x], outputs=["y"], body=body)
    b.output("y", [2, 3])
    out, res = apply(b.model(), "eliminate", _feeds((2, 3)), exact=True)
    body_out = out.graph.node[-1].attribute[0].g
    assert [n.op_type for n in body_out.node] == ["Identity", "Add"]  # the condition pass-through stays
    assert body_out.node[1].input[1] == "x"  # the outer Identity is gone, the capture reads the graph input
    assert res.counters["identity"] == 1


def test_local_function_preserved():
    model = models.with_local_function()
    out, _ = apply(model, "eliminate", {"x": np.ones((3, 5), np.float32)}, exact=True)
    assert [f.name for f in out.functions] == ["Scale2"]
    assert [n.op_type for n in out.functions[0].node] == ["Constant", "Mul"]


def test_subgraphs_option_leaves_bodies_alone():
    model = _if_model(
        [
            helper.make_node("Identity", ["r"], ["i"], name="inner_id"),
            helper.make_node("Exp", ["i"], ["t_out"], name="exp"),
        ],
        "t_out",
    )
    out, _ = apply(model, "eliminate(subgraphs=false)", _if_feeds(True), exact=True)
    then = next(a.g for a in out.graph.node[1].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Identity", "Exp"]


def test_light_model_dropout_and_duplicates():
    """squeezenet (opset 9, IR 3): the inference Dropout removed, equal-valued weights shared."""
    from tests.support.run import LIGHT_DIR

    model = onnx.load(str(LIGHT_DIR / "light_squeezenet.onnx"))
    feeds = {"data_0": np.random.default_rng(0).random((1, 3, 224, 224), np.float32)}
    out, res = apply(model, "fold-constants,eliminate", feeds)
    assert "Dropout" not in op_counts(out)
    assert res.counters["dropout"] == 1 and res.counters["duplicate_initializers"] >= 1


# ------------------------------------------------------------------------------------------ scale
def test_long_identity_chain_is_linear():
    """20,000 Identity nodes in seconds (each bypass used to walk the whole graph: > 300 s before)."""
    import time

    b = Builder()
    t = b.input("x", [2, 3])
    for _ in range(20_000):
        t = b.node("Identity", [t])
    b.node("Relu", [t], outputs=["y"])
    b.output("y", [2, 3])
    graph = import_model(normalize(b.model()))
    start = time.process_time()
    result = get_pass("eliminate")()(graph, PassContext())
    seconds = time.process_time() - start
    assert [n.op for n in graph.nodes] == ["Relu"] and graph.nodes[0].inputs[0].name == "x"
    assert result.counters["identity"] == 20_000
    assert seconds < 60, f"eliminate took {seconds:.1f} s of CPU on a 20,000-node chain"
