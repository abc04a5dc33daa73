"""Block codebooks (``block_size``) in the native kernels: native == portable function body == the decoded-weights
MatMul / Conv, on random shapes (K not a multiple of the block, codebook groups, grouped, depthwise, 1-D and 3-D
convolutions, non-constant codes), and malformed attributes refused naming the node."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from rtutil import make_session
from rtutil import run as run_once

from onnxcomp import ops
from tests.support.compressed import make_model

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _model(op, attrs, inits, x_shape, graph_inputs=()):
    node = helper.make_node(op, ["x", "cb", "codes", "b"], ["y"], domain=ops.DOMAIN, name="blk", **attrs)
    m = make_model(
        [node],
        {k: v for k, v in inits.items() if k not in graph_inputs},
        [("x", x_shape)],
        [("y", None)],
        functions=ops.function_protos(op, 18, blocks=True),
    )
    for k in graph_inputs:  # not constant: the kernel decodes at every run
        v = inits[k]
        m.graph.input.append(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
    return m


def _three_ways(model, feeds):
    """native, function body, decoded standard op: all equal within float32 summation order."""
    body = run_once(model, feeds, native=False)
    native = run_once(model, feeds, native=True)
    consts = {i.name for i in model.graph.initializer}
    ref_model = model
    if all(n in consts for n in ("cb", "codes")):
        ref_model = ops.decode_model(model)
        ref = run_once(ref_model, {"x": feeds["x"]}, native=False)
        np.testing.assert_allclose(body, ref, rtol=1e-5, atol=1e-5)
    scale = max(1.0, float(np.abs(body).max()))
    np.testing.assert_allclose(native, body, rtol=1e-4, atol=2e-5 * scale)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.sampled_from([1, 3, 7]),
    k=st.integers(2, 150),
    n=st.integers(1, 40),
    bits=st.sampled_from([1, 2, 3, 4, 5, 8]),
    gsz=st.integers(1, 45),
    bsz=st.integers(1, 70),
    narrow=st.booleans(),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_codebook_matmul_blocks(rows, k, n, bits, gsz, bsz, narrow, constant, seed):
    rng = np.random.default_rng(seed)
    entries = max(1, (1 << bits) - 1) if narrow else 1 << bits
    g, nb = -(-n // gsz), -(-k // bsz)
    cb = rng.standard_normal((g * nb, entries)).astype(np.float32)
    codes = ops.pack_codes(rng.integers(0, entries, (k, n)), bits)
    inits = {"cb": cb, "codes": codes, "b": rng.standard_normal(n).astype(np.float32)}
    attrs = {"bits": bits, "N": n, "group_size": gsz, "block_size": bsz}
    m = _model("CodebookMatMul", attrs, inits, [rows, k], () if constant else ("cb", "codes"))
    feeds = {"x": rng.standard_normal((rows, k)).astype(np.float32)}
    if not constant:
        feeds |= {"cb": cb, "codes": codes}
    _three_ways(m, feeds)


CONVS = [
    # (M, C, group, kernel, strides, bits, group_size, block_size, winograd_tile)
    (6, 5, 1, (3, 3), (1, 1), 4, 2, 7, 0),
    (8, 8, 8, (3, 3), (2, 2), 3, 1, 4, 0),  # depthwise, 9 inputs in blocks 4, 4, 1
    (12, 6, 3, (3, 2), (1, 2), 2, 5, 3, 0),  # grouped
    (5, 3, 1, (3,), (1,), 8, 5, 2, 0),  # 1-D
    (4, 2, 1, (2, 2, 2), (1, 1, 1), 4, 3, 5, 0),  # 3-D
    (8, 4, 1, (3, 3), (1, 1), 4, 8, 16, 4),  # Winograd with blocks (36 inputs: 16, 16, 4)
    (16, 32, 1, (1, 1), (1, 1), 4, 4, 64, 0),  # one block: block_size >= inputs
]


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("constant", [True, False])
def test_codebook_conv_blocks(case, constant):
    m_, c, grp, kern, strides, bits, gsz, bsz, tile = case
    rng = np.random.default_rng(m_ + 31 * bsz)
    ws = [m_, c // grp, *kern]
    per = int(np.prod(ws[1:]))
    cb = rng.standard_normal((-(-m_ // gsz) * -(-per // bsz), 1 << bits)).astype(np.float32)
    codes = ops.pack_codes(rng.integers(0, 1 << bits, (m_, per)), bits)
    s = len(kern)
    attrs = dict(
        bits=bits,
        group_size=gsz,
        block_size=bsz,
        weight_shape=ws,
        dilations=[1] * s,
        group=grp,
        kernel_shape=list(kern),
        pads=[1] * 2 * s,
        strides=list(strides),
    )
    if tile:
        attrs["winograd_tile"] = tile
    inits = {"cb": cb, "codes": codes, "b": rng.standard_normal(m_).astype(np.float32)}
    spatial = [9, 8, 5][:s]
    model = _model("CodebookConv", attrs, inits, [2, c, *spatial], () if constant else ("cb", "codes"))
    feeds = {"x": rng.standard_normal((2, c, *spatial)).astype(np.float32)}
    if not constant:
        feeds |= {"cb": cb, "codes": codes}
    _three_ways(model, feeds)


@pytest.mark.parametrize(
    ("op", "attrs", "rows", "match"),
    [
        ("CodebookMatMul", {"block_size": 0}, 3, "block_size"),
        ("CodebookMatMul", {"block_size": -5}, 3, "block_size"),
        ("CodebookMatMul", {"block_size": 4}, 1, r"G\*nblocks"),  # 10 inputs in 3 blocks: 3 rows wanted
        ("CodebookConv", {"block_size": 0}, 3, "block_size"),
        ("CodebookConv", {"block_size": 4}, 1, r"G\*nblocks"),
    ],
)
def test_malformed_blocks_are_refused_naming_the_node(op, attrs, rows, match):
    rng = np.random.default_rng(3)
    cb = rng.standard_normal((rows, 4)).astype(np.float32)
    if op == "CodebookMatMul":
        base = {"bits": 2, "N": 6}
        codes = ops.pack_codes(rng.integers(0, 4, (10, 6)), 2)
        x_shape = [2, 10]
    else:
        base = {
            "bits": 2,
            "weight_shape": [6, 10, 1],
            "kernel_shape": [1],
            "strides": [1],
            "pads": [0, 0],
            "dilations": [1],
            "group": 1,
        }
        codes = ops.pack_codes(rng.integers(0, 4, (6, 10)), 2)
        x_shape = [1, 10, 4]
    m = _model(op, {**base, **attrs}, {"cb": cb, "codes": codes, "b": np.zeros(6, np.float32)}, x_shape)
    with pytest.raises(
        (
            ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.RuntimeException,
        )
    ) as err:
        make_session(m, native=True).run(None, {"x": np.ones(x_shape, np.float32)})
    assert "blk" in str(err.value) and __import__("re").search(match, str(err.value))


@pytest.mark.parametrize("bits", [1, 2, 4, 3, 8])
@pytest.mark.parametrize(("n", "gsz", "bsz"), [(256, 256, 64), (1000, 7, 50), (1300, 1, 128)])
@pytest.mark.parametrize("constant", [True, False])
def test_codebook_matmul_blocks_register_decode_gemv(bits, n, gsz, bsz, constant):
    # 1-4 rows: the register-decoding GEMV block by block (wide enough for its column blocks), the rest by the GEMM
    rng = np.random.default_rng(bits * 1000 + n)
    k = 200
    nb = -(-k // bsz)
    cb = rng.standard_normal((-(-n // gsz) * nb, 1 << bits)).astype(np.float32)
    codes = ops.pack_codes(rng.integers(0, 1 << bits, (k, n)), bits)
    inits = {"cb": cb, "codes": codes, "b": rng.standard_normal(n).astype(np.float32)}
    attrs = {"bits": bits, "N": n, "group_size": gsz, "block_size": bsz}
    m = _model("CodebookMatMul", attrs, inits, ["M", k], () if constant else ("cb", "codes"))
    for rows in (1, 2, 4, 5):
        feeds = {"x": rng.standard_normal((rows, k)).astype(np.float32)}
        if not constant:
            feeds |= {"cb": cb, "codes": codes}
        _three_ways(m, feeds)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize(
    ("k", "n", "gsz", "bsz"),
    [(200, 300, 1, 16), (301, 260, 7, 48), (300, 129, 1, 128), (700, 520, 24, 256), (129, 64, 1, 64)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_codebook_matmul_blocks_column_gemv(bits, k, n, gsz, bsz, dtype):
    # codebooks per (output channel, block of 16 x j inputs), 1-4 rows: the column GEMV over all of K, each 16 rows
    # looked up in their block's codebook (K neither a multiple of the block nor of the 128-row line); a float16
    # codebook is converted once and kept, so the second and later runs read the kept floats
    rng = np.random.default_rng(bits * 7919 + k + n)
    nb = -(-k // bsz)
    cb = rng.standard_normal((-(-n // gsz) * nb, 1 << bits)).astype(dtype)
    codes = ops.pack_codes(rng.integers(0, 1 << bits, (k, n)), bits)
    inits = {"cb": cb, "codes": codes, "b": rng.standard_normal(n).astype(np.float32)}
    attrs = {"bits": bits, "N": n, "group_size": gsz, "block_size": bsz}
    m = _model("CodebookMatMul", attrs, inits, ["M", k])
    native, body = make_session(m, native=True), make_session(m, native=False)
    for rows in (1, 2, 3, 4, 5, 1):
        x = rng.standard_normal((rows, k)).astype(np.float32)
        want = body.run(None, {"x": x})[0]
        got = native.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(want).max())))
