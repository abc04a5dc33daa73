"""The OnnxcompExecutionProvider's convolutions (runtime/src/ep/conv.cc): WinogradConv and CodebookConv run by the
Winograd kernel core, equal to the CPU EP running the ops' function bodies within the lossless tolerance; the tile
from the model or the roofline plan; fused activations; declined layers left to onnxruntime; bad weights rejected
naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import oplib
import pytest
from eputil import cpu_op_counts, ep_nodes, ep_session
from onnx import helper, numpy_helper
from rtutil import run
from winograd_util import assert_lossless

from onnxcomp import ops as enc
from onnxcomp.ops import DOMAIN
from onnxcomp.ops import huffman as huff

pytestmark = pytest.mark.usefixtures("runtime_lib", "ep_devices")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _codebook_conv(c=19, m=24, hw=(17, 14), n=2, bits=4, tile=None, pads=(1, 0, 2, 1), seed=0, **kw):
    rng = np.random.default_rng(seed)
    cb, _, packed = oplib.random_codebook_problem(rng, m, c * 9, bits)
    cb *= np.float32(np.sqrt(2.0 / (9 * c)))
    bias = rng.standard_normal(m).astype(np.float32)
    attrs = {"winograd_tile": tile} if tile else {}
    model = oplib.codebook_conv(
        [n, c, *hw], cb, packed, bits=bits, weight_shape=[m, c, 3, 3], bias=bias, pads=list(pads), attrs=attrs, **kw
    )
    return model, {"X": _x((n, c, *hw), seed + 1)}


def _then(model: onnx.ModelProto, op: str, inits=(), **attrs) -> onnx.ModelProto:
    """The model with `op` applied to its output (Y becomes the op's output)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        node.output[:] = ["conv_out" if o == "Y" else o for o in node.output]
    names = []
    for i, v in enumerate(inits):
        names.append(f"act_in{i}")
        g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), f"act_in{i}"))
    g.node.append(helper.make_node(op, ["conv_out", *names], ["Y"], **attrs))
    return out


@pytest.mark.parametrize("tile", [2, 4, 6])
def test_codebook_conv_with_winograd_tile(tile, tmp_path):
    model, feeds = _codebook_conv(tile=tile)
    want = run(model, feeds, native=False)
    assert_lossless(ep_session(model).run(None, feeds)[0], want)
    assert len(ep_nodes(model, feeds, tmp_path)) == 1


def test_float16_codebook_runs_as_its_float32_values(tmp_path):
    """A float16 codebook (converted at compile time) gives exactly the float32 codebook's outputs."""
    model, feeds = _codebook_conv(tile=4, seed=7)
    half = onnx.ModelProto()
    half.CopyFrom(model)
    for i, t in enumerate(half.graph.initializer):
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2:  # the codebook [G, 2^bits]
            values = numpy_helper.to_array(t).astype(np.float16)
            half.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, t.name))
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values.astype(np.float32), t.name))
    assert len(ep_nodes(half, feeds, tmp_path)) == 1
    want = run(model, feeds, native=False)
    got = ep_session(half).run(None, feeds)[0]
    np.testing.assert_array_equal(got, ep_session(model).run(None, feeds)[0])
    assert_lossless(got, want)


@pytest.mark.parametrize(
    ("op", "inits", "attrs"),
    [("Relu", (), {}), ("LeakyRelu", (), {"alpha": 0.1}), ("Clip", (0.0, 0.5), {}), ("Clip", (-0.25, 0.5), {})],
)
def test_consuming_activation_is_fused(op, inits, attrs, tmp_path):
    model, feeds = _codebook_conv(tile=4, seed=3)
    model = _then(model, op, inits, **attrs)
    want = run(model, feeds, native=False)
    assert_lossless(ep_session(model).run(None, feeds)[0], want)
    assert len(ep_nodes(model, feeds, tmp_path)) == 1, "the convolution and its activation run as one node"


