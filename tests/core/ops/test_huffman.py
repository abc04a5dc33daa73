"""Canonical Huffman coding of code bytes: lengths, stream format, numpy and ONNX (HuffmanDecode) decoding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from onnxcomp import ops
from onnxcomp.ops import huffman as huff
from tests.support.compressed import make_model, run


def _sequential_decode(coded: huff.Coded) -> np.ndarray:
    """Bit-by-bit decoding from the table alone (independent of the lookup-table decoders)."""
    symbols, lengths = coded.table[0].astype(int), coded.table[1].astype(int)
    codes, code, prev = {}, 0, 0
    for i, (s, ln) in enumerate(zip(symbols, lengths, strict=True)):
        if i:
            code = (code + 1) << (ln - prev)
        codes[(ln, code)] = s
        prev = ln
    bits = np.unpackbits(coded.stream, bitorder="big")
    out, p = [], 0
    for _ in range(coded.count):
        value, ln = 0, 0
        while (ln, value) not in codes:
            value, ln, p = 2 * value + int(bits[p]), ln + 1, p + 1
            assert ln <= huff.MAX_LEN
        out.append(codes[(ln, value)])
    return np.array(out, np.uint8)


def _data(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, 256, n).astype(np.uint8)
    if kind == "geometric":
        return np.minimum(rng.geometric(0.35, n), 255).astype(np.uint8)
    if kind == "zipf":  # very skewed: forces the 16-bit length limit
        return np.minimum(rng.zipf(1.2, n), 255).astype(np.uint8)
    return np.full(n, 7, np.uint8)  # one symbol


@given(
    kind=st.sampled_from(["uniform", "geometric", "zipf", "single"]),
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**16),
)
def test_encode_decode_roundtrip(kind, n, seed):
    data = _data(kind, n, np.random.default_rng(seed))
    coded = huff.encode(data)
    assert coded.table[1].max() <= huff.MAX_LEN
    assert np.all(np.diff(coded.table[1].astype(int)) >= 0)
    assert coded.nbytes == huff.coded_size(data)
    assert coded.offsets.shape == (-(-n // huff.CHUNK),)
    np.testing.assert_array_equal(_sequential_decode(coded), data)
    np.testing.assert_array_equal(huff.decode_stream(coded.stream, coded.table, coded.offsets, n), data)


def test_code_lengths_are_optimal_and_limited():
    counts = np.zeros(256, np.int64)
    counts[:6] = [45, 13, 12, 16, 9, 5]
    lengths = huff.code_lengths(counts)
    assert int((counts * lengths).sum()) == 224  # textbook Huffman cost of this histogram
    fib = np.zeros(256, np.int64)
    a, b = 1, 1
    for i in range(30):  # Fibonacci counts make a maximally deep tree (depth 29 without a limit)
        fib[i] = a
        a, b = b, a + b
    lengths = huff.code_lengths(fib)
    assert lengths.max() <= huff.MAX_LEN
    assert sum(2.0 ** -lengths[lengths > 0]) <= 1.0  # Kraft: a prefix code exists


def test_skewed_data_codes_far_below_eight_bits():
    data = np.where(np.random.default_rng(0).random(20000) < 0.9, 0, 17).astype(np.uint8)
    assert huff.coded_size(data) < 0.2 * data.size


@pytest.mark.parametrize(
    "kind,n,shape",
    [
        ("geometric", 5000, [50, 100]),
        ("zipf", 3073, [3073]),
        ("single", 1, [1]),
        ("uniform", 2048, [2, 4, 256]),
    ],
)
def test_huffman_decode_function_body(kind, n, shape):
    data = _data(kind, n, np.random.default_rng(n))
    coded = huff.encode(data)
    node = helper.make_node("HuffmanDecode", ["s", "t", "o"], ["y8"], domain=ops.DOMAIN, shape=shape)
    cast = helper.make_node("Cast", ["y8"], ["y"], to=1)
    m = make_model(
        [node, cast],
        {"s": coded.stream, "t": coded.table, "o": coded.offsets},
        [],
        [("y", shape)],
        functions=ops.function_protos("HuffmanDecode", 18),
    )
    np.testing.assert_array_equal(run(m, {})[0], data.reshape(shape).astype(np.float32))
    np.testing.assert_array_equal(run(m, {}, optimize=True)[0], data.reshape(shape).astype(np.float32))


# ------------------------------------------------------------------------------------- zero runs (RunLengthDecode)
def _sparse_codes(rows: int, n: int, bits: int, density: float, rng: np.random.Generator) -> np.ndarray:
    codes = rng.integers(1, 1 << bits, (rows, n))
    return np.where(rng.random((rows, n)) < density, codes, 0)


@given(
    bits=st.integers(1, 7),
    rows=st.integers(1, 9),
    n=st.integers(1, 700),
    density=st.sampled_from([0.0, 0.002, 0.05, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_run_length_roundtrip(bits, rows, n, density, seed):
    codes = _sparse_codes(rows, n, bits, density, np.random.default_rng(seed))
    symbols = ops.run_length_encode(codes, bits).astype(int)
    # one symbol per nonzero code, plus fillers (a full run and the zero code) only where a gap needs them
    code, run = symbols % (1 << bits), symbols >> bits
    span = ops.max_zero_run(bits) + 1
    nz = np.flatnonzero(codes.ravel())
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    tail = codes.size - 1 - (nz[-1] if nz.size else -1)
    assert int(np.count_nonzero(code)) == nz.size
    assert symbols.size == nz.size + int((gaps // span).sum()) + -(-tail // span)
    assert np.all(run[code == 0][:-1] == span - 1)  # every zero-code symbol but the last is a full filler
    np.testing.assert_array_equal(ops.run_length_decode(symbols, bits, codes.size), codes.ravel())


def test_run_length_worked_example():
    # bits 2 (runs < 64): codes 0 0 3 0 1 0 0 0 -> (2 zeros, 3), (1 zero, 1), (2 zeros, code 0)
    np.testing.assert_array_equal(
        ops.run_length_encode(np.array([0, 0, 3, 0, 1, 0, 0, 0]), 2), np.array([2 * 4 + 3, 1 * 4 + 1, 2 * 4])
    )
    # bits 4 (runs < 16): 40 zeros then code 5 = filler (15 zeros + zero code) twice, then (8 zeros, 5)
    codes = np.zeros(41, int)
    codes[40] = 5
    np.testing.assert_array_equal(ops.run_length_encode(codes, 4), [0xF0, 0xF0, 0x85])
    with pytest.raises(ValueError, match="expand to"):
        ops.run_length_decode(np.array([5, 3], np.uint8), 2, 5)
    with pytest.raises(ValueError, match=r"bits 1\.\.7"):
        ops.run_length_encode(np.zeros(3, int), 8)


@pytest.mark.parametrize(
    ("bits", "rows", "n", "density"),
    [
        (1, 3, 17, 0.3),
        (2, 1, 1, 1.0),
        (3, 5, 33, 0.1),
        (4, 64, 1024, 0.05),
        (5, 7, 9, 0.0),
        (6, 2, 250, 0.9),
        (7, 4, 301, 0.02),
    ],
)
def test_run_length_decode_function_body(bits, rows, n, density):
    codes = _sparse_codes(rows, n, bits, density, np.random.default_rng(bits * n))
    symbols = ops.run_length_encode(codes, bits)
    packed = ops.pack_codes(codes, bits)
    node = helper.make_node(
        "RunLengthDecode", ["s"], ["y8"], domain=ops.DOMAIN, bits=bits, count=n, shape=list(packed.shape)
    )
    cast = helper.make_node("Cast", ["y8"], ["y"], to=1)
    m = make_model(
        [node, cast],
        {"s": symbols},
        [],
        [("y", list(packed.shape))],
        functions=ops.function_protos("RunLengthDecode", 18),
    )
    onnx.checker.check_model(m, full_check=True)
    # onnx shape inference knows Y's shape (Netron shows it; inspect costs it)
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    y8 = next(v for v in inferred.graph.value_info if v.name == "y8")
    assert [d.dim_value for d in y8.type.tensor_type.shape.dim] == list(packed.shape)
    for optimize in (False, True):
        np.testing.assert_array_equal(run(m, {}, optimize=optimize)[0], packed.astype(np.float32))
