"""Native com.onnxcomp kernels vs their inlined standard-op function bodies (and a numpy decode)."""

from __future__ import annotations

import numpy as np
import oplib
import pytest
from rtutil import check, make_session
from rtutil import run as run_once

pytestmark = pytest.mark.usefixtures("runtime_lib")

BATCHES = [(1,), (7,), (32,)]


def _x(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------- CodebookMatMul
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("group_size", [None, 1, 5, 64])
def test_codebook_matmul(bits, batch, group_size):
    rng = np.random.default_rng(bits * 100 + batch[0] + (group_size or 0))
    k, n = 67, 131
    cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, group_size)
    bias = rng.standard_normal(n).astype(np.float32) if bits % 2 else None
    model = oplib.codebook_matmul([*batch, k], cb, packed, bits=bits, n=n, group_size=group_size, bias=bias)
    x = _x(rng, (*batch, k))
    y = check(model, {"X": x})
    ref = x @ oplib.decode_codebook(cb, codes, group_size or n) + (0 if bias is None else bias)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n,group_size", [(1000, None), (768, 256), (896, 128), (1536, 64), (777, 7)])
def test_codebook_matmul_register_decode_path(bits, m, n, group_size):
    """Shapes that take the batch-1..4 register-decoding GEMV (full chunks plus tails; 3 and 5..8 bits: the
    byte-plane GEMV where the CPU has AVX512-VBMI)."""
    rng = np.random.default_rng(bits * 7 + m + n)
    k = 45
    cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, group_size)
    model = oplib.codebook_matmul([m, k], cb, packed, bits=bits, n=n, group_size=group_size)
    x = _x(rng, (m, k))
    y = check(model, {"X": x})
    np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, group_size or n), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("k,n,group_size", [(300, 203, 1), (128, 64, 7), (129, 40, 24), (5, 9, 1)])
def test_codebook_matmul_per_channel_gemv(bits, m, k, n, group_size):
    """Codebooks that change within 16 columns: the GEMV along k on the column layout (AVX-512), every K tail."""
    rng = np.random.default_rng(bits * 31 + m + k)
    cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, group_size)
    model = oplib.codebook_matmul([m, k], cb, packed, bits=bits, n=n, group_size=group_size)
    x = _x(rng, (m, k))
    y = check(model, {"X": x})
    np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, group_size), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 5), (1, 1, 1)])
def test_codebook_matmul_ranks(shape):
    rng = np.random.default_rng(1)
    k, n, bits = shape[-1], 33, 4
    cb, _, packed = oplib.random_codebook_problem(rng, k, n, bits)
    model = oplib.codebook_matmul(list(shape), cb, packed, bits=bits, n=n)
    y = check(model, {"X": _x(rng, shape)})
    assert y.shape == (*shape[:-1], n)


def test_codebook_matmul_large_k_threads():
    rng = np.random.default_rng(3)
    k, n, bits = 1100, 2000, 4
    cb, _, packed = oplib.random_codebook_problem(rng, k, n, bits, 32)
    model = oplib.codebook_matmul([9, k], cb, packed, bits=bits, n=n, group_size=32)
    check(model, {"X": _x(rng, (9, k))}, threads=2, rtol=2e-4)
    model = oplib.codebook_matmul([1, k], cb, packed, bits=bits, n=n, group_size=32)
    check(model, {"X": _x(rng, (1, k))}, threads=2, rtol=2e-4)


def test_codebook_matmul_small_codebook_and_runtime_weights():
    """A codebook with fewer than 2^bits entries; weights fed as graph inputs (validated per run)."""
    rng = np.random.default_rng(5)
    k, n, bits = 40, 70, 5
    cb, _codes, packed = oplib.random_codebook_problem(rng, k, n, bits, entries=11)
    model = oplib.codebook_matmul([2, k], cb, packed, bits=bits, n=n, as_inputs={"codebook", "codes"})
    x = _x(rng, (2, k))
    check(model, {"X": x, "codebook": cb, "codes": packed})