def test_plan_picks_winograd_for_a_big_layer_and_declines_a_small_one(tmp_path):
    big, feeds = _codebook_conv(c=64, m=64, hw=(28, 28), n=1, pads=(1, 1, 1, 1), seed=4)  # no winograd_tile
    assert_lossless(ep_session(big).run(None, feeds)[0], run(big, feeds, native=False))
    assert ep_nodes(big, feeds, tmp_path), "the plan predicts Winograd faster on 64@28x28"
    small, feeds = _codebook_conv(c=3, m=8, hw=(9, 9), n=1, seed=5)  # 3 input channels: im2col wins
    assert_lossless(ep_session(small).run(None, feeds)[0], run(small, feeds, native=False))
    assert not ep_nodes(small, feeds, tmp_path)
    assert not ep_nodes(big, {"X": _x((1, 64, 28, 28))}, tmp_path, options={"ep.onnxcomp.conv": 0})


@pytest.mark.parametrize(
    ("weight_shape", "strides", "group"),
    [([8, 4, 1, 1], [1, 1], 1), ([8, 4, 3, 3], [2, 2], 1), ([8, 2, 3, 3], [1, 1], 2)],
)
def test_other_convolutions_are_declined(weight_shape, strides, group, tmp_path):
    rng = np.random.default_rng(6)
    ckk = int(np.prod(weight_shape[1:]))
    cb, _, packed = oplib.random_codebook_problem(rng, weight_shape[0], ckk, 4)
    model = oplib.codebook_conv(
        [1, 4, 12, 12], cb, packed, bits=4, weight_shape=weight_shape, strides=strides, group=group
    )
    feeds = {"X": _x((1, 4, 12, 12))}
    np.testing.assert_allclose(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False), atol=1e-5)
    assert not ep_nodes(model, feeds, tmp_path)


@pytest.mark.parametrize(("leaky", "clip"), [(None, None), (0.0, None), (0.2, (-1.0, 0.75)), (None, (0.0, 6.0))])
def test_winograd_conv_with_its_activation(leaky, clip, tmp_path):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((16, 11, 3, 3)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    model = oplib.winograd_conv([3, 11, 10, 13], w, bias=bias, pads=(0, 1, 1, 2), tile=2, leaky_alpha=leaky, clip=clip)
    feeds = {"X": _x((3, 11, 10, 13), 8)}
    assert_lossless(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False))
    if leaky is None and clip is None:  # no activation of its own: a consuming Relu joins it
        relu = _then(model, "Relu")
        assert_lossless(ep_session(relu).run(None, feeds)[0], run(relu, feeds, native=False))
        assert len(ep_nodes(relu, feeds, tmp_path)) == 1


def _huffman_conv(corrupt: bool = False):
    """HuffmanDecode(codes) -> CodebookConv (winograd_tile 4)."""
    rng = np.random.default_rng(9)
    m, c = 16, 8
    cb = (np.sort(rng.standard_normal((1, 16)), axis=1) * 0.2).astype(np.float32)
    if corrupt:
        cb = cb[:, :12].copy()  # codes 12..15 now point past the codebook
    codes = np.minimum(rng.geometric(0.3, size=(m, c * 9)) - 1, 15).astype(np.uint8)
    codes[3, 5] = 15
    packed = enc.pack_codes(codes, 4)
    coded = huff.encode(packed)
    model = oplib.codebook_conv(
        [1, c, 12, 12], cb, packed, bits=4, weight_shape=[m, c, 3, 3], pads=[1, 1, 1, 1], attrs={"winograd_tile": 4}
    )
    g = model.graph
    g.initializer.remove(next(t for t in g.initializer if t.name == "codes"))
    g.initializer.extend(
        [
            numpy_helper.from_array(coded.stream, "stream"),
            numpy_helper.from_array(coded.table, "table"),
            numpy_helper.from_array(coded.offsets, "offsets"),
        ]
    )
    g.node.insert(
        0,
        helper.make_node(
            "HuffmanDecode",
            ["stream", "table", "offsets"],
            ["codes"],
            domain=DOMAIN,
            name="huff",
            shape=list(packed.shape),
        ),
    )
    model.functions.extend(enc.function_protos("HuffmanDecode", 18))
    return model, {"X": _x((1, c, 12, 12), 10)}


def test_decoded_codes_run_in_one_node(tmp_path):
    model, feeds = _huffman_conv()
    assert_lossless(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False))
    assert len(ep_nodes(model, feeds, tmp_path)) == 1


def test_bad_weights_fail_session_creation_naming_the_node():
    model, _ = _huffman_conv(corrupt=True)
    with pytest.raises(Exception, match=r"OnnxcompExecutionProvider.*CodebookConv node 'cbconv'.*out of range"):
        ep_session(model)


