"""Malformed models and inputs: the runtime must answer with a clear onnxruntime error."""

from __future__ import annotations

import numpy as np
import oplib
import pytest
from rtutil import make_session, run

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _raises(model, feeds, match):
    with pytest.raises(Exception, match=match):
        run(model, feeds, native=True)


def _cbmm(k=20, n=30, bits=4, **kw):
    rng = np.random.default_rng(0)
    cb, _, packed = oplib.random_codebook_problem(rng, k, n, bits)
    return cb, packed


# ------------------------------------------------------------------------------- CodebookMatMul
@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"bits": 0}, r"bits=0 is out of range \[1, 8\]"),
        ({"bits": 9}, r"bits=9 is out of range"),
        ({"N": -3}, r"N=-3"),
        ({"group_size": 0}, r"group_size=0 is out of range"),
    ],
)
def test_codebook_matmul_bad_attributes(attrs, match):
    cb, packed = _cbmm()
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30, attrs=attrs)
    with pytest.raises(Exception, match=match):
        make_session(model, native=True).run(None, {"X": _x((2, 20))})


def test_codebook_matmul_missing_attribute():
    cb, packed = _cbmm()
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30)
    node = model.graph.node[0]
    keep = [a for a in node.attribute if a.name != "bits"]
    del node.attribute[:]
    node.attribute.extend(keep)
    with pytest.raises(Exception, match=r"attribute 'bits' \(int\) is required"):
        make_session(model, native=True).run(None, {"X": _x((2, 20))})


def test_codebook_matmul_wrong_k():
    cb, packed = _cbmm()
    model = oplib.codebook_matmul(["b", "k"], cb, packed, bits=4, n=30)
    _raises(model, {"X": _x((2, 21))}, r"codes must have shape \[K=21, ceil\(N\*bits/8\)=15\].*got \[20, 15\]")


def test_codebook_matmul_n_mismatch_codes():
    cb, packed = _cbmm()
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30, attrs={"N": 64})
    _raises(model, {"X": _x((2, 20))}, r"codes must have shape \[K=20, ceil\(N\*bits/8\)=32\]")


def test_codebook_matmul_bad_codebook_shape():
    rng = np.random.default_rng(1)
    _, packed = _cbmm()
    cb = rng.standard_normal((2, 16)).astype(np.float32)  # G should be 1
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30)
    _raises(model, {"X": _x((2, 20))}, r"codebook must have shape \[G=1, C\] with 1 <= C <= 2\^bits=16")
    cb = rng.standard_normal((1, 17)).astype(np.float32)
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30)
    _raises(model, {"X": _x((2, 20))}, r"got \[1, 17\]")


def test_codebook_matmul_code_out_of_small_codebook():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 16, size=(20, 30))
    codes[4, 9] = 12
    cb = rng.standard_normal((1, 12)).astype(np.float32)
    for as_inputs in [(), ("codes",)]:
        model = oplib.codebook_matmul([2, 20], cb, oplib.pack_bits(codes, 4), bits=4, n=30, as_inputs=as_inputs)
        feeds = {"X": _x((2, 20))}
        if as_inputs:
            feeds["codes"] = oplib.pack_bits(codes, 4)
        _raises(model, feeds, r"code 1[2-5] is out of range for a codebook of 12 entries")


def test_codebook_matmul_bad_bias():
    cb, packed = _cbmm()
    model = oplib.codebook_matmul([2, 20], cb, packed, bits=4, n=30, bias=np.zeros(29, np.float32))
    _raises(model, {"X": _x((2, 20))}, r"B must have shape \[N=30\] or \[1, N\], got \[29\]")


def test_codebook_matmul_wrong_dtype_rejected():
    """The codebook may be float32 or float16 (its input type is open to onnxruntime): the kernel refuses any other
    type at run time, naming the node and the input."""
    cb, packed = _cbmm()
    model = oplib.codebook_matmul([2, 20], cb.astype(np.float64), packed, bits=4, n=30)
    sess = make_session(model, native=True)
    with pytest.raises(Exception, match=r"node 'cbmm'.*input 'codebook' must be float32 or float16, got float64"):
        sess.run(None, {"X": _x((2, 20))})


# -------------------------------------------------------------------------------- TernaryMatMul
@pytest.mark.parametrize("as_inputs", [(), ("codes",)])
def test_ternary_code_3(as_inputs):
    codes = np.ones((10, 21), np.int64)
    codes[6, 17] = 3
    packed = oplib.pack_bits(codes, 2)
    model = oplib.ternary_matmul([1, 10], np.ones((1, 2), np.float32), packed, n=21, as_inputs=as_inputs)
    feeds = {"X": _x((1, 10))}
    if as_inputs:
        feeds["codes"] = packed
    _raises(model, feeds, r"invalid ternary code 3 at codes row 6, column 17")