# -------------------------------------------------------------------------------- TernaryMatMul
@pytest.mark.parametrize("batch", [*BATCHES, (2,)])
@pytest.mark.parametrize("group_size", [None, 1, 3, 128])
@pytest.mark.parametrize("n", [61, 1024])
def test_ternary_matmul(batch, group_size, n):
    rng = np.random.default_rng(batch[0] + (group_size or 0) + n)
    k = 53
    g = -(-n // (group_size or n))
    scales = np.abs(rng.standard_normal((g, 2))).astype(np.float32)
    codes = rng.integers(0, 3, size=(k, n))
    bias = rng.standard_normal(n).astype(np.float32)
    model = oplib.ternary_matmul([*batch, k], scales, oplib.pack_bits(codes, 2), n=n, group_size=group_size, bias=bias)
    x = _x(rng, (*batch, k))
    y = check(model, {"X": x})
    cb = np.stack([np.zeros(g), scales[:, 0], -scales[:, 1], np.zeros(g)], 1).astype(np.float32)
    ref = x @ oplib.decode_codebook(cb, codes, group_size or n) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------- CodebookConv
CONV_CASES = [
    # x_shape, weight_shape, strides, pads, dilations, group
    ((1, 3, 17, 19), (8, 3, 3, 3), None, [1, 1, 1, 1], None, 1),
    ((2, 4, 12, 9), (6, 2, 3, 2), [2, 1], [0, 1, 2, 0], [1, 2], 2),
    ((1, 6, 10, 10), (6, 1, 3, 3), [1, 1], [1, 1, 1, 1], None, 6),
    ((3, 5, 7, 7), (7, 5, 1, 1), None, None, None, 1),
    ((1, 4, 23), (5, 4, 5), [3], [2, 1], [2], 1),
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), [1, 2, 1], [1, 0, 0, 1, 1, 0], None, 1),
    ((2, 16, 14, 14), (32, 16, 3, 3), [1, 1], [1, 1, 1, 1], None, 1),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("bits", [1, 3, 4, 8])
