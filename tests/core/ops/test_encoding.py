"""Bit packing, EIE sparse rows and the function bodies of the com.onnxcomp ops (exact vs numpy)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper

from onnxcomp import ops
from tests.support.compressed import make_model, run


# ------------------------------------------------------------------------------------------ bit packing
@given(bits=st.integers(1, 8), rows=st.integers(1, 5), n=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_pack_roundtrip_all_widths(bits, rows, n, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (rows, n))
    packed = ops.pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (rows, (n * bits + 7) // 8)
    np.testing.assert_array_equal(ops.unpack_codes(packed, bits, n), codes)
    # unused trailing bits are zero: the row's stream beyond n*bits is all 0
    stream = np.unpackbits(packed, axis=1, bitorder="little")
    assert not stream[:, n * bits :].any()


def test_pack_layout_is_little_endian_and_straddles():
    # 3-bit codes 5, 3, 7: stream bits (LSB first) 101 110 111 -> byte0 = bits 0..7, byte1 = bit 8
    packed = ops.pack_codes(np.array([5, 3, 7]), 3)
    bits = [1, 0, 1, 1, 1, 0, 1, 1, 1]
    expect0 = sum(b << i for i, b in enumerate(bits[:8]))
    assert packed.tolist() == [[expect0, bits[8]]]
    # 4-bit: code 0 in the low nibble
    assert ops.pack_codes(np.array([[1, 2]]), 4).tolist() == [[0x21]]


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError):
        ops.pack_codes(np.array([4]), 2)


# ------------------------------------------------------------------------------------------ EIE
def _sparse_codes(rng, k, n, density, levels=16):
    codes = rng.integers(1, levels, (k, n)) * (rng.random((k, n)) < density)
    return codes


@given(
    k=st.integers(1, 6),
    n=st.integers(1, 600),
    density=st.floats(0.0, 1.0),
    ib=st.sampled_from([4, 8]),
    seed=st.integers(0, 2**16),
)
def test_eie_roundtrip(k, n, density, ib, seed):
    codes = _sparse_codes(np.random.default_rng(seed), k, n, density)
    lay = ops.eie_encode(codes, ib)
    assert lay.row_ptr.dtype == np.int32 and lay.row_ptr[0] == 0 and lay.row_ptr[-1] == lay.entries
    assert lay.deltas.max(initial=0) <= (1 << ib) - 1
    np.testing.assert_array_equal(ops.eie_decode(lay.row_ptr, lay.deltas, lay.codes, n), codes)


def test_eie_long_gaps_use_filler_entries():
    codes = np.zeros((3, 100), np.int64)
    codes[0, 99] = 7  # gap of 99 zeros: 99 // 16 = 6 fillers, then delta 99 % 16 = 3
    codes[1, 0] = 1  # first column: delta 0
    codes[2, 16] = 2  # gap exactly 16: one filler (advances 16), then delta 0
    lay = ops.eie_encode(codes, 4)
    assert lay.row_ptr.tolist() == [0, 7, 8, 10]
    assert lay.deltas.tolist() == [15] * 6 + [3] + [0] + [15, 0]
    assert lay.codes.tolist() == [0] * 6 + [7] + [1] + [0, 2]
    assert lay.fillers == 7
    np.testing.assert_array_equal(ops.eie_decode(lay.row_ptr, lay.deltas, lay.codes, 100), codes)


def test_eie_decode_rejects_positions_past_the_row():
    with pytest.raises(ValueError):
        ops.eie_decode(np.array([0, 1], np.int32), np.array([5]), np.array([1]), 5)


# ------------------------------------------------------------------------------------------ function bodies
def _model(op, inputs, inits, attrs, x_shape, opset=18):
    node = helper.make_node(op, ["x", *inputs], ["y"], domain=ops.DOMAIN, name="n", **attrs)
    return make_model(
        [node], inits, [("x", x_shape)], [("y", None)], opset=opset, functions=ops.function_protos(op, opset)
    )


def _check_exact(model, feeds):
    onnx.checker.check_model(model)
    ref = ops.decode_model(model)
    assert not any(n.domain == ops.DOMAIN for n in ref.graph.node)
    got, want = run(model, feeds)[0], run(ref, feeds)[0]
    np.testing.assert_array_equal(got, want)
    # with onnxruntime's optimizations the decode is folded at load time; same values up to GEMM rounding
    np.testing.assert_allclose(run(model, feeds, optimize=True)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_matmul_body_equals_numpy(bits):
    rng = np.random.default_rng(bits)
    k, n, gsz = 13, 37, 10  # 4 codebook groups, the last one partial
    cb = rng.standard_normal((4, 1 << bits)).astype(np.float32)
    codes = rng.integers(0, 1 << bits, (k, n))
    m = _model(
        "CodebookMatMul",
        ["cb", "codes", "b"],
        {"cb": cb, "codes": ops.pack_codes(codes, bits), "b": rng.standard_normal(n).astype(np.float32)},
        {"bits": bits, "N": n, "group_size": gsz},
        ["batch", 2, k],
    )
    w, _ = ops.get_op("CodebookMatMul").reference(
        ops.node_attributes(m.graph.node[0]), [None, cb, ops.pack_codes(codes, bits), None]
    )
    np.testing.assert_array_equal(w, cb[np.arange(n) // gsz, codes])
    _check_exact(m, {"x": rng.standard_normal((3, 2, k)).astype(np.float32)})


@pytest.mark.parametrize("ib", [4, 8])
def test_sparse_codebook_matmul_body_equals_numpy(ib):
    rng = np.random.default_rng(ib)
    k, n, bits, gsz = 9, 300, 3, 64
    codes = _sparse_codes(rng, k, n, 0.04, 1 << bits)
    codes[4] = 0  # an empty row
    codes[0, 0] = 2
    codes[8, n - 1] = 5  # an entry in the last column
    lay = ops.eie_encode(codes, ib)
    assert ib == 8 or lay.fillers > 0
    cb = rng.standard_normal((-(-n // gsz), 1 << bits)).astype(np.float32)
    cb[:, 0] = 0
    m = _model(
        "SparseCodebookMatMul",
        ["cb", "rp", "d", "c", "b"],
        {
            "cb": cb,
            "rp": lay.row_ptr,
            "d": ops.pack_codes(lay.deltas, ib)[0],
            "c": ops.pack_codes(lay.codes, bits)[0],
            "b": rng.standard_normal(n).astype(np.float32),
        },
        {"bits": bits, "index_bits": ib, "N": n, "group_size": gsz},
        ["batch", k],
    )
    _check_exact(m, {"x": rng.standard_normal((2, k)).astype(np.float32)})
    ref = ops.decode_model(m)
    w = next(t for t in ref.graph.initializer if t.name == "y__W")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(w), cb[np.arange(n) // gsz, codes])


def test_sparse_codebook_matmul_all_zero_weight():
    n, k = 20, 4
    lay = ops.eie_encode(np.zeros((k, n), np.int64), 4)
    m = _model(
        "SparseCodebookMatMul",
        ["cb", "rp", "d", "c", "b"],
        {
            "cb": np.zeros((1, 4), np.float32),
            "rp": lay.row_ptr,
            "d": np.zeros(0, np.uint8),
            "c": np.zeros(0, np.uint8),
            "b": np.arange(n, dtype=np.float32),
        },
        {"bits": 2, "index_bits": 4, "N": n, "group_size": n},
        [1, k],
    )
    y = run(m, {"x": np.ones((1, k), np.float32)})[0]
    np.testing.assert_array_equal(y, np.arange(n, dtype=np.float32)[None])


def test_ternary_matmul_body_equals_numpy_and_code3_is_zero():
    rng = np.random.default_rng(3)
    k, n = 11, 7
    scales = np.abs(rng.standard_normal((n, 2))).astype(np.float32)
    codes = rng.integers(0, 4, (k, n))  # includes the invalid code 3: the body yields 0
    m = _model(
        "TernaryMatMul",
        ["s", "c", "b"],
        {"s": scales, "c": ops.pack_codes(codes, 2), "b": np.zeros(n, np.float32)},
        {"N": n, "group_size": 1},
        ["batch", k],
    )
    _check_exact(m, {"x": rng.standard_normal((4, k)).astype(np.float32)})
    x = np.eye(k, dtype=np.float32)
    w = run(m, {"x": x})[0]
    lut = np.stack([np.zeros(n), scales[:, 0], -scales[:, 1], np.zeros(n)], 1)
    np.testing.assert_array_equal(w, lut[np.arange(n)[None, :], codes].astype(np.float32))


@pytest.mark.parametrize(
    "case",
    [
        dict(
            m=12,
            c=6,
            group=3,
            k=(3, 2),
            pads=[1, 0, 1, 1],
            strides=[2, 1],
            dil=[1, 2],
            bits=3,
            gsz=5,
            bias=True,
        ),
        dict(
            m=8,
            c=8,
            group=8,
            k=(3, 3),
            pads=[1, 1, 1, 1],
            strides=[1, 1],
            dil=[1, 1],
            bits=4,
            gsz=1,
            bias=False,
        ),
        dict(m=5, c=3, group=1, k=(2,), pads=[0, 1], strides=[1], dil=[1], bits=8, gsz=5, bias=True),
    ],
)
def test_codebook_conv_body_equals_numpy(case):
    rng = np.random.default_rng(case["m"])
    m_, c, g, k, bits = case["m"], case["c"], case["group"], case["k"], case["bits"]
    ws = [m_, c // g, *k]
    cb = rng.standard_normal((-(-m_ // case["gsz"]), 1 << bits)).astype(np.float32)
    codes = rng.integers(0, 1 << bits, (m_, int(np.prod(ws[1:]))))
    inits = {"cb": cb, "codes": ops.pack_codes(codes, bits)}
    ins = ["cb", "codes"]
    if case["bias"]:
        inits["b"] = rng.standard_normal(m_).astype(np.float32)
        ins.append("b")
    attrs = dict(
        bits=bits,
        group_size=case["gsz"],
        weight_shape=ws,
        dilations=case["dil"],
        group=g,
        kernel_shape=list(k),
        pads=case["pads"],
        strides=case["strides"],
    )
    spatial = [9, 8][: len(k)]
    m = _model("CodebookConv", ins, inits, attrs, [2, c, *spatial])
    _check_exact(m, {"x": rng.standard_normal((2, c, *spatial)).astype(np.float32)})


def test_function_bodies_import_the_model_opset():
    for opset in (16, 17, 21):
        for op in ops.OPS:
            f = ops.function_proto(op, opset)
            imports = {o.domain: o.version for o in f.opset_import}
            assert imports[""] == opset and f.domain == ops.DOMAIN and f.name == op
            called = {n.op_type for n in f.node if n.domain == ops.DOMAIN}
            assert called == set(ops.get_op(op).helpers)
            assert imports.get(ops.DOMAIN) == (1 if called else None)


def test_function_bodies_are_ssa_and_check():
    for op in ops.OPS:
        f = ops.function_proto(op, 18)
        outs = [o for n in f.node for o in n.output]
        assert len(outs) == len(set(outs)), op
        assert not set(outs) & set(f.input), op
        assert set(f.output) <= set(outs), op
    for op in ops.OPS:
        m = make_model([], {}, [], [], functions=ops.function_protos(op, 18))
        onnx.checker.check_model(m, full_check=True)


@pytest.mark.parametrize("op", ["CodebookMatMul", "SparseCodebookMatMul", "CodebookConv"])
def test_codebook_narrower_than_two_to_the_bits(op):
    # runtime/OPS.md: a codebook may have C < 2**bits entries per row (every code < C); the native kernels
    # and the numpy decoders accept it, so the bodies must index group g's row at g * C, not g * 2**bits
    rng = np.random.default_rng(11)
    bits, c_entries, gsz = 5, 11, 4
    if op == "CodebookConv":
        ws = [10, 3, 2, 2]
        codes = rng.integers(0, c_entries, (ws[0], 12))
        cb = rng.standard_normal((3, c_entries)).astype(np.float32)
        inits = {"cb": cb, "codes": ops.pack_codes(codes, bits), "b": np.zeros(ws[0], np.float32)}
        attrs = dict(
            bits=bits,
            group_size=gsz,
            weight_shape=ws,
            dilations=[1, 1],
            group=1,
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
            strides=[1, 1],
        )
        m = _model(op, ["cb", "codes", "b"], inits, attrs, [1, 3, 5, 4])
        feeds = {"x": rng.standard_normal((1, 3, 5, 4)).astype(np.float32)}
    else:
        k, n = 7, 10
        codes = rng.integers(0, c_entries, (k, n))
        cb = rng.standard_normal((3, c_entries)).astype(np.float32)
        attrs = {"bits": bits, "N": n, "group_size": gsz}
        if op == "CodebookMatMul":
            ins = ["cb", "codes", "b"]
            inits = {"cb": cb, "codes": ops.pack_codes(codes, bits)}
        else:
            codes[rng.random(codes.shape) < 0.5] = 0
            cb[:, 0] = 0
            lay = ops.eie_encode(codes, 4)
            ins = ["cb", "rp", "d", "c", "b"]
            inits = {
                "cb": cb,
                "rp": lay.row_ptr,
                "d": ops.pack_codes(lay.deltas, 4)[0],
                "c": ops.pack_codes(lay.codes, bits)[0],
            }
            attrs["index_bits"] = 4
        inits["b"] = np.zeros(n, np.float32)
        m = _model(op, ins, inits, attrs, [2, k])
        feeds = {"x": rng.standard_normal((2, k)).astype(np.float32)}
    _check_exact(m, feeds)