def test_ternary_padding_bits_ignored():
    codes = np.ones((4, 5), np.int64)
    packed = oplib.pack_bits(codes, 2)
    packed[:, -1] |= 0b11000000  # garbage in the unused trailing bits of each row
    model = oplib.ternary_matmul([1, 4], np.ones((1, 2), np.float32), packed, n=5)
    y = run(model, {"X": np.ones((1, 4), np.float32)}, native=True)
    np.testing.assert_allclose(y, np.full((1, 5), 4.0))


def test_ternary_bad_scales():
    packed = oplib.pack_bits(np.ones((4, 5), np.int64), 2)
    model = oplib.ternary_matmul([1, 4], np.ones((1, 3), np.float32), packed, n=5)
    _raises(model, {"X": _x((1, 4))}, r"scales must have shape \[G=1, 2\]")


# ------------------------------------------------------------------------- SparseCodebookMatMul
def _sparse(k=12, n=40, density=0.3, bits=4, index_bits=4, **kw):
    rng = np.random.default_rng(3)
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, index_bits, density)
    return cb, row_ptr, deltas, ecodes, dp, cp


def _sparse_model(cb, row_ptr, dp, cp, n=40, k=12, **kw):
    kw.setdefault("as_inputs", ("row_ptr", "deltas", "codes"))
    return oplib.sparse_codebook_matmul(
        [1, k], cb, row_ptr, dp, cp, bits=kw.pop("bits", 4), index_bits=kw.pop("index_bits", 4), n=n, **kw
    )


def _sparse_feeds(row_ptr, dp, cp, k=12):
    return {"X": _x((1, k)), "row_ptr": row_ptr, "deltas": dp, "codes": cp}


def test_sparse_row_ptr_start():
    cb, row_ptr, _, _, dp, cp = _sparse()
    model = _sparse_model(cb, row_ptr, dp, cp)
    bad = row_ptr.copy()
    bad[0] = 1
    _raises(model, _sparse_feeds(bad, dp, cp), r"row_ptr\[0\] must be 0, got 1")


def test_sparse_row_ptr_decreasing():
    cb, row_ptr, _, _, dp, cp = _sparse()
    model = _sparse_model(cb, row_ptr, dp, cp)
    bad = row_ptr.copy()
    bad[5] = bad[6] + 1
    _raises(model, _sparse_feeds(bad, dp, cp), r"row_ptr must be non-decreasing: row_ptr\[6\]")


def test_sparse_row_ptr_past_data():
    cb, row_ptr, _, _, dp, cp = _sparse()
    model = _sparse_model(cb, row_ptr, dp, cp)
    bad = row_ptr.copy()
    bad[-1] += 50
    _raises(model, _sparse_feeds(bad, dp, cp), r"deltas holds \d+ bytes, but row_ptr\[K\]=\d+ entries")


def test_sparse_position_past_n():
    cb, row_ptr, deltas, _ecodes, _, cp = _sparse()
    d = deltas.copy()
    d[row_ptr[3] : row_ptr[4]] = 15  # row 3 walks past N=40
    dp = oplib.pack_bits(d, 4)
    model = _sparse_model(cb, row_ptr, dp, cp)
    _raises(model, _sparse_feeds(row_ptr, dp, cp), r"row 3: entry \d+ decodes to column \d+ >= N=40")
    # the same as constant initializers (validated once, at first run)
    model = _sparse_model(cb, row_ptr, dp, cp, as_inputs=())
    _raises(model, {"X": _x((1, 12))}, r"row 3: entry \d+ decodes to column \d+ >= N=40")


def test_sparse_bad_index_bits():
    cb, row_ptr, _, _, dp, cp = _sparse()
    model = _sparse_model(cb, row_ptr, dp, cp, attrs={"index_bits": 5})
    with pytest.raises(Exception, match=r"index_bits=5 must be 4 or 8"):
        make_session(model, native=True).run(None, _sparse_feeds(row_ptr, dp, cp))


def test_sparse_row_ptr_shape():
    cb, row_ptr, _, _, dp, cp = _sparse()
    model = _sparse_model(cb, row_ptr, dp, cp)
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "rows"
    _raises(model, _sparse_feeds(row_ptr[:-1], dp, cp), r"row_ptr must have shape \[K\+1=13\]")