@pytest.mark.parametrize("constant", [True, False])
def test_codebook_conv(case, bits, constant):
    # constant codes and codebook: decoded once, onnxruntime's Conv invoked on the filter; codes fed as
    # graph inputs: decoded every run into the implicit-im2col GEMM
    x_shape, ws, strides, pads, dil, group = CONV_CASES[case]
    rng = np.random.default_rng(case * 10 + bits)
    m, ckk = ws[0], int(np.prod(ws[1:]))
    group_size = [None, 1, 2][case % 3]
    cb, _, packed = oplib.random_codebook_problem(rng, m, ckk, bits, group_size=None)
    gcount = -(-m // (group_size or m))
    cb = rng.standard_normal((gcount, 1 << bits)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32) if case % 2 == 0 else None
    model = oplib.codebook_conv(
        list(x_shape),
        cb,
        packed,
        bits=bits,
        weight_shape=list(ws),
        group_size=group_size,
        bias=bias,
        strides=strides,
        pads=pads,
        dilations=dil,
        group=group,
        as_inputs=() if constant else ("codes",),
    )
    feeds = {"X": _x(rng, x_shape)} if constant else {"X": _x(rng, x_shape), "codes": packed}
    y = check(model, feeds)
    if constant:  # later runs of a session reuse the filter decoded at its first run
        sess = make_session(model, native=True)
        np.testing.assert_array_equal(sess.run(None, feeds)[0], y)
        x2 = {"X": _x(rng, x_shape)}
        scale = max(1.0, float(np.abs(y).max()))
        np.testing.assert_allclose(
            sess.run(None, x2)[0], run_once(model, x2, native=False), rtol=1e-4, atol=2e-5 * scale
        )


# ------------------------------------------------------------------------- SparseCodebookMatMul
@pytest.mark.parametrize("density", [0.0, 0.03, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("index_bits", [4, 8])
@pytest.mark.parametrize("batch", BATCHES)
def test_sparse_codebook_matmul(density, index_bits, batch):
    rng = np.random.default_rng(int(density * 100) + index_bits + batch[0])
    k, n, bits = 57, 300, 4
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, index_bits, density)
    bias = rng.standard_normal(n).astype(np.float32)
    model = oplib.sparse_codebook_matmul(
        [*batch, k], cb, row_ptr, dp, cp, bits=bits, index_bits=index_bits, n=n, bias=bias
    )
    x = _x(rng, (*batch, k))
    x[..., ::3] = 0.0  # zero activations skip their rows
    if row_ptr[-1] == 0:
        from rtutil import run

        y = run(model, {"X": x}, native=True)
    else:
        y = check(model, {"X": x})
    ref = x @ oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, n) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group_size", [None, 1, 16])
def test_sparse_codebook_matmul_bits_groups(bits, group_size):
    rng = np.random.default_rng(bits + (group_size or 0))
    k, n = 33, 129
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, 4, 0.2, group_size)
    model = oplib.sparse_codebook_matmul(
        [3, k], cb, row_ptr, dp, cp, bits=bits, index_bits=4, n=n, group_size=group_size
    )
    x = _x(rng, (3, k))
    y = check(model, {"X": x})
    ref = x @ oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, group_size or n)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_sparse_large_threads_and_runtime_layout():
    rng = np.random.default_rng(11)
    k, n, bits = 700, 1500, 4
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, 4, 0.15)
    model = oplib.sparse_codebook_matmul(
        [1, k], cb, row_ptr, dp, cp, bits=bits, index_bits=4, n=n, as_inputs={"row_ptr", "deltas", "codes"}
    )
    x = _x(rng, (1, k))
    from rtutil import run

    feeds = {"X": x, "row_ptr": row_ptr, "deltas": dp, "codes": cp}
    y = run(model, feeds, native=True, threads=2)
    ref = x @ oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, n)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [1, 2, 4, 3])
@pytest.mark.parametrize("m", [1, 2, 4, 6])
def test_codebook_matmul_runtime_codes(bits, m):
    """Codes fed at run time (no prepacked copy): the raw-layout kernels."""
    rng = np.random.default_rng(bits * 10 + m)
    k, n, gs = 39, 1100, 128
    cb, codes, packed = oplib.random_codebook_problem(rng, k, n, bits, gs)
    model = oplib.codebook_matmul([m, k], cb, packed, bits=bits, n=n, group_size=gs, as_inputs={"codes"})
    x = _x(rng, (m, k))
    y = check(model, {"X": x, "codes": packed})
    np.testing.assert_allclose(y, x @ oplib.decode_codebook(cb, codes, gs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero_entry0", [True, False])
@pytest.mark.parametrize("m", [1, 3])
def test_sparse_windows_threads(zero_entry0, m):
    """Constant weights (windowed layout, byte or 16-bit lanes) on two threads, K and N not multiples."""
    rng = np.random.default_rng(21 + m)
    k, n, bits = 301, 1203, 4
    cb, row_ptr, deltas, ecodes, dp, cp = oplib.random_sparse_problem(rng, k, n, bits, 4, 0.1, 32)
    if not zero_entry0:
        cb[:, 0] = 0.25  # fillers then carry a value: no byte lanes
    model = oplib.sparse_codebook_matmul([m, k], cb, row_ptr, dp, cp, bits=bits, index_bits=4, n=n, group_size=32)
    x = _x(rng, (m, k))
    y = check(model, {"X": x}, threads=2)
    ref = x @ oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, 32)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_conv_threads():
    rng = np.random.default_rng(8)
    cb, _, packed = oplib.random_codebook_problem(rng, 24, 16 * 9, 4)
    model = oplib.codebook_conv([3, 16, 30, 30], cb, packed, bits=4, weight_shape=[24, 16, 3, 3], pads=[1, 1, 1, 1])
    check(model, {"X": _x(rng, (3, 16, 30, 30))}, threads=2)