def test_wrong_channels_at_run_time_is_an_error():
    model, _ = _codebook_conv(tile=4)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"
    with pytest.raises(Exception, match=r"CodebookConv node 'cbconv'.*X has 18 channels"):
        ep_session(model).run(None, {"X": _x((2, 18, 17, 14))})


def test_threads_give_the_same_result():
    model, feeds = _codebook_conv(c=32, m=40, hw=(23, 19), tile=4, seed=11)
    one = ep_session(model, threads=1).run(None, feeds)[0]
    two = ep_session(model, threads=2).run(None, feeds)[0]
    np.testing.assert_array_equal(one, two)


def _merge(parts, x_shape, extra_inputs=(), out="Y"):
    """One model from one-node op models (oplib) and plain nodes: parts are (model, input name, output name) for
    op models (their initializers prefixed) or onnx NodeProtos."""
    nodes, inits, funcs = [], [], {}
    for i, part in enumerate(parts):
        if isinstance(part, onnx.NodeProto):
            nodes.append(part)
            continue
        m, x, y = part
        node = onnx.NodeProto()
        node.CopyFrom(m.graph.node[0])
        node.name = f"{node.op_type.lower()}{i}"
        ren = {t.name: f"p{i}_{t.name}" for t in m.graph.initializer}
        node.input[:] = [x if n == "X" else ren.get(n, n) for n in node.input]
        node.output[:] = [y]
        nodes.append(node)
        for t in m.graph.initializer:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = ren[t.name]
            inits.append(c)
        for f in m.functions:
            funcs[(f.domain, f.name)] = f
    inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape)]
    inputs += [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in extra_inputs]
    graph = helper.make_graph(
        nodes, "chain", inputs, [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)]
    )
    graph.initializer.extend(inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
        functions=list(funcs.values()),
    )
    model.ir_version = 10
    return model


