"""Block codebooks (``block_size``) of CodebookMatMul and CodebookConv: the function body equals the numpy decode,
the decode rule is the one of runtime/OPS.md, and the validators check the codebook rows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from onnxcomp import ops
from tests.support.compressed import make_model, run


def _model(op, inputs, inits, attrs, x_shape, opset=18, blocks=True):
    node = helper.make_node(op, ["x", *inputs], ["y"], domain=ops.DOMAIN, name="n", **attrs)
    return make_model(
        [node],
        inits,
        [("x", x_shape)],
        [("y", None)],
        opset=opset,
        functions=ops.function_protos(op, opset, blocks=blocks),
    )


def _exact(model, feeds):
    onnx.checker.check_model(model)
    ops.validate_model(model)
    got, want = run(model, feeds)[0], run(ops.decode_model(model), feeds)[0]
    np.testing.assert_array_equal(got, want)


def _matmul_weight(cb, codes, gsz, bsz):
    # the decode rule written out: W[k, n] = codebook[(n // group_size) * nblocks + k // block_size, code(k, n)]
    k, n = codes.shape
    nb = -(-k // bsz)
    w = np.empty((k, n), np.float32)
    for i in range(k):
        for j in range(n):
            w[i, j] = cb[(j // gsz) * nb + i // bsz, codes[i, j]]
    return w


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 40),
    n=st.integers(1, 20),
    bits=st.integers(1, 8),
    gsz=st.integers(1, 25),
    bsz=st.integers(1, 45),
    seed=st.integers(0, 2**16),
)
def test_codebook_matmul_blocks_body_equals_decode(k, n, bits, gsz, bsz, seed):
    rng = np.random.default_rng(seed)
    g, nb = -(-n // gsz), -(-k // bsz)
    cb = rng.standard_normal((g * nb, 1 << bits)).astype(np.float32)
    codes = rng.integers(0, 1 << bits, (k, n))
    packed = ops.pack_codes(codes, bits)
    b = rng.standard_normal(n).astype(np.float32)
    attrs = {"bits": bits, "N": n, "group_size": gsz, "block_size": bsz}
    m = _model("CodebookMatMul", ["cb", "codes", "b"], {"cb": cb, "codes": packed, "b": b}, attrs, [2, k])
    w, _ = ops.get_op("CodebookMatMul").reference(attrs, [None, cb, packed, b])
    np.testing.assert_array_equal(w, _matmul_weight(cb, codes, gsz, bsz))
    _exact(m, {"x": rng.standard_normal((2, k)).astype(np.float32)})


def test_block_body_without_the_attribute_decodes_as_one_block():
    # the block body is written into a model once any node has blocks: nodes without the attribute keep their meaning
    rng = np.random.default_rng(0)
    k, n, bits = 7, 5, 3
    cb = rng.standard_normal((1, 8)).astype(np.float32)
    codes = rng.integers(0, 8, (k, n))
    attrs = {"bits": bits, "N": n, "group_size": n}
    inits = {"cb": cb, "codes": ops.pack_codes(codes, bits), "b": np.zeros(n, np.float32)}
    m = _model("CodebookMatMul", ["cb", "codes", "b"], inits, attrs, [1, k])
    x = rng.standard_normal((1, k)).astype(np.float32)
    np.testing.assert_allclose(run(m, {"x": x})[0], x @ cb[0, codes], rtol=1e-5, atol=1e-5)


CONV_CASES = [
    # (M, C, group, kernel, bits, group_size, block_size)
    (6, 4, 1, (3, 3), 4, 2, 7),  # 36 inputs, blocks of 7: the last one partial
    (8, 8, 8, (3, 3), 3, 1, 4),  # depthwise: 9 inputs per filter, blocks 4, 4, 1
    (12, 6, 3, (3, 2), 2, 5, 3),  # grouped
    (5, 3, 1, (2,), 8, 5, 2),  # 1-D
    (4, 2, 1, (2, 2, 2), 4, 3, 5),  # 3-D
    (4, 2, 1, (1, 1), 4, 1, 64),  # one block (block_size >= inputs)
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_codebook_conv_blocks_body_equals_decode(case):
    m_, c, grp, kern, bits, gsz, bsz = case
    rng = np.random.default_rng(m_ * 7 + bsz)
    ws = [m_, c // grp, *kern]
    per = int(np.prod(ws[1:]))
    rows = -(-m_ // gsz) * -(-per // bsz)
    cb = rng.standard_normal((rows, 1 << bits)).astype(np.float32)
    codes = rng.integers(0, 1 << bits, (m_, per))
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
        strides=[1] * s,
    )
    inits = {"cb": cb, "codes": ops.pack_codes(codes, bits), "b": rng.standard_normal(m_).astype(np.float32)}
    spatial = [7, 6, 5][:s]
    m = _model("CodebookConv", ["cb", "codes", "b"], inits, attrs, [2, c, *spatial])
    w, _ = ops.get_op("CodebookConv").reference(attrs, [None, cb, inits["codes"], None])
    nb = -(-per // bsz)
    want = np.array([[cb[(i // gsz) * nb + j // bsz, codes[i, j]] for j in range(per)] for i in range(m_)])
    np.testing.assert_array_equal(w.reshape(m_, per), want)
    _exact(m, {"x": rng.standard_normal((2, c, *spatial)).astype(np.float32)})


def test_validator_wants_g_times_nblocks_codebook_rows():
    rng = np.random.default_rng(1)
    k, n, bits = 10, 6, 2
    codes = ops.pack_codes(rng.integers(0, 4, (k, n)), bits)
    attrs = {"bits": bits, "N": n, "group_size": 3, "block_size": 4}  # G = 2, nblocks = 3
    good = {"cb": rng.standard_normal((6, 4)).astype(np.float32), "codes": codes, "b": np.zeros(n, np.float32)}
    ops.validate_model(_model("CodebookMatMul", ["cb", "codes", "b"], good, attrs, [1, k]))
    bad = dict(good, cb=rng.standard_normal((2, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"G\*nblocks=2\*3"):
        ops.validate_model(_model("CodebookMatMul", ["cb", "codes", "b"], bad, attrs, [1, k]))
    with pytest.raises(ValueError, match="block_size"):
        ops.validate_model(_model("CodebookMatMul", ["cb", "codes", "b"], good, dict(attrs, block_size=0), [1, k]))
