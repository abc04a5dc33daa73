"""Property tests: random MatMul / Gemm / Conv stacks through the share passes, compared with the model
whose weights are replaced by the decoded ones (exact where the op is the same, tight otherwise)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from onnxcomp import ops
from onnxcomp.api import optimize
from tests.support.compressed import (
    assert_exact,
    custom_nodes,
    decoded_weights,
    make_model,
    with_decoded_weights,
)
from tests.support.run import assert_same_outputs


@st.composite
def dense_stacks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dims = [draw(st.integers(1, 23)) for _ in range(draw(st.integers(2, 4)))]
    nodes, inits, x = [], {}, "x"
    for i, (k, n) in enumerate(itertools.pairwise(dims)):
        kind = draw(st.sampled_from(["matmul", "matmul_add", "gemm"]))
        w = rng.standard_normal((k, n)).astype(np.float32)
        y = f"h{i}"
        if kind == "gemm":
            trans_b = draw(st.booleans())
            inits[f"w{i}"] = w.T.copy() if trans_b else w
            ins = ["x" if i == 0 else x, f"w{i}"]
            if draw(st.booleans()):
                inits[f"c{i}"] = rng.standard_normal(draw(st.sampled_from([(n,), (1, n), (1,)]))).astype(np.float32)
                ins.append(f"c{i}")
            nodes.append(
                helper.make_node(
                    "Gemm",
                    ins,
                    [y],
                    name=f"g{i}",
                    transB=int(trans_b),
                    beta=draw(st.sampled_from([1.0, 0.5])),
                )
            )
        else:
            inits[f"w{i}"] = w
            mm = y if kind == "matmul" else f"m{i}"
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [mm], name=f"mm{i}"))
            if kind == "matmul_add":
                inits[f"b{i}"] = rng.standard_normal(n).astype(np.float32)
                nodes.append(helper.make_node("Add", [mm, f"b{i}"], [y], name=f"add{i}"))
        x = y
    nodes.append(helper.make_node("Relu", [x], ["y"], name="relu"))
    model = make_model(nodes, inits, [("x", ["b", dims[0]])], [("y", ["b", dims[-1]])], opset=17)
    feeds = {"x": rng.standard_normal((3, dims[0])).astype(np.float32)}
    return model, feeds


@st.composite
def conv_stacks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    c = cin = draw(st.sampled_from([2, 3, 4, 6]))
    h, w_ = draw(st.integers(5, 9)), draw(st.integers(5, 9))
    size = [h, w_]  # spatial size of the current activation: every layer keeps it >= 1
    nodes, inits, x = [], {}, "x"
    for i in range(draw(st.integers(1, 2))):
        group = draw(st.sampled_from([g for g in (1, 2, 3, c) if c % g == 0]))
        m = group * draw(st.integers(1, 3))
        pads = [draw(st.integers(0, 1)) for _ in range(4)]
        strides = [draw(st.integers(1, 2)), 1]
        dilations = [1, draw(st.integers(1, 2))]
        padded = [size[d] + pads[d] + pads[d + 2] for d in range(2)]
        # kernel extent (k - 1) * dilation + 1 must fit in the padded input
        k = tuple(draw(st.integers(1, min(3, (padded[d] - 1) // dilations[d] + 1))) for d in range(2))
        inits[f"w{i}"] = rng.standard_normal((m, c // group, *k)).astype(np.float32)
        ins = [x, f"w{i}"]
        if draw(st.booleans()):
            inits[f"b{i}"] = rng.standard_normal(m).astype(np.float32)
            ins.append(f"b{i}")
        nodes.append(
            helper.make_node(
                "Conv",
                ins,
                [f"h{i}"],
                name=f"conv{i}",
                group=group,
                pads=pads,
                strides=strides,
                dilations=dilations,
            )
        )
        size = [(padded[d] - (k[d] - 1) * dilations[d] - 1) // strides[d] + 1 for d in range(2)]
        x, c = f"h{i}", m
    nodes.append(helper.make_node("Relu", [x], ["y"], name="relu"))
    model = make_model(nodes, inits, [("x", [1, cin, h, w_])], [("y", None)], opset=17)
    feeds = {"x": rng.standard_normal((1, cin, h, w_)).astype(np.float32)}
    return model, feeds


SPECS = st.sampled_from(
    [
        "kmeans(bits={b})",
        "kmeans(bits={b},group_size=2)",
        "ternary",
        "binary",
        "pow2(bits={p})",
        "prune-weights(ratio=0.7),kmeans(bits={b},sparse=always)",
        "prune-weights(ratio=0.5),kmeans(bits={b},huffman=store)",
        "prune-weights(ratio=0.9),kmeans(bits={b},sparse=never,huffman=store)",
    ]
)


def _check(model, feeds, spec):
    if spec.startswith("prune-weights"):  # the reference is the pruned model
        prune, spec = spec.split("),", 1)
        model, _ = optimize(model, prune + ")")
    out, report = optimize(model, spec)
    onnx.checker.check_model(out)
    # every layer is encoded or skipped with a reason (all layers here are supported: only tiny ones whose
    # encoding would be larger than float32 are left alone)
    layers = sum(n.op_type in ("MatMul", "Gemm", "Conv") for n in model.graph.node)
    encoded = sum(ops.is_weight_op(n.op_type) for n in custom_nodes(out))
    skips = report.passes[-1].skips
    assert encoded + len(skips) == layers
    assert all("would not make it smaller" in s.reason for s in skips), [s.reason for s in skips]
    assert_exact(ops.decode_model(out), out, feeds)
    assert_same_outputs(with_decoded_weights(model, out), out, feeds, rtol=1e-5, atol=1e-5)
    for w in decoded_weights(out).values():
        assert np.isfinite(w).all()
    return out


@settings(max_examples=40)
@given(case=dense_stacks(), spec=SPECS, bits=st.integers(1, 8), pbits=st.integers(2, 8))
def test_random_dense_stacks(case, spec, bits, pbits):
    model, feeds = case
    _check(model, feeds, spec.format(b=bits, p=pbits))


@settings(max_examples=40)
@given(case=conv_stacks(), spec=SPECS, bits=st.integers(1, 8), pbits=st.integers(2, 8))
def test_random_conv_stacks(case, spec, bits, pbits):
    model, feeds = case
    out = _check(model, feeds, spec.format(b=bits, p=pbits))
    assert all(n.op_type in ("CodebookConv", "HuffmanDecode", "RunLengthDecode") for n in custom_nodes(out))


def _in_if_branch(model: onnx.ModelProto) -> onnx.ModelProto:
    """y = If(flag, then: the model's graph, else: the same graph renamed, its weights negated)."""
    from onnx import TensorProto, numpy_helper

    g = model.graph

    def untyped(vi):
        out = onnx.ValueInfoProto()
        out.CopyFrom(vi)
        out.type.tensor_type.ClearField("shape")
        return out

    def renamed(s: str) -> str:
        return s if s in ("", "x") else f"else_{s}"

    nodes = []
    for n in g.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = renamed(n.name)
        m.input[:] = [renamed(i) for i in n.input]
        m.output[:] = [renamed(o) for o in n.output]
        nodes.append(m)
    inits = [numpy_helper.from_array(-numpy_helper.to_array(t), renamed(t.name)) for t in g.initializer]
    outs = [untyped(o) for o in g.output]
    else_outs = [untyped(o) for o in g.output]
    for o in else_outs:
        o.name = renamed(o.name)
    then_g = helper.make_graph(list(g.node), "then", [], outs, list(g.initializer))
    else_g = helper.make_graph(nodes, "else", [], else_outs, inits)
    top = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="if0", then_branch=then_g, else_branch=else_g)],
        "wrapped",
        [*g.input, helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(top, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


@settings(max_examples=20, deadline=None)
@given(case=st.one_of(dense_stacks(), conv_stacks()), spec=SPECS, bits=st.integers(1, 8), pbits=st.integers(2, 8))
def test_layers_inside_an_if_branch_are_encoded_as_in_the_main_graph(case, spec, bits, pbits):
    """The same stack compressed in the main graph and inside an If branch computes the same outputs."""
    from tests.support.run import outputs

    model, feeds = case
    spec = spec.format(b=bits, p=pbits)
    plain, _ = optimize(model, spec)
    wrapped, _ = optimize(_in_if_branch(model), spec)
    onnx.checker.check_model(wrapped)
    then_g = next(a.g for a in wrapped.graph.node[0].attribute if a.name == "then_branch")
    # the branch holds the com.onnxcomp nodes the main graph would
    assert sorted(n.op_type for n in then_g.node if n.domain == ops.DOMAIN) == sorted(
        n.op_type for n in custom_nodes(plain)
    )
    np.testing.assert_array_equal(outputs(wrapped, {**feeds, "flag": np.array(True)})["y"], outputs(plain, feeds)["y"])
    other = outputs(wrapped, {**feeds, "flag": np.array(False)})["y"]
    assert other.shape == outputs(model, feeds)["y"].shape and np.isfinite(other).all()
