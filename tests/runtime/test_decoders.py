"""Native HuffmanDecode / RunLengthDecode: equal to their function bodies and the numpy decoders, decoded once,
and corrupt streams, tables and symbols rejected with an error naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rtutil import make_session

from onnxcomp import ops as enc
from onnxcomp.ops import huffman as huff

pytestmark = pytest.mark.usefixtures("runtime_lib")

OPSET = 18


def _model(op_type: str, inputs: dict[str, np.ndarray], attrs: dict, out_shape, as_inputs=()) -> onnx.ModelProto:
    """One decoder node whose output is the graph output; inputs named in ``as_inputs`` are graph inputs."""
    node = helper.make_node(op_type, list(inputs), ["Y"], domain=enc.DOMAIN, name=f"dec_{op_type}", **attrs)
    inits = [numpy_helper.from_array(v, k) for k, v in inputs.items() if k not in as_inputs]
    ginputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), [f"{k}{i}" for i in range(v.ndim)])
        for k, v in inputs.items()
        if k in as_inputs
    ]
    graph = helper.make_graph(
        [node], "dec", ginputs, [helper.make_tensor_value_info("Y", TensorProto.UINT8, list(out_shape))], inits
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(enc.DOMAIN, 1)],
        functions=enc.function_protos(op_type, OPSET),
    )
    model.ir_version = 10
    return model


def _huffman(data: np.ndarray, shape, as_inputs=()):
    coded = huff.encode(data)
    ins = {"stream": coded.stream, "table": coded.table, "offsets": coded.offsets}
    return _model("HuffmanDecode", ins, {"shape": list(shape)}, shape, as_inputs), ins


def _run(model, feeds=None, native=True):
    return make_session(model, native=native).run(None, feeds or {})[0]


def _skewed(rng, n):
    # a few frequent symbols and a long tail: code lengths from 1 up to 16
    p = 0.5 ** np.arange(1, 20)
    p /= p.sum()
    return rng.choice(np.arange(19, dtype=np.uint8) * 13, size=n, p=p).astype(np.uint8)


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("as_inputs", [(), ("stream", "table", "offsets")])
def test_huffman_decode_matches_body_and_numpy(n, as_inputs):
    rng = np.random.default_rng(n)
    data = _skewed(rng, n)
    shape = (n,) if n % 5 else (5, n // 5)
    model, ins = _huffman(data, shape, as_inputs)
    feeds = {k: ins[k] for k in as_inputs}
    native = _run(model, feeds)
    np.testing.assert_array_equal(native, data.reshape(shape))
    np.testing.assert_array_equal(native, _run(model, feeds, native=False))
    sess = make_session(model, native=True)
    for _ in range(2):  # later runs (cached decode) give the same bytes
        np.testing.assert_array_equal(sess.run(None, feeds)[0], data.reshape(shape))


def test_huffman_decode_single_symbol_stream():
    data = np.full(3000, 7, np.uint8)
    model, _ = _huffman(data, (3000,))
    np.testing.assert_array_equal(_run(model), data)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("as_input", [False, True])
def test_run_length_decode_matches_body_and_numpy(bits, as_input):
    rng = np.random.default_rng(bits)
    rows, n = 7, 300
    codes = np.where(rng.random((rows, n)) < 0.15, rng.integers(1, 1 << bits, (rows, n)), 0)
    codes[:, -40:] = 0  # trailing zeros end in a filler
    codes[2] = 0  # a whole zero row
    sym = enc.run_length_encode(codes, bits)
    row_bytes = enc.packed_row_bytes(n, bits)
    attrs = {"bits": bits, "count": n, "shape": [rows, row_bytes]}
    model = _model("RunLengthDecode", {"symbols": sym}, attrs, (rows, row_bytes), ("symbols",) if as_input else ())
    feeds = {"symbols": sym} if as_input else {}
    sess = make_session(model, native=True)
    want = enc.pack_codes(codes, bits)
    for _ in range(2):
        np.testing.assert_array_equal(sess.run(None, feeds)[0], want)
    np.testing.assert_array_equal(sess.run(None, feeds)[0], _run(model, feeds, native=False))
    if as_input:  # new symbols at the next run are decoded again, not served from the cache
        other = np.where(rng.random((rows, n)) < 0.3, rng.integers(1, 1 << bits, (rows, n)), 0)
        got = sess.run(None, {"symbols": enc.run_length_encode(other, bits)})[0]
        np.testing.assert_array_equal(got, enc.pack_codes(other, bits))


def _corrupt_huffman(kind: str):
    rng = np.random.default_rng(0)
    data = _skewed(rng, 3000)
    coded = huff.encode(data)
    stream, table, offsets = coded.stream.copy(), coded.table.copy(), coded.offsets.copy()
    if kind == "length0":
        table[1, 0] = 0
    elif kind == "length17":
        table[1, -1] = 17
    elif kind == "decreasing":
        table[1, -1] = 1
    elif kind == "kraft":
        table[1, :] = 1
    elif kind == "offsets_count":
        offsets = offsets[:-1]
    elif kind == "offset_mismatch":
        offsets[1] += 1
    elif kind == "offset_first":
        offsets[0] = 5
    elif kind == "short_stream":
        stream = stream[: len(stream) // 2]
    elif kind == "table_shape":
        table = table[:1]
    return {"stream": stream, "table": table, "offsets": offsets}


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("length0", r"code length 0 of entry 0 is not in \[1, 16\]"),
        ("length17", r"code length 17"),
        ("decreasing", r"non-decreasing"),
        ("kraft", r"prefix code"),
        ("offsets_count", r"offsets must hold ceil\(count/1024\)=3"),
        ("offset_mismatch", r"offsets\[1\]=\d+ does not match the stream"),
        ("offset_first", r"offsets\[0\]=5"),
        ("short_stream", r"past the end of the stream|does not match the stream|cannot hold"),
        ("table_shape", r"table must have shape \[2, n\]"),
    ],
)
@pytest.mark.parametrize("as_inputs", [False, True])
def test_huffman_decode_corrupt_inputs(kind, match, as_inputs):
    ins = _corrupt_huffman(kind)
    names = tuple(ins) if as_inputs else ()
    model = _model("HuffmanDecode", ins, {"shape": [3000]}, (3000,), names)
    with pytest.raises(Exception, match=r"HuffmanDecode node 'dec_HuffmanDecode'.*" + match):
        make_session(model, native=True).run(None, {k: ins[k] for k in names})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("short", r"expand to \d+ codes, expected 7 x 300"),
        ("long", r"past the 7 x 300 codes"),
        ("shape", r"shape\[1\]=9 must be ceil\(count \* bits / 8\)"),
        ("bits", r"bits=8 is out of range \[1, 7\]"),
    ],
)
def test_run_length_decode_corrupt(change, match):
    rng = np.random.default_rng(1)
    rows, n, bits = 7, 300, 4
    codes = np.where(rng.random((rows, n)) < 0.2, rng.integers(1, 16, (rows, n)), 0)
    sym = enc.run_length_encode(codes, bits)
    attrs = {"bits": bits, "count": n, "shape": [rows, enc.packed_row_bytes(n, bits)]}
    if change == "short":
        sym = sym[:-3]
    elif change == "long":
        sym = np.concatenate([sym, np.full(50, 0xF1, np.uint8)])
    elif change == "shape":
        attrs["shape"] = [rows, 9]
    elif change == "bits":
        attrs["bits"] = 8
    model = _model("RunLengthDecode", {"symbols": sym}, attrs, attrs["shape"], ("symbols",))
    with pytest.raises(Exception, match=r"RunLengthDecode node 'dec_RunLengthDecode'.*" + match):
        make_session(model, native=True).run(None, {"symbols": sym})
