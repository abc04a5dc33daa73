"""The native CodebookGather kernel: equal to the op's function body, only valid indices and codes accepted;
CodebookDecode (no native kernel) folded at load under every runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from eputil import ep_nodes, ep_session
from onnx import TensorProto, helper, numpy_helper
from rtutil import check, make_session, run

from onnxcomp import ops as enc


def _model(v, d, bits, group, index_type=TensorProto.INT64, c=None, seed=0, codes=None, dtype=np.float32):
    rng = np.random.default_rng(seed)
    attrs = {} if group is None else {"group_size": group}  # None: the attribute left out (one codebook)
    group = group or v
    g = -(-v // group)
    width = c or (1 << bits)
    book = rng.standard_normal((g, width)).astype(dtype)
    if codes is None:
        codes = rng.integers(0, width, size=(v, d))
    packed = enc.pack_codes(np.asarray(codes, np.int64), bits)
    node = helper.make_node(
        "CodebookGather", ["codebook", "codes", "ids"], ["y"], domain=enc.DOMAIN, bits=bits, D=d, **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("ids", index_type, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(book, "codebook"), numpy_helper.from_array(packed, "codes")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(enc.DOMAIN, 1)],
        functions=enc.function_protos("CodebookGather", 18),
        ir_version=9,
    )
    return model, book, np.asarray(codes)


@pytest.mark.parametrize(
    "v,d,bits,group,shape",
    [
        (301, 19, 4, 301, (3, 11)),
        (1000, 64, 3, 100, (257,)),
        (50, 7, 8, 1, (2, 3, 4)),
        (64, 33, 5, 7, (1,)),
        (9, 5, 2, 9, ()),
        (40, 9, 4, None, (6,)),  # no group_size attribute: one codebook (the default)
    ],
)
def test_native_equals_function_body_and_numpy(runtime_lib, v, d, bits, group, shape):
    model, book, codes = _model(v, d, bits, group)
    group = group or v
    ids = np.random.default_rng(1).integers(-v, v, size=shape).astype(np.int64)
    got = check(model, {"ids": ids}, rtol=0, atol=0)
    rows = np.where(ids < 0, ids + v, ids)
    want = book[rows[..., None] // group, codes[rows]]
    np.testing.assert_array_equal(got, want)
    # int32 indices too, and more than one thread
    m32, _, _ = _model(v, d, bits, group, TensorProto.INT32)
    np.testing.assert_array_equal(run(m32, {"ids": ids.astype(np.int32)}, native=True, threads=2), want)


def test_out_of_range_index_and_code_are_errors(runtime_lib):
    model, _, _ = _model(20, 6, 4, 20)
    for bad in (20, -21):
        with pytest.raises(Exception, match="out of range"):
            run(model, {"ids": np.array([0, bad], np.int64)}, native=True)
    narrow, _, _ = _model(20, 6, 4, 20, c=5, codes=np.full((20, 6), 7))  # codebook of 5 entries, code 7
    with pytest.raises(Exception, match="codebook width"):
        run(narrow, {"ids": np.array([3], np.int64)}, native=True)
    with pytest.raises(Exception, match="int32 or int64"):
        bad_type, _, _ = _model(20, 6, 4, 20, TensorProto.INT16)
        run(bad_type, {"ids": np.array([3], np.int16)}, native=True)
    assert isinstance(model, onnx.ModelProto)


@pytest.mark.parametrize(
    "v,d,bits,group,shape,c,dtype",
    [
        (301, 19, 4, 301, (3, 11), None, np.float32),
        (1000, 64, 3, 100, (257,), 6, np.float32),  # a codebook narrower than 2^bits
        (50, 7, 8, 1, (2, 3, 4), None, np.float16),  # float16 codebooks (the kmeans default), a row each
        (64, 33, 5, 7, (1,), None, np.float32),
        (40, 9, 4, None, (6,), None, np.float32),  # no group_size attribute
    ],
)
def test_ep_runs_the_gather(runtime_lib, ep_devices, v, d, bits, group, shape, c, dtype, tmp_path):
    """Under the EP the gather is one compiled node that decodes only the gathered rows: equal to the table
    (exactly), for int64 and int32 indices, negative ones included, on 1 and 2 threads."""
    model, book, codes = _model(v, d, bits, group, c=c, dtype=dtype)
    ids = np.random.default_rng(2).integers(-v, v, size=shape).astype(np.int64)
    rows = np.where(ids < 0, ids + v, ids)
    want = book.astype(np.float32)[rows[..., None] // (group or v), codes[rows]]
    np.testing.assert_array_equal(ep_session(model).run(None, {"ids": ids})[0], want)
    assert ep_nodes(model, {"ids": ids}, tmp_path), "the EP did not run the CodebookGather"
    m32, _, _ = _model(v, d, bits, group, TensorProto.INT32, c=c, dtype=dtype)
    np.testing.assert_array_equal(ep_session(m32, threads=2).run(None, {"ids": ids.astype(np.int32)})[0], want)


def test_ep_gather_rejects_bad_indices_and_codes(runtime_lib, ep_devices):
    model, _, _ = _model(20, 6, 4, 20)
    sess = ep_session(model)
    for bad in (20, -21):
        with pytest.raises(Exception, match="out of range"):
            sess.run(None, {"ids": np.array([0, bad], np.int64)})
    # a code past the codebook's width fails session creation, naming the node
    narrow, _, _ = _model(20, 6, 4, 20, c=5, codes=np.full((20, 6), 7))
    with pytest.raises(Exception, match=r"OnnxcompExecutionProvider.*CodebookGather.*out of range for a codebook of 5"):
        ep_session(narrow)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_weights_are_folded_at_load_under_every_runtime(runtime_lib, op, tmp_path):
    # kmeans stores LSTM / GRU / RNN W and R as CodebookDecode (passes/share/_recurrent.py): a function body with no
    # native kernel, so onnxruntime folds it at load under the custom-op library and the EP too (with CodebookGather
    # the library's kernel decoded the whole table at every run: 0.80x on ddddocr's recognizer). Each session runs
    # the recurrent op alone, on the decoded weights
    import json

    import onnxruntime as ort

    from onnxcomp import runtime
    from onnxcomp.api import optimize
    from tests.support import models

    model, _, _ = models.recurrent(op, direction="bidirectional")
    out, _ = optimize(model, "kmeans(bits=4,min-params=0)")
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") == 2
    feeds = models.recurrent_feeds()
    body = make_session(out, False).run(None, feeds)

    def profiled(name: str, add) -> tuple[list[np.ndarray], set[str]]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp_path / name)
        add(so)
        sess = ort.InferenceSession(out.SerializeToString(), so)
        got = sess.run(None, feeds)
        events = json.loads(open(sess.end_profiling()).read())
        ran = {e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})}
        return got, ran

    ops_lib = profiled("ops", runtime.register)
    ep = profiled("ep", lambda so: so.add_provider_for_devices(runtime.register_ep(), {}))
    for got, ran in (ops_lib, ep):
        assert ran == {op}, ran
        for g, b in zip(got, body, strict=True):
            np.testing.assert_allclose(g, b, rtol=0, atol=1e-6)


def test_indices_computed_from_constants_load_under_the_ep(runtime_lib):
    # indices a Range of constant scalars computes: onnxruntime folds them after the EP's first look; the EP claimed
    # the gather there and declined it with constant indices, and the session failed to load ("UnpackCodes(-1) is
    # not a registered function/op"). It declines such gathers at once; the folded body gives the table.
    v, d, bits = 40, 9, 4
    rng = np.random.default_rng(0)
    book = rng.standard_normal((1, 16)).astype(np.float32)
    codes = enc.pack_codes(rng.integers(0, 16, size=(v, d)), bits)
    nodes = [
        helper.make_node("Range", ["s", "e", "k"], ["ids"]),
        helper.make_node("CodebookGather", ["codebook", "codes", "ids"], ["y0"], domain=enc.DOMAIN, bits=bits, D=d),
        helper.make_node("Add", ["y0", "x"], ["y"]),
    ]
    scalars = [numpy_helper.from_array(np.array(n, np.int64), k) for k, n in (("s", 0), ("e", v), ("k", 1))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [v, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [v, d])],
        [numpy_helper.from_array(book, "codebook"), numpy_helper.from_array(codes, "codes"), *scalars],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(enc.DOMAIN, 1)],
        functions=enc.function_protos("CodebookGather", 18),
        ir_version=9,
    )
    feeds = {"x": rng.standard_normal((v, d)).astype(np.float32)}
    body = make_session(model, False).run(None, feeds)[0]
    np.testing.assert_array_equal(ep_session(model).run(None, feeds)[0], body)
    np.testing.assert_array_equal(make_session(model, True).run(None, feeds)[0], body)
