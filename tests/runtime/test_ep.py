"""The OnnxcompExecutionProvider (libonnxcomp_ep.so): registration, what it claims, outputs equal to the CPU EP
running the ops' function bodies, decoded weights, bad weights rejected naming the node, coexistence."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import oplib
import pytest
from eputil import cpu_op_counts, ep_nodes, ep_session
from onnx import TensorProto, helper, numpy_helper
from rtutil import run

from onnxcomp import ops as enc
from onnxcomp import runtime
from onnxcomp.ops import DOMAIN
from onnxcomp.ops import huffman as huff
from tests.support.compressed import make_model

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_names_and_paths(ep_devices):
    assert runtime.get_ep_name() == "OnnxcompExecutionProvider"
    assert runtime.get_ep_library_path().is_absolute()
    assert ep_devices and all(d.ep_name == runtime.get_ep_name() for d in ep_devices)
    assert len(runtime.register_ep()) == len(ep_devices)  # registering again is a no-op


@pytest.mark.parametrize(
    ("bits", "group_size", "rows"), [(4, None, 1), (4, 16, 3), (2, None, 2), (1, 64, 1), (3, None, 5)]
)
def test_codebook_matmul_equals_function_body(ep_devices, bits, group_size, rows, tmp_path):
    rng = np.random.default_rng(bits)
    k, n = 96, 200
    cb, _, packed = oplib.random_codebook_problem(rng, k, n, bits, group_size=group_size)
    bias = rng.standard_normal(n).astype(np.float32)
    model = oplib.codebook_matmul(["b", k], cb, packed, bits=bits, n=n, group_size=group_size, bias=bias)
    feeds = {"X": _x((rows, k))}
    body = run(model, feeds, native=False)
    got = ep_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(got, body, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(body).max())))
    assert ep_nodes(model, feeds, tmp_path), "the EP did not run the CodebookMatMul"


@pytest.mark.parametrize(
    ("bits", "group_size", "block_size", "claimed"),
    [(4, 1, 64, True), (3, 7, 128, True), (2, 1, 48, True), (4, 32, 64, False), (4, 1, 24, False)],
)
def test_codebook_matmul_blocks(ep_devices, bits, group_size, block_size, claimed, tmp_path):
    # block codebooks: claimed where the column GEMV reads them (a codebook per channel or odd group, blocks of a
    # multiple of 16 inputs): 1-4 rows there, more rows the GEMM on the panel decoded once; the rest declined
    rng = np.random.default_rng(bits + block_size)
    k, n = 300, 136
    nb = -(-k // block_size)
    cb = rng.standard_normal((-(-n // group_size) * nb, 1 << bits)).astype(np.float16)
    packed = enc.pack_codes(rng.integers(0, 1 << bits, (k, n)), bits)
    attrs = {"bits": bits, "N": n, "group_size": group_size, "block_size": block_size}
    node = helper.make_node("CodebookMatMul", ["X", "cb", "codes", "B"], ["Y"], domain=DOMAIN, **attrs)
    inits = {"cb": cb, "codes": packed, "B": rng.standard_normal(n).astype(np.float32)}
    functions = enc.function_protos("CodebookMatMul", 18, blocks=True)
    model = make_model([node], inits, [("X", ["b", k])], [("Y", None)], functions=functions)
    sess = ep_session(model)
    for rows in (1, 3, 4, 5, 9):
        feeds = {"X": _x((rows, k), seed=rows)}
        body = run(model, feeds, native=False)
        np.testing.assert_allclose(
            sess.run(None, feeds)[0], body, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(body).max()))
        )
    assert bool(ep_nodes(model, {"X": _x((1, k))}, tmp_path)) == claimed


def test_ternary_and_sparse_equal_function_bodies(ep_devices):
    rng = np.random.default_rng(3)
    k, n = 64, 80
    codes = rng.integers(0, 3, size=(k, n)).astype(np.uint8)
    scales = np.abs(rng.standard_normal((1, 2))).astype(np.float32)
    model = oplib.ternary_matmul(["b", k], scales, oplib.pack_bits(codes, 2), n=n)
    feeds = {"X": _x((2, k))}
    np.testing.assert_allclose(
        ep_session(model).run(None, feeds)[0], run(model, feeds, native=False), rtol=1e-4, atol=1e-4
    )
    for index_bits in (4, 8):
        cb, row_ptr, deltas, ecodes, pdeltas, pcodes = oplib.random_sparse_problem(rng, 300, 100, 4, index_bits, 0.1)
        model = oplib.sparse_codebook_matmul(
            ["b", 300], cb, row_ptr, pdeltas, pcodes, bits=4, index_bits=index_bits, n=100
        )
        feeds = {"X": _x((3, 300))}
        want = feeds["X"] @ oplib.decode_sparse(cb, row_ptr, deltas, ecodes, 100, 100)
        np.testing.assert_allclose(ep_session(model).run(None, feeds)[0], want, rtol=1e-4, atol=1e-4)


def _huffman_matmul(k=128, n=256, relu=True):
    """HuffmanDecode(codes) -> CodebookMatMul -> Relu, with function bodies for all."""
    rng = np.random.default_rng(5)
    cb = np.sort(rng.standard_normal((1, 16)), axis=1).astype(np.float32)
    codes = np.minimum(rng.geometric(0.3, size=(k, n)) - 1, 15).astype(np.uint8)
    packed = enc.pack_codes(codes, 4)
    coded = huff.encode(packed)
    nodes = [
        helper.make_node(
            "HuffmanDecode",
            ["stream", "table", "offsets"],
            ["codes"],
            domain=DOMAIN,
            name="huff",
            shape=list(packed.shape),
        ),
        helper.make_node(
            "CodebookMatMul",
            ["X", "cb", "codes", "B"],
            ["mm"],
            domain=DOMAIN,
            name="cmm",
            bits=4,
            N=n,
            group_size=n,
        ),
        helper.make_node("Relu", ["mm"], ["Y"]) if relu else helper.make_node("Identity", ["mm"], ["Y"]),
    ]
    inits = [
        numpy_helper.from_array(cb, "cb"),
        numpy_helper.from_array(np.zeros(n, np.float32), "B"),
        numpy_helper.from_array(coded.stream, "stream"),
        numpy_helper.from_array(coded.table, "table"),
        numpy_helper.from_array(coded.offsets, "offsets"),
    ]
    graph = helper.make_graph(
        nodes,
        "hm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", n])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
        functions=enc.function_protos("HuffmanDecode", 18) + enc.function_protos("CodebookMatMul", 18),
    )
    model.ir_version = 10
    return model, cb, codes


def test_decoded_weights_and_fused_relu(ep_devices, tmp_path):
    model, cb, codes = _huffman_matmul()
    feeds = {"X": _x((2, 128))}
    want = np.maximum(feeds["X"] @ cb[0][codes], 0)
    got = ep_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, run(model, feeds, native=False), rtol=1e-4, atol=1e-4)
    names = ep_nodes(model, feeds, tmp_path)
    assert len(names) == 1, names  # decoder, matmul and Relu compiled into one node


def test_plan_declines_small_layers_claims_many_rows(ep_devices, tmp_path):
    rng = np.random.default_rng(0)
    cb, _, packed = oplib.random_codebook_problem(rng, 64, 64, 4)
    small = oplib.codebook_matmul(["b", 64], cb, packed, bits=4, n=64)
    feeds = {"X": _x((1, 64))}
    sess = ep_session(small, min_weights=1 << 20, profile=str(tmp_path / "p1"))
    sess.run(None, feeds)
    events = json.loads(open(sess.end_profiling()).read())
    assert not [e for e in events if e.get("args", {}).get("provider") == runtime.get_ep_name()]
    many = oplib.codebook_matmul([512, 64], cb, packed, bits=4, n=64)  # 512 static rows: the EP's GEMM
    assert ep_nodes(many, {"X": _x((512, 64))}, tmp_path)


@pytest.mark.parametrize(("bits", "rows", "k", "n"), [(4, 37, 800, 500), (2, 5, 130, 97), (3, 300, 96, 1100)])
def test_many_rows_gemm_equals_function_body(ep_devices, bits, rows, k, n):
    """More than 4 rows: the GEMM on the weights decoded once into floats (kept for later runs), bias and Relu in its
    epilogue; odd row counts, depths over one k block (384) and widths over one column block."""
    if bits == 4:
        model = _huffman_matmul(k=k, n=n)[0]  # decoded codes, fused Relu
    else:
        rng = np.random.default_rng(bits)
        cb, _, packed = oplib.random_codebook_problem(rng, k, n, bits)
        bias = rng.standard_normal(n).astype(np.float32)
        model = oplib.codebook_matmul(["b", k], cb, packed, bits=bits, n=n, bias=bias)
    sess = ep_session(model)
    for seed in (1, 2):  # the second run reuses the float panel
        feeds = {"X": _x((rows, k), seed)}
        body = run(model, feeds, native=False)
        got = sess.run(None, feeds)[0]
        np.testing.assert_allclose(got, body, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(body).max())))


def test_corrupt_weights_fail_session_creation_naming_the_node(ep_devices):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(32, 40)).astype(np.uint8)
    codes[5, 7] = 3
    model = oplib.ternary_matmul(["b", 32], np.ones((1, 2), np.float32), oplib.pack_bits(codes, 2), n=40, name="tern")
    with pytest.raises(
        Exception, match=r"OnnxcompExecutionProvider.*TernaryMatMul node 'tern'.*code 3 at codes row 5, column 7"
    ):
        ep_session(model)
    model, _, _ = _huffman_matmul()
    table = next(t for t in model.graph.initializer if t.name == "table")
    arr = numpy_helper.to_array(table).copy()
    arr[1, :] = 1  # not a prefix code
    table.CopyFrom(numpy_helper.from_array(arr, "table"))
    with pytest.raises(Exception, match=r"OnnxcompExecutionProvider.*HuffmanDecode node 'huff'.*prefix code"):
        ep_session(model)


def test_wrong_x_at_run_time_is_an_error(ep_devices):
    rng = np.random.default_rng(2)
    cb, _, packed = oplib.random_codebook_problem(rng, 48, 40, 4)
    model = oplib.codebook_matmul(["b", "k"], cb, packed, bits=4, n=40, name="cm")
    sess = ep_session(model)
    with pytest.raises(Exception, match=r"CodebookMatMul node 'cm'.*X has K=47"):
        sess.run(None, {"X": _x((2, 47))})


def test_threads_and_coexisting_sessions(ep_devices):
    model, _, _ = _huffman_matmul(k=256, n=512)
    feeds = {"X": _x((3, 256))}
    plain = runtime.session(model, runtime="ort")
    ops = runtime.session(model, runtime="ops")
    one, two = ep_session(model, threads=1), ep_session(model, threads=2)
    want = plain.run(None, feeds)[0]
    for s in (ops, one, two, plain):
        np.testing.assert_allclose(s.run(None, feeds)[0], want, rtol=1e-4, atol=1e-4)


def test_automatic_policy_session(ep_devices):
    model, _, _ = _huffman_matmul()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.set_provider_selection_policy(ort.OrtExecutionProviderDevicePolicy.PREFER_CPU)
    sess = ort.InferenceSession(model.SerializeToString(), so)
    feeds = {"X": _x((1, 128))}
    np.testing.assert_allclose(sess.run(None, feeds)[0], run(model, feeds, native=False), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("passes", ["fuse-bn,kmeans(bits=4)", "fuse-bn,select-conv"])
def test_real_model_under_ep_equals_plain_onnxruntime(ep_devices, passes, tmp_path):
    from winograd_util import assert_lossless

    import onnxcomp
    from models import builders

    m = builders.build("resnet", depth=18, width=0.5, num_classes=1000, image_size=64, batch=1)
    comp, _ = onnxcomp.optimize(m, passes=passes)
    feeds = {comp.graph.input[0].name: _x((1, 3, 64, 64))}
    want = runtime.session(comp, runtime="ort").run(None, feeds)[0]
    got = runtime.session(comp, runtime="ep").run(None, feeds)[0]
    assert_lossless(got, want)
    # the 7 3x3 stride-1 convolutions (and the pools and adds chained to them) run in the EP, the others in ORT
    assert ep_nodes(comp, feeds, tmp_path)
    convs = sum(n.op_type in ("Conv", "CodebookConv", "WinogradConv") for n in comp.graph.node)
    assert cpu_op_counts(comp, feeds, tmp_path).get("Conv", 0) == convs - 7


def _run_length_matmul(corrupt: bool = False):
    """RunLengthDecode(symbols) -> CodebookMatMul (mostly zero codes, as pruned layers store them)."""
    rng = np.random.default_rng(21)
    k, n, bits = 300, 200, 4
    codes = np.where(rng.random((k, n)) < 0.2, rng.integers(1, 16, (k, n)), 0).astype(np.uint8)
    cb = np.sort(rng.standard_normal((1, 16)), axis=1).astype(np.float32)
    cb[0, 0] = 0.0
    sym = enc.run_length_encode(codes, bits)
    if corrupt:
        sym = sym[: len(sym) // 2].copy()  # the stream ends before the last row
    row_bytes = enc.packed_row_bytes(n, bits)
    model = oplib.codebook_matmul(["b", k], cb, enc.pack_codes(codes, bits), bits=bits, n=n, name="cmm")
    g = model.graph
    g.initializer.remove(next(t for t in g.initializer if t.name == "codes"))
    g.initializer.append(numpy_helper.from_array(sym, "symbols"))
    g.node.insert(
        0,
        helper.make_node(
            "RunLengthDecode",
            ["symbols"],
            ["codes"],
            domain=DOMAIN,
            name="rld",
            bits=bits,
            count=n,
            shape=[k, row_bytes],
        ),
    )
    model.functions.extend(enc.function_protos("RunLengthDecode", 18))
    return model, cb, codes


@pytest.mark.parametrize("rows", [1, 9])
def test_run_length_decoded_weights(ep_devices, rows, tmp_path):
    model, cb, codes = _run_length_matmul()
    feeds = {"X": _x((rows, 300))}
    got = ep_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(got, feeds["X"] @ cb[0][codes], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, run(model, feeds, native=False), rtol=1e-4, atol=1e-4)
    assert len(ep_nodes(model, feeds, tmp_path)) == 1  # decoder and matmul in one compiled node


def test_corrupt_run_length_stream_fails_naming_the_decoder(ep_devices):
    model, _, _ = _run_length_matmul(corrupt=True)
    with pytest.raises(Exception, match=r"OnnxcompExecutionProvider.*RunLengthDecode node 'rld'"):
        ep_session(model)


@pytest.mark.parametrize("form", ["scaled", "int8"])
@pytest.mark.parametrize("kind", ["matmul", "conv"])
def test_ep_runs_codebooks_whose_table_is_a_mul_of_constants(ep_devices, kind, form, tmp_path):
    """kmeans(group-size=scaled) writes the table as Mul(Cast(scales [N, 1]), Cast(values [1, C])), an int8
    codebook as Mul(Cast(scales [G, 1]), Cast(entries [G, C])): the EP evaluates the Casts and the Mul when it
    compiles the node (onnxruntime would otherwise inline the op's function body around it)."""
    from onnxcomp.api import optimize

    rng = np.random.default_rng(7)
    if kind == "matmul":
        w = (rng.standard_normal((256, 192)) * 10 ** ((np.arange(192) % 4) / 3)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
        x_shape, y_shape, feeds = ["b", 256], ["b", 192], {"x": _x((1, 256))}
    else:
        w = (rng.standard_normal((64, 32, 3, 3)) * 10 ** ((np.arange(64) % 4) / 3)[:, None, None, None]).astype(
            np.float32
        )
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
        x_shape, y_shape, feeds = [1, 32, 28, 28], [1, 64, 28, 28], {"x": _x((1, 32, 28, 28))}
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = "kmeans(bits=4,group-size=scaled)" if form == "scaled" else "kmeans(bits=4,group-size=1,codebook-dtype=int8)"
    out, report = optimize(model, spec)
    if form == "scaled":
        assert "each output channel's scale" in report.passes[0].layers[0].decision
    else:
        assert TensorProto.INT8 in {t.data_type for t in out.graph.initializer}
    assert [n.op_type for n in out.graph.node].count("Mul") == 1
    assert ep_nodes(out, feeds, tmp_path)  # claimed
    body = run(out, feeds, native=False)
    got = ep_session(out).run(None, feeds)
    np.testing.assert_allclose(got[0], body, rtol=1e-4, atol=1e-4 * float(np.abs(body).max()))


def _residual_block(kind: str):
    """X [b, s, 64] -> MatMul + bias -> Add(other) -> LayerNormalization, 4-bit k-means: ``other`` a tensor of the
    output's shape (residual), a second MatMul's output (two), or a [96] vector (broadcast)."""
    from onnxcomp.api import optimize

    rng = np.random.default_rng(3)
    f, k, n = TensorProto.FLOAT, 64, 96
    inits = [
        numpy_helper.from_array((rng.standard_normal((k, n)) * 0.1).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(np.full(n, 1.5, np.float32), "g"),
        numpy_helper.from_array(np.full(n, 0.25, np.float32), "be"),
    ]
    nodes = [helper.make_node("MatMul", ["X", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"])]
    inputs = [helper.make_tensor_value_info("X", f, ["b", "s", k])]
    if kind == "two":
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.1).astype(np.float32), "w2"))
        inputs.append(helper.make_tensor_value_info("Z", f, ["b", "s", k]))
        nodes += [helper.make_node("MatMul", ["Z", "w2"], ["m2"]), helper.make_node("Add", ["a1", "m2"], ["s"])]
    else:
        inputs.append(helper.make_tensor_value_info("R", f, ["b", "s", n] if kind == "residual" else [n]))
        nodes.append(helper.make_node("Add", ["a1", "R"], ["s"]))
    nodes.append(helper.make_node("LayerNormalization", ["s", "g", "be"], ["Y"], axis=-1))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("Y", f, ["b", "s", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return optimize(model, "kmeans(bits=4,group-size=0,min-params=0)")[0]


@pytest.mark.parametrize("kind", ["residual", "two", "broadcast"])
@pytest.mark.parametrize("rows", [(3, 1), (2, 7)])  # 3 rows: the GEMV; 14: the GEMM on the decoded panel
def test_residual_add_joins_the_matmul(ep_devices, tmp_path, kind, rows):
    # a residual Add of the matmul's output and a tensor of its shape runs in the EP's matmul (onnxruntime would fuse
    # it with the LayerNormalization into a SkipLayerNormalization, slower on CPU); where two matmuls feed the Add,
    # the first takes it and the second still runs in the EP; a broadcast Add stays with onnxruntime
    model = _residual_block(kind)
    b, s = rows
    feeds = {"X": _x((b, s, 64), 1)}
    if kind == "two":
        feeds["Z"] = _x((b, s, 64), 2)
    else:
        feeds["R"] = _x((b, s, 96) if kind == "residual" else (96,), 3)
    want = run(model, feeds, native=False)
    np.testing.assert_allclose(ep_session(model).run(None, feeds)[0], want, rtol=1e-4, atol=1e-4)
    assert len(ep_nodes(model, feeds, tmp_path)) == (2 if kind == "two" else 1)
    cpu = cpu_op_counts(model, feeds, tmp_path)
    assert "SkipLayerNormalization" not in cpu and cpu.get("LayerNormalization") == 1, cpu
    assert cpu.get("Add", 0) == (1 if kind == "broadcast" else 0), cpu


def test_the_ep_is_what_users_get_unless_they_choose(ep_devices, capsys, tmp_path):
    # runtime.session, bench, verify and --verify run a model with com.onnxcomp ops on the EP where it is built
    # (the custom-op library alone ran convolution networks slower than their fp32 originals); the passes' own
    # runs keep the library, and a model without the ops gets plain onnxruntime
    import onnxcomp
    from models import builders
    from onnxcomp.ort import resolve_runtime
    from tests.support.cli import run as cli
    from tests.support.cli import save

    m = builders.build("resnet", depth=18, width=0.25, num_classes=10, image_size=32, batch=1)
    comp, report = onnxcomp.optimize(m, passes="fuse-bn,kmeans(bits=8)", verify=True)
    assert report.verification.runtime == "ep"
    assert resolve_runtime(comp, "auto") == "ep" and resolve_runtime(comp, None) == "ops"
    assert resolve_runtime(m, "auto") == "ort"
    assert "OnnxcompExecutionProvider" in runtime.session(comp).get_providers()
    assert runtime.session(m).get_providers() == ["CPUExecutionProvider"]
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save(m, a)
    save(comp, b)
    code, out, err = cli(capsys, "bench", a, b, "--runs", "2", "--warmup", "1")
    assert code == 0, err
    assert "runtime ep: onnxruntime + OnnxcompExecutionProvider" in out
    code, out, err = cli(capsys, "verify", a, b, "--min-cosine", "0.5")
    assert code == 0, err
    assert "B runs on runtime: ep" in out
    code, out, err = cli(capsys, "bench", a, b, "--runs", "2", "--warmup", "1", "--runtime", "ops")
    assert code == 0 and "runtime ops:" in out


def test_big_weight_decoders_are_decoded_once_for_the_ep(ep_devices, monkeypatch, tmp_path):
    # a Deep-Compressed CNN: its HuffmanDecode codes are decoded once when the EP session is made (before, the
    # custom-op library registered for them ran every CodebookConv the EP declined on codes decoded at every run:
    # a PP-LCNet orientation classifier 0.39x); the outputs equal plain onnxruntime's function bodies
    from winograd_util import assert_lossless

    import onnxcomp
    from models import builders

    m = builders.build("resnet", depth=18, width=0.25, num_classes=10, image_size=32, batch=1)
    comp, _ = onnxcomp.optimize(m, passes="fuse-bn,prune-weights(ratio=0.7),kmeans(bits=4),huffman")
    assert any(n.op_type == "HuffmanDecode" for n in comp.graph.node)
    monkeypatch.setattr(runtime, "DECODER_FOLD_LIMIT", 0)  # every decoder counts as big
    decoded = runtime.predecoded(comp)
    assert not any(n.op_type in ("HuffmanDecode", "RunLengthDecode") for n in decoded.graph.node)
    assert len(decoded.graph.node) < len(comp.graph.node)
    feeds = {comp.graph.input[0].name: _x((1, 3, 32, 32))}
    want = runtime.session(comp, runtime="ort").run(None, feeds)[0]
    calls = []
    register = runtime.register
    monkeypatch.setattr(runtime, "register", lambda so: calls.append(so) or register(so))
    assert_lossless(runtime.session(comp, runtime="ep").run(None, feeds)[0], want)
    assert len(calls) == 1  # the decoders' own session only, not the EP's
    # without the library, the declined layers run onnxruntime's own convolutions on the folded weights
    counts = cpu_op_counts(decoded, feeds, tmp_path)
    assert "CodebookConv" not in counts and "HuffmanDecode" not in counts and counts.get("Conv", 0) > 0
    assert runtime.predecoded(m) is None  # nothing to decode


def test_decoded_codes_read_inside_an_if_branch_are_kept(ep_devices, monkeypatch):
    # the decoder sits in the main graph, its codes are read by a CodebookMatMul inside both branches of an If (as
    # the layers of Silero VAD sit): decoded once, the codes stay as an initializer the branches read
    model, _, _ = _huffman_matmul(relu=False)
    g = model.graph
    mm = next(n for n in g.node if n.op_type == "CodebookMatMul")

    def branch(name):
        node = helper.make_node(
            "CodebookMatMul",
            list(mm.input),
            [f"{name}_y"],
            domain=DOMAIN,
            name=f"{name}_cmm",
            bits=4,
            N=256,
            group_size=256,
        )
        return helper.make_graph(
            [node], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)]
        )

    keep = [n for n in g.node if n.op_type == "HuffmanDecode"]
    del g.node[:]
    g.node.extend(keep)
    g.node.append(
        helper.make_node("If", ["c"], ["Y"], then_branch=branch("then"), else_branch=branch("else"), name="if")
    )
    g.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    monkeypatch.setattr(runtime, "DECODER_FOLD_LIMIT", 0)
    decoded = runtime.predecoded(model)
    assert "codes" in {t.name for t in decoded.graph.initializer}
    assert not any(n.op_type == "HuffmanDecode" for n in decoded.graph.node)
    feeds = {"X": _x((3, 128)), "c": np.array(True)}
    want = runtime.session(model, runtime="ort").run(None, feeds)[0]
    got = runtime.session(model, runtime="ep").run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