def test_sparse_code_out_of_small_codebook():
    cb, row_ptr, _, ecodes, dp, _ = _sparse()
    e = ecodes.copy()
    e[2] = 9
    cp = oplib.pack_bits(e, 4)
    model = _sparse_model(cb[:, :8].copy(), row_ptr, dp, cp)
    _raises(model, _sparse_feeds(row_ptr, dp, cp), r"code (9|1[0-5]) is out of range for a codebook of 8 entries")


# --------------------------------------------------------------------------------- CodebookConv
def _conv(**kw):
    rng = np.random.default_rng(4)
    cb, _, packed = oplib.random_codebook_problem(rng, 4, 3 * 9, 4)
    return oplib.codebook_conv([1, 3, 8, 8], cb, packed, bits=4, weight_shape=[4, 3, 3, 3], **kw)


def test_conv_channel_mismatch():
    model = _conv()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 6
    _raises(model, {"X": _x((1, 6, 8, 8))}, r"X has 6 channels, but weight_shape\[1\]\*group = 3\*1 = 3")


def test_conv_bad_attributes():
    with pytest.raises(Exception, match=r"strides=\[0, 1\] must be positive"):
        make_session(_conv(strides=[0, 1]), native=True)
    with pytest.raises(Exception, match=r"auto_pad=SAME_UPPER is not supported"):
        make_session(_conv(attrs={"auto_pad": "SAME_UPPER"}), native=True)
    with pytest.raises(Exception, match=r"pads needs 4 values, got 2"):
        make_session(_conv(attrs={"pads": [1, 1]}), native=True)
    with pytest.raises(Exception, match=r"kernel_shape=\[2, 2\] does not match"):
        make_session(_conv(attrs={"kernel_shape": [2, 2]}), native=True)


def test_conv_kernel_larger_than_input():
    model = _conv(dilations=[4, 4])
    _raises(model, {"X": _x((1, 3, 8, 8))}, r"smaller than the dilated kernel 9")


def test_conv_codes_shape():
    rng = np.random.default_rng(4)
    cb, _, packed = oplib.random_codebook_problem(rng, 4, 3 * 9, 4)
    model = oplib.codebook_conv([1, 3, 8, 8], cb, packed[:, :-1], bits=4, weight_shape=[4, 3, 3, 3])
    _raises(
        model,
        {"X": _x((1, 3, 8, 8))},
        r"codes must have shape \[M=4, ceil\(C/group\*prod\(kernel\)\*bits/8\)=14\]",
    )


# ------------------------------------------------------------------------------------ absurd sizes
# Sizes an attribute (or an empty input) claims without data behind them are refused before anything is
# allocated: outputs, decoded weights and scratch are capped at 2^34 elements, dim products overflow-checked.
# Each case runs under an address-space cap (current size + 4 GiB), so that a regression fails fast instead
# of taking the machine's memory.
@pytest.fixture
def memory_cap():
    resource = pytest.importorskip("resource")
    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + (4 << 30)
    if hard != resource.RLIM_INFINITY and hard < cap:
        pytest.skip("the address-space limit is already below the cap")
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _symbolic(model):
    for vi in model.graph.input:
        for j, d in enumerate(vi.type.tensor_type.shape.dim):
            d.Clear()
            d.dim_param = f"{vi.name}_{j}"
    return model