@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_chain_with_pools_and_a_residual_add_runs_as_one_node(ceil_mode, tmp_path):
    """MaxPool -> CodebookConv -> Relu -> MaxPool -> WinogradConv -> Add(skip) -> Relu -> AveragePool ->
    GlobalAveragePool: one compiled node, equal to onnxruntime running the function bodies and its own pools."""
    rng = np.random.default_rng(12)
    c, m = 12, 16
    cbc, _ = _codebook_conv(c=c, m=m, hw=(21, 21), n=2, tile=4, pads=(1, 1, 1, 1), seed=13)
    w = (rng.standard_normal((m, m, 3, 3)) * 0.15).astype(np.float32)
    wc = oplib.winograd_conv([2, m, 10, 10], w, bias=rng.standard_normal(m).astype(np.float32), pads=(1, 1, 1, 1))
    parts = [
        helper.make_node("MaxPool", ["X"], ["p0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        (cbc, "p0", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=ceil_mode),
        (wc, "p1", "c2"),
        helper.make_node("Add", ["skip", "c2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node(
            "AveragePool",
            ["r2"],
            ["p2"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
            ceil_mode=ceil_mode,
        ),
        helper.make_node("GlobalAveragePool", ["p2"], ["Y"]),
    ]
    side = 11 if ceil_mode else 10
    model = _merge(parts, [2, c, 41, 41], [("skip", [2, m, side, side])])
    feeds = {"X": _x((2, c, 41, 41), 14), "skip": _x((2, m, side, side), 15)}
    want = run(model, feeds, native=False)
    got = ep_session(model).run(None, feeds)[0]
    assert_lossless(got, want)
    assert len(ep_nodes(model, feeds, tmp_path)) == 1
    assert not cpu_op_counts(model, feeds, tmp_path), "onnxruntime runs nothing of this chain"


def test_a_value_read_twice_ends_the_chain(tmp_path):
    """conv -> Relu -> (MaxPool, and a graph output): the Relu's value has two readers, so the pool is not chained."""
    cbc, feeds = _codebook_conv(c=8, m=8, hw=(12, 12), n=1, tile=4, pads=(1, 1, 1, 1), seed=16)
    parts = [
        (cbc, "X", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["Y"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Identity", ["r1"], ["Z"]),
    ]
    model = _merge(parts, [1, 8, 12, 12])
    model.graph.output.append(helper.make_tensor_value_info("Z", onnx.TensorProto.FLOAT, None))
    for got, want in zip(ep_session(model).run(None, feeds), run_all(model, feeds)):
        assert_lossless(got, want)
    assert cpu_op_counts(model, feeds, tmp_path).get("MaxPool") == 1


def run_all(model, feeds):
    from rtutil import make_session

    return make_session(model, native=False).run(None, feeds)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize(
    ("kernel", "strides", "pads", "ceil_mode", "include_pad"),
    [
        ([2, 2], [2, 2], [0, 0, 0, 0], 0, 0),
        ([3, 3], [2, 2], [1, 1, 1, 1], 0, 0),
        ([3, 3], [2, 2], [1, 1, 1, 1], 1, 1),
        ([3, 3], [1, 1], [1, 1, 1, 1], 0, 1),
        ([2, 3], [1, 2], [0, 1, 1, 0], 1, 0),
        ([5, 4], [3, 3], [2, 0, 1, 3], 1, 1),
        ([1, 1], [2, 2], [0, 0, 0, 0], 0, 0),
    ],
)
def test_chained_pools_equal_onnxruntime(op, kernel, strides, pads, ceil_mode, include_pad, tmp_path):
    cbc, feeds = _codebook_conv(c=6, m=10, hw=(15, 13), n=2, tile=2, pads=(1, 1, 1, 1), seed=17)
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": ceil_mode}
    if op == "AveragePool":
        attrs["count_include_pad"] = include_pad
    model = _merge([(cbc, "X", "c"), helper.make_node(op, ["c"], ["Y"], **attrs)], [2, 6, 15, 13])
    np.testing.assert_allclose(
        ep_session(model).run(None, feeds)[0], run(model, feeds, native=False), rtol=1e-5, atol=1e-5
    )
    assert not cpu_op_counts(model, feeds, tmp_path), "the pool runs in the EP, chained to the convolution"


def test_chain_with_a_symbolic_batch(tmp_path):
    """A dynamic batch dim (the same symbol on both Add operands): the pool and the residual Add still join the
    chain, and other batch sizes run."""
    cbc, _ = _codebook_conv(c=8, m=8, hw=(14, 14), n=1, tile=4, pads=(1, 1, 1, 1), seed=18)
    parts = [
        (cbc, "X", "c1"),
        helper.make_node("Add", ["c1", "skip"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["Y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = _merge(parts, ["n", 8, 14, 14], [("skip", ["n", 8, 14, 14])])
    for n in (1, 3):
        feeds = {"X": _x((n, 8, 14, 14), 19), "skip": _x((n, 8, 14, 14), 20)}
        assert_lossless(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False))
    assert not cpu_op_counts(model, feeds, tmp_path), "the whole chain runs in the EP"


def _bn_params(m: int, seed: int, var=None):
    """BatchNormalization's scale, B, mean, var as initializers (gamma of both signs and spread magnitudes)."""
    rng = np.random.default_rng(seed)
    gamma = (rng.standard_normal(m) * np.exp(rng.standard_normal(m))).astype(np.float32)
    beta, mean = rng.standard_normal(m).astype(np.float32), rng.standard_normal(m).astype(np.float32)
    var = rng.uniform(0.05, 4.0, m).astype(np.float32) if var is None else np.asarray(var, np.float32)
    return [numpy_helper.from_array(v, f"bn_{k}") for k, v in zip(("s", "b", "m", "v"), (gamma, beta, mean, var))]


@pytest.mark.parametrize("conv", ["CodebookConv", "WinogradConv"])
@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
def test_batch_norm_after_a_convolution_is_folded_into_its_filter(conv, act, tmp_path):
    """conv -> BatchNormalization [-> activation] (kmeans(bits=4) without fuse-bn leaves them so; onnxruntime folds
    them into a plain Conv): the EP folds the BatchNormalization into the decoded filter and bias, one node."""
    c, m = 8, 12
    if conv == "CodebookConv":
        op, feeds = _codebook_conv(c=c, m=m, hw=(13, 11), n=2, tile=4, pads=(1, 1, 1, 1), seed=20)
    else:
        rng = np.random.default_rng(21)
        w = (rng.standard_normal((m, c, 3, 3)) * 0.3).astype(np.float32)
        op = oplib.winograd_conv([2, c, 13, 11], w, pads=(1, 1, 1, 1), tile=2)
        feeds = {"X": _x((2, c, 13, 11), 22)}
    bn_out = "Y" if act is None else "b"
    parts = [
        (op, "X", "c"),
        helper.make_node("BatchNormalization", ["c", *(f"bn_{k}" for k in "sbmv")], [bn_out], epsilon=1e-3),
    ]
    if act == "Relu":
        parts.append(helper.make_node("Relu", ["b"], ["Y"]))
    elif act == "Clip":
        parts.append(helper.make_node("Clip", ["b", "lo", "hi"], ["Y"]))
    model = _merge(parts, [2, c, 13, 11])
    model.graph.initializer.extend(_bn_params(m, 23))
    if act == "Clip":
        model.graph.initializer.extend(
            [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0.0), ("hi", 1.5))]
        )
    assert_lossless(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False))
    assert len(ep_nodes(model, feeds, tmp_path)) == 1
    assert not cpu_op_counts(model, feeds, tmp_path), (
        "onnxruntime runs neither the BatchNormalization nor the activation"
    )


@pytest.mark.parametrize("case", ["mean_is_an_input", "read_twice", "var_plus_eps_not_positive"])
def test_batch_norm_the_ep_cannot_fold_is_left_to_onnxruntime(case, tmp_path):
    """A BatchNormalization with a parameter that is no constant, whose input another node also reads, or whose
    var + epsilon is not positive, runs in onnxruntime after the EP's convolution; the outputs stay equal."""
    c, m = 6, 10
    op, feeds = _codebook_conv(c=c, m=m, hw=(12, 9), n=1, tile=4, pads=(1, 1, 1, 1), seed=24)
    mean = "mean_in" if case == "mean_is_an_input" else "bn_m"
    parts = [(op, "X", "c"), helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", mean, "bn_v"], ["Y"])]
    extra = [("mean_in", [m])] if case == "mean_is_an_input" else []
    model = _merge(parts, [1, c, 12, 9], extra)
    var = np.full(m, 1.0, np.float32)
    if case == "var_plus_eps_not_positive":
        var[3] = -1.0  # sqrt of a negative: channel 3 is NaN in onnxruntime's BatchNormalization, as without the EP
    model.graph.initializer.extend(_bn_params(m, 25, var=var))
    if case == "read_twice":
        model.graph.node.append(helper.make_node("Identity", ["c"], ["Z"]))
        model.graph.output.append(helper.make_tensor_value_info("Z", onnx.TensorProto.FLOAT, None))
    if case == "mean_is_an_input":
        feeds = {**feeds, "mean_in": _x((m,), 26)}
    for got, want in zip(ep_session(model).run(None, feeds), run_all(model, feeds)):
        if case == "var_plus_eps_not_positive":
            assert np.isnan(got[:, 3]).all() and np.isnan(want[:, 3]).all()
            got, want = np.delete(got, 3, axis=1), np.delete(want, 3, axis=1)
        assert_lossless(got, want)
    assert len(ep_nodes(model, feeds, tmp_path)) == 1, "the convolution alone"
    assert cpu_op_counts(model, feeds, tmp_path).get("BatchNormalization") == 1


def test_batch_norm_after_a_convolution_with_its_own_activation_is_not_folded(tmp_path):
    """WinogradConv with a fused activation (relu) then BatchNormalization: BN(relu(conv)) is no affine map of the
    filter, so the BatchNormalization runs in onnxruntime."""
    rng = np.random.default_rng(27)
    c, m = 7, 9
    w = (rng.standard_normal((m, c, 3, 3)) * 0.3).astype(np.float32)
    op = oplib.winograd_conv([1, c, 10, 12], w, pads=(1, 1, 1, 1), tile=2, leaky_alpha=0.0)
    parts = [(op, "X", "c"), helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["Y"])]
    model = _merge(parts, [1, c, 10, 12])
    model.graph.initializer.extend(_bn_params(m, 28))
    feeds = {"X": _x((1, c, 10, 12), 29)}
    assert_lossless(ep_session(model).run(None, feeds)[0], run(model, feeds, native=False))
    assert len(ep_nodes(model, feeds, tmp_path)) == 1
    assert cpu_op_counts(model, feeds, tmp_path).get("BatchNormalization") == 1
