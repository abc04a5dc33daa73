"""WinogradConv: transform matrices vs the exact construction, native kernels vs onnxruntime's Conv."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import oplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtutil import make_session, run
from winograd_util import assert_lossless

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _matrices_module():
    from onnxcomp import winograd

    return winograd


# ------------------------------------------------------------------------------------- matrices
@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_the_correlation_exactly(m):
    """y = A^T [(G g) . (B^T d)] equals sum_k g_k d_{i+k} in rational arithmetic, in 1-D and 2-D."""
    wm = _matrices_module()
    at, g, bt = wm.construct(m)
    alpha = m + 2
    assert (len(at), len(at[0]), len(g), len(g[0]), len(bt)) == (m, alpha, alpha, 3, alpha)
    rng = np.random.default_rng(m)

    def rand(n):
        return [Fraction(int(v), int(q)) for v, q in zip(rng.integers(-50, 50, n), rng.integers(1, 9, n))]

    for _ in range(5):
        taps, d = rand(3), rand(alpha)
        assert wm.correlate_1d(at, g, bt, taps, d) == [sum(taps[k] * d[i + k] for k in range(3)) for i in range(m)]
    # 2-D: Y = A^T [(G w G^T) . (B^T D B)] A
    w2 = [rand(3) for _ in range(3)]
    d2 = [rand(alpha) for _ in range(alpha)]

    def mm(a, b):
        return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]

    def tr(a):
        return [list(r) for r in zip(*a)]

    u = mm(mm(g, w2), tr(g))
    v = mm(mm(bt, d2), tr(bt))
    y = mm(mm(at, [[u[i][j] * v[i][j] for j in range(alpha)] for i in range(alpha)]), tr(at))
    ref = [[sum(w2[a][b] * d2[i + a][j + b] for a in range(3) for b in range(3)) for j in range(m)] for i in range(m)]
    assert y == ref
    # the input transform multiplies by integers only (exact in float32 for small values)
    assert all(v.denominator == 1 for row in bt for v in row)


def test_matrices_header_is_generated_from_the_construction():
    wm = _matrices_module()
    assert (REPO / "runtime/src/conv/winograd_matrices.h").read_text() == wm.render_header()


def test_construction_rejects_bad_points():
    wm = _matrices_module()
    with pytest.raises(ValueError, match="distinct"):
        wm.construct(4, points=[Fraction(0), Fraction(1), Fraction(1), Fraction(2), Fraction(-2)])


# ------------------------------------------------------------------------------------- native kernels
pytestmark_rt = pytest.mark.usefixtures("runtime_lib")


def _problem(rng, n, c, m, h, w, bias=True):
    wt = (rng.standard_normal((m, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)  # He init
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    return wt, b, x


ACTIVATIONS = {
    "none": {},
    "relu": {"leaky_alpha": 0.0},
    "leaky": {"leaky_alpha": 0.1},
    "clip": {"clip": (-0.25, 0.5)},
    "relu6": {"leaky_alpha": 0.0, "clip": (0.0, 6.0)},
    "leaky-clip": {"leaky_alpha": 0.2, "clip": (-0.1, 0.3)},
}


@pytestmark_rt
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 40),
    m=st.integers(1, 40),
    h=st.integers(1, 23),
    w=st.integers(1, 23),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    tile=st.sampled_from([2, 4, 6]),
    act=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_native_equals_function_body(n, c, m, h, w, pads, tile, act, bias, seed):
    """WinogradConv native == its function body (onnxruntime's Conv + activation) within the lossless tolerance,
    on odd sizes, any pads, batch > 1, with and without bias, for every activation form."""
    if h + pads[0] + pads[2] < 3 or w + pads[1] + pads[3] < 3:
        return
    rng = np.random.default_rng(seed)
    wt, b, x = _problem(rng, n, c, m, h, w, bias)
    model = oplib.winograd_conv([n, c, h, w], wt, bias=b, pads=pads, tile=tile, **ACTIVATIONS[act])
    ref = run(model, {"X": x}, native=False)
    assert ref.shape == (n, m, h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2)
    assert_lossless(run(model, {"X": x}, native=True), ref)


@pytestmark_rt
@pytest.mark.parametrize("tile", [2, 4, 6])
def test_layer_sizes_and_threads(tile):
    """Real layer sizes (channel counts past the vector width, many tile blocks), 1 and 2 threads agree."""
    rng = np.random.default_rng(tile)
    wt, b, x = _problem(rng, 2, 96, 80, 30, 27)
    model = oplib.winograd_conv([2, 96, 30, 27], wt, bias=b, pads=(1, 1, 1, 1), tile=tile, leaky_alpha=0.0)
    ref = run(model, {"X": x}, native=False)
    one = run(model, {"X": x}, native=True, threads=1)
    two = run(model, {"X": x}, native=True, threads=2)
    assert_lossless(one, ref)
    np.testing.assert_array_equal(one, two)  # blocks are independent: threads change nothing


@pytestmark_rt
def test_non_constant_weights():
    rng = np.random.default_rng(3)
    wt, b, x = _problem(rng, 1, 12, 20, 10, 9)
    model = oplib.winograd_conv([1, 12, 10, 9], wt, bias=b, pads=(1, 0, 1, 2), as_inputs=("W", "B"))
    feeds = {"X": x, "W": wt, "B": b}
    sess = make_session(model, native=True)
    assert_lossless(sess.run(None, feeds)[0], run(model, feeds, native=False))
    feeds["W"] = -wt  # a later run with other weights is transformed again
    assert_lossless(sess.run(None, feeds)[0], run(model, feeds, native=False))


@pytestmark_rt
@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_other_kernel_sets(isa):
    """The AVX2 and portable kernels (the process-wide choice is made once, so each runs in a subprocess)."""
    env = {**os.environ, "ONNXCOMP_ISA": isa, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, str(HERE / "winograd_isa_check.py")], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.split()[:2] == ["ok", isa]


BAD = [
    ({"strides": [2, 2]}, "strides"),
    ({"dilations": [2, 2]}, "dilations"),
    ({"group": 2}, "group"),
    ({"tile": 3}, "tile"),
    ({"tile": 8}, "tile"),
    ({"kernel_shape": [5, 5]}, "kernel_shape"),
    ({"pads": [1, 1]}, "pads"),
    ({"pads": [-1, 0, 0, 0]}, "pads"),
    ({"auto_pad": "SAME_UPPER"}, "auto_pad"),
    ({"clip_min": 1.0, "clip_max": 0.0}, "clip_min"),
]


@pytestmark_rt
@pytest.mark.parametrize("attrs,word", BAD)
def test_bad_attributes_are_rejected(attrs, word):
    rng = np.random.default_rng(0)
    wt, b, _ = _problem(rng, 1, 4, 4, 8, 8)
    model = oplib.winograd_conv([1, 4, 8, 8], wt, bias=b, attrs=attrs)
    with pytest.raises(Exception, match=word):
        make_session(model, native=True).run(None, {"X": np.zeros((1, 4, 8, 8), np.float32)})


@pytestmark_rt
@pytest.mark.parametrize(
    "x_shape,w_shape,word",
    [
        ((1, 5, 8, 8), (4, 4, 3, 3), "channels"),
        ((1, 4, 8), (4, 4, 3, 3), "rank 4"),
        ((1, 4, 1, 8), (4, 4, 3, 3), "smaller than the 3x3 kernel"),
        ((1, 4, 8, 8), (4, 4, 3, 2), r"\[M, C, 3, 3\]"),
    ],
)
def test_bad_inputs_are_rejected(x_shape, w_shape, word):
    rng = np.random.default_rng(0)
    wt = rng.standard_normal(w_shape).astype(np.float32)
    model = oplib.winograd_conv(list(x_shape), wt, as_inputs=("W",))
    sess = make_session(model, native=True)
    with pytest.raises(Exception, match=word):
        sess.run(None, {"X": np.zeros(x_shape, np.float32), "W": wt})


@pytestmark_rt
@pytest.mark.parametrize("tile", [2, 4, 6])
@pytest.mark.parametrize("constant", [True, False])
def test_codebook_conv_winograd_tile(tile, constant):
    """CodebookConv with winograd_tile: constant codes are decoded and transformed once (at session creation);
    non-constant ones run onnxruntime's Conv on the decoded filter. Both equal the function body."""
    rng = np.random.default_rng(tile)
    m, c, bits = 24, 19, 4
    cb, _, packed = oplib.random_codebook_problem(rng, m, c * 9, bits)
    cb *= np.float32(np.sqrt(2.0 / (9 * c)))
    bias = rng.standard_normal(m).astype(np.float32)
    model = oplib.codebook_conv(
        [2, c, 17, 14],
        cb,
        packed,
        bits=bits,
        weight_shape=[m, c, 3, 3],
        bias=bias,
        pads=[1, 0, 2, 1],
        attrs={"winograd_tile": tile},
        as_inputs=() if constant else ("codes",),
    )
    feeds = {"X": rng.standard_normal((2, c, 17, 14)).astype(np.float32)}
    if not constant:
        feeds["codes"] = packed
    assert_lossless(run(model, feeds, native=True), run(model, feeds, native=False))


@pytestmark_rt
def test_codebook_conv_winograd_tile_needs_a_3x3_stride_1_layer():
    rng = np.random.default_rng(0)
    cb, _, packed = oplib.random_codebook_problem(rng, 4, 4 * 9, 4)
    model = oplib.codebook_conv(
        [1, 4, 9, 9], cb, packed, bits=4, weight_shape=[4, 4, 3, 3], strides=[2, 2], attrs={"winograd_tile": 4}
    )
    with pytest.raises(Exception, match="winograd_tile"):
        make_session(model, native=True)
