"""SparseCodebookMatMul over constant weights: the windowed layout built once per session (AVX-512 byte lanes in
quads of steps, or 16-bit lanes where codebook entry 0 is not 0.0) equals X @ W of the decoded weights, under the
custom-op library and the EP, at the layout's edges: K and N off multiples of 16, empty column groups, layers of
filler entries only, row windows more than 255 windows apart (filler steps), 1 to 9 rows of X."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import oplib
import pytest
from eputil import ep_session
from hypothesis import given, settings
from hypothesis import strategies as st
from rtutil import run

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _model(codes, cb, *, bits, index_bits, group_size=None, bias=None, rows="b"):
    """The EIE encoding of a [K, N] code matrix (code 0 absent) as a SparseCodebookMatMul model, and its W."""
    row_ptr, deltas, ecodes = oplib.encode_sparse(codes, index_bits)
    k, n = codes.shape
    model = oplib.sparse_codebook_matmul(
        [rows, k],
        cb,
        row_ptr,
        oplib.pack_bits(deltas, index_bits),
        oplib.pack_bits(ecodes, bits),
        bits=bits,
        index_bits=index_bits,
        n=n,
        group_size=group_size,
        bias=bias,
    )
    return model, oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, group_size or n)


def _codebook(rng, n, bits, group_size, zero0):
    g = -(-n // (group_size or n))
    cb = rng.standard_normal((g, 1 << bits)).astype(np.float32)
    cb[:, 0] = 0.0 if zero0 else 0.25  # 0.25: EIE fillers carry a weight, no byte lanes
    return cb


def _expect(model, x, want):
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    ops = run(model, {"X": x}, native=True)
    np.testing.assert_allclose(ops, want, rtol=1e-4, atol=tol, err_msg="custom-op library")
    ep = ep_session(model).run(None, {"X": x})[0]
    np.testing.assert_allclose(ep, want, rtol=1e-4, atol=tol, err_msg="EP")


def _random_case(k, n, density, m, bits, index_bits, group_size, zero0, seed):
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random((k, n)) < density, rng.integers(1, 1 << bits, size=(k, n)), 0)
    cb = _codebook(rng, n, bits, group_size, zero0)
    bias = rng.standard_normal(n).astype(np.float32)
    model, w = _model(codes, cb, bits=bits, index_bits=index_bits, group_size=group_size, bias=bias)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, ::5] = 0.0
    _expect(model, x, x @ w + bias)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 300),
    n=st.integers(1, 140),
    density=st.sampled_from([0.0, 0.02, 0.1, 0.4, 1.0]),
    m=st.integers(1, 9),
    bits=st.integers(1, 4),
    index_bits=st.sampled_from([4, 8]),
    group_size=st.sampled_from([None, 16, 32]),
    zero0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_layers(ep_devices, k, n, density, m, bits, index_bits, group_size, zero0, seed):
    _random_case(k, n, density, m, bits, index_bits, group_size, zero0, seed)


@pytest.mark.parametrize("zero0", [True, False])
@pytest.mark.parametrize("index_bits", [4, 8])
@pytest.mark.parametrize("m", [1, 4, 6])
def test_far_windows_and_empty_groups(ep_devices, zero0, index_bits, m):
    """Rows used only at both ends of K = 8500 (filler steps bridge the window's moves over 255 rows), long zero
    runs along N (EIE fillers: index_bits 4 needs many), column groups with no entry, N off a multiple of 16."""
    _far_windows(zero0, index_bits, m)


def _far_windows(zero0, index_bits, m):
    rng = np.random.default_rng(7 + index_bits + m)
    k, n = 8500, 300
    codes = np.zeros((k, n), np.int64)
    ends = np.r_[0:12, 8440:8500]
    block = rng.integers(1, 16, size=(ends.size, n)) * (rng.random((ends.size, n)) < 0.3)
    codes[ends] = block
    codes[:, 32:80] = 0  # three empty column groups
    codes[4000, [0, 299]] = [3, 9]  # a lone row: 298 zeros between its entries
    codes[8499, 299] = 5  # the last row, the last column
    cb = _codebook(rng, n, 4, None, zero0)
    model, w = _model(codes, cb, bits=4, index_bits=index_bits)
    x = rng.standard_normal((m, k)).astype(np.float32)
    _expect(model, x, x @ w)


@pytest.mark.parametrize("zero0", [True, False])
def test_only_filler_entries(ep_devices, zero0):
    """Every entry an EIE filler (code 0): W is 0 (or entry 0's value where it is not 0.0) at their positions."""
    rng = np.random.default_rng(3)
    k, n, index_bits = 37, 70, 4
    row_ptr = np.arange(k + 1, dtype=np.int32) * 4  # per row, fillers at columns 15, 31, 47, 63
    deltas = np.full(4 * k, 15)
    ecodes = np.zeros(4 * k, np.int64)
    cb = _codebook(rng, n, 4, None, zero0)
    bias = rng.standard_normal(n).astype(np.float32)
    model = oplib.sparse_codebook_matmul(
        ["b", k],
        cb,
        row_ptr,
        oplib.pack_bits(deltas, index_bits),
        oplib.pack_bits(ecodes, 4),
        bits=4,
        index_bits=index_bits,
        n=n,
        bias=bias,
    )
    w = oplib.decode_sparse(cb, row_ptr, deltas, ecodes, n, n)
    assert (np.count_nonzero(w) == 0) == zero0
    for m in (1, 3, 5):
        x = rng.standard_normal((m, k)).astype(np.float32)
        _expect(model, x, x @ w + bias)


_ISA_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    sys.path.insert(0, {tests!r})
    import test_sparse_windows as t
    from onnxcomp import runtime
    for zero0 in (True, False):
        t._far_windows(zero0, 8, 1)
        for m in (1, 2, 3, 4, 5):
            t._random_case(203, 77, 0.1, m, 4, 4, 32, zero0, m)
            t._random_case(40, 35, 1.0, m, 2, 8, None, zero0, 10 + m)
    lib = ctypes.CDLL(str(runtime.library_path()))
    lib.OnnxcompKernelIsa.restype = ctypes.c_char_p
    print(lib.OnnxcompKernelIsa().decode())
    """
)


def test_avx2_kernel(ep_devices):
    """The AVX2 kernel over the same layout (the kernel set is chosen once per process: a subprocess)."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, "ONNXCOMP_ISA": "avx2", "PYTHONPATH": str(here.parents[1])}
    code = _ISA_SCRIPT.format(tests=str(here))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=here.parents[1])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    got = res.stdout.strip().splitlines()[-1]
    if got != "avx2":
        pytest.skip(f"this CPU has no AVX2: ran the {got} kernels")