def test_codebook_matmul_huge_n_with_empty_k(memory_cap):
    """N = 2^40 and K = 0: no codes back N, and Y would be 4 TiB."""
    n = 2**40
    model = _symbolic(
        oplib.codebook_matmul(
            [1, 0], np.zeros((1, 16), np.float32), np.zeros((0, 1), np.uint8), bits=4, n=2, attrs={"N": n},
            as_inputs=("codes",),
        )
    )  # fmt: skip
    feeds = {"X": np.zeros((1, 0), np.float32), "codes": np.zeros((0, n // 2), np.uint8)}
    _raises(model, feeds, r"INVALID_ARGUMENT.*output Y \[1, 1099511627776\] would have more than 2\^34 elements")


def test_codebook_matmul_huge_leading_dims_with_empty_k(memory_cap):
    """X of shape [2^20, 2^20, 0] holds no data: M = 2^40 rows of nothing, refused."""
    model = _symbolic(oplib.codebook_matmul([1, 1, 0], *_empty_codebook(), bits=4, n=2, as_inputs=("codes",)))
    feeds = {"X": np.zeros((2**20, 2**20, 0), np.float32), "codes": np.zeros((0, 1), np.uint8)}
    _raises(model, feeds, r"INVALID_ARGUMENT.*X's leading dims .* more than 2\^34 elements")


def _empty_codebook():
    return np.zeros((1, 16), np.float32), np.zeros((0, 1), np.uint8)


def test_ternary_matmul_huge_n_with_empty_k(memory_cap):
    n = 2**40
    model = _symbolic(
        oplib.ternary_matmul(
            [1, 0], np.ones((1, 2), np.float32), np.zeros((0, 1), np.uint8), n=2, attrs={"N": n},
            as_inputs=("codes",),
        )
    )  # fmt: skip
    feeds = {"X": np.zeros((1, 0), np.float32), "codes": np.zeros((0, n // 4), np.uint8)}
    _raises(model, feeds, r"INVALID_ARGUMENT.*output Y \[1, 1099511627776\] would have more than 2\^34 elements")


def test_sparse_matmul_huge_n_with_empty_k(memory_cap):
    cb = np.zeros((1, 16), np.float32)
    empty = np.zeros(0, np.uint8)
    rp = np.zeros(1, np.int32)
    model = _symbolic(
        oplib.sparse_codebook_matmul(
            [1, 0], cb, rp, empty, empty, bits=4, index_bits=4, n=2, attrs={"N": 2**40},
            as_inputs=("row_ptr", "deltas", "codes"),
        )
    )  # fmt: skip
    feeds = {"X": np.zeros((1, 0), np.float32), "row_ptr": rp, "deltas": empty, "codes": empty}
    _raises(model, feeds, r"INVALID_ARGUMENT.*output Y \[1, 1099511627776\] would have more than 2\^34 elements")


def test_conv_huge_pads(memory_cap):
    """pads of 2^31 on a 1-wide input: a [1, 8, 2^32 + 1] output (128 GiB) from 4 bytes of input."""
    rng = np.random.default_rng(5)
    cb, _, packed = oplib.random_codebook_problem(rng, 8, 1, 4)
    model = oplib.codebook_conv([1, 1, 1], cb, packed, bits=4, weight_shape=[8, 1, 1], pads=[2**31, 2**31])
    _raises(model, {"X": _x((1, 1, 1))}, r"INVALID_ARGUMENT.*output Y \[1, 8, 4294967297\] would have more than 2\^34")


def test_sparse_matmul_almost_empty_huge_layer_runs(memory_cap):
    """32 entries in a 2^17 x 2^21 layer: the windowed layout's counter grid (2^34 counters) is not built."""
    k, n = 2**17, 2**21
    codebook = np.arange(16, dtype=np.float32)[None, :]  # entry 0 == 0: byte lanes
    row_ptr = np.full(k + 1, 32, np.int32)
    row_ptr[0] = 0
    deltas = np.zeros(32, np.int64)  # positions 0..31 of row 0
    codes = np.arange(32) % 15 + 1
    model = oplib.sparse_codebook_matmul(
        [1, k], codebook, row_ptr, oplib.pack_bits(deltas, 4), oplib.pack_bits(codes, 4), bits=4, index_bits=4, n=32,
        attrs={"N": n}, as_inputs=(),
    )  # fmt: skip
    y = run(model, {"X": np.ones((1, k), np.float32)}, native=True)
    want = np.zeros((1, n), np.float32)
    want[0, :32] = codebook[0, codes]
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("op", ["HuffmanDecode", "RunLengthDecode"])
def test_decoder_with_an_absurd_shape_attribute(op, memory_cap):
    """A decoder's output is allocated from its `shape` attribute (at kernel creation for constant inputs)."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp import ops

    shape = [2**20, 2**20]
    if op == "HuffmanDecode":
        coded = ops.huffman.encode(np.zeros(4, np.uint8))
        inputs = {"stream": coded.stream, "table": coded.table, "offsets": coded.offsets}
        attrs = {"shape": shape}
    else:
        inputs = {"symbols": ops.run_length_encode(np.zeros((1, 8), np.int64), 4)}
        attrs = {"bits": 4, "count": 2**21, "shape": shape}
    node = helper.make_node(op, list(inputs), ["Y"], domain=oplib.DOMAIN, name="dec", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.UINT8, shape)],
        [numpy_helper.from_array(v, k) for k, v in inputs.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(oplib.DOMAIN, 1)],
        functions=ops.function_protos(op, 18),
    )
    model.ir_version = 10
    with pytest.raises(Exception, match=r"attribute shape \[1048576, 1048576\] would have more than 2\^34 elements"):
        make_session(model, native=True).run(None, {})
