"""The encoder/kernel contract end to end: models written by the share passes (their own function bodies,
their own bit packing, EIE layout, group sizes and Huffman streams) run natively, through the shipped
function bodies and through the numpy decoders, and all three agree.

(test_runtime_ops.py checks the kernels against the test-local bodies of oplib.py; this file checks them
against what onnxcomp.ops actually writes.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxcomp import ops
from onnxcomp.api import optimize
from onnxcomp.verify import run_model
from tests.support.compressed import custom_nodes, make_model, run

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _matmul(rng, k, n, zeros=0.0, bias=True, batch=("b",)):
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[rng.random(w.shape) < zeros] = 0.0
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m" if bias else "y"], name="mm")]
    inits = {"w": w}
    if bias:
        inits["b"] = rng.standard_normal(n).astype(np.float32)
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"], name="add"))
    model = make_model(nodes, inits, [("x", [*batch, k])], [("y", [*batch, n])])
    return model, {"x": rng.standard_normal((3, k)[-1 - len(batch) :]).astype(np.float32)}


def _gemm(rng, k, n, c_shape):
    w = rng.standard_normal((n, k)).astype(np.float32)
    inits = {"w": w, "c": rng.standard_normal(c_shape).astype(np.float32)}
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=1, alpha=0.75, beta=1.5)
    model = make_model([node], inits, [("x", ["b", k])], [("y", ["b", n])])
    return model, {"x": rng.standard_normal((3, k)).astype(np.float32)}


def _conv(rng, c, m, k, group, bias=True, zeros=0.0, **attrs):
    w = rng.standard_normal((m, c // group, *k)).astype(np.float32)
    w[rng.random(w.shape) < zeros] = 0.0
    inits, ins = {"w": w}, ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(m).astype(np.float32)
        ins.append("b")
    spatial = [9, 7, 5][: len(k)]
    node = helper.make_node("Conv", ins, ["y"], name="conv", group=group, **attrs)
    model = make_model([node], inits, [("x", [2, c, *spatial])], [("y", None)])
    return model, {"x": rng.standard_normal((2, c, *spatial)).astype(np.float32)}


CASES = {
    "kmeans-1bit-groups": (lambda r: _matmul(r, 37, 29), "kmeans(bits=1,group_size=5)", "CodebookMatMul"),
    "kmeans-3bit-straddling": (lambda r: _matmul(r, 37, 29), "kmeans(bits=3,group_size=4)", "CodebookMatMul"),
    "kmeans-7bit": (
        lambda r: _matmul(r, 300, 70, bias=False),
        "kmeans(bits=7,group_size=9)",
        "CodebookMatMul",
    ),
    "sparse-fillers-4": (
        lambda r: _matmul(r, 40, 300, zeros=0.97),
        "kmeans(bits=3,sparse=always,group_size=7)",
        "SparseCodebookMatMul",
    ),
    "sparse-allzero": (
        lambda r: _matmul(r, 8, 9, zeros=1.0),
        "kmeans(bits=2,sparse=always)",
        "SparseCodebookMatMul",
    ),
    "ternary-gemm-beta": (lambda r: _gemm(r, 20, 11, [1, 11]), "ternary", "TernaryMatMul"),
    "binary-gemm-scalar-c": (lambda r: _gemm(r, 20, 11, [1]), "binary(per_channel=false)", "CodebookMatMul"),
    "pow2-lsq": (lambda r: _matmul(r, 33, 17, batch=()), "pow2(bits=3,scale=lsq)", "CodebookMatMul"),
    "conv-strided-asym-pads": (
        lambda r: _conv(r, 5, 7, (3, 3), 1, pads=[1, 1, 0, 1], strides=[2, 1]),
        "kmeans(bits=3,group_size=3)",
        "CodebookConv",
    ),
    "conv-grouped-dilated": (
        lambda r: _conv(r, 6, 9, (3, 3), 3, dilations=[2, 1]),
        "kmeans(bits=2)",
        "CodebookConv",
    ),
    "conv-depthwise-same": (
        lambda r: _conv(r, 6, 12, (3, 3), 6, bias=False, auto_pad="SAME_LOWER", strides=[2, 2]),
        "ternary",
        "CodebookConv",
    ),
    "conv-1d": (lambda r: _conv(r, 4, 5, (3,), 1), "kmeans(bits=5)", "CodebookConv"),
    "conv-3d": (lambda r: _conv(r, 3, 4, (2, 2, 2), 1), "pow2(bits=4)", "CodebookConv"),
    "huffman-sparse": (
        lambda r: _matmul(r, 300, 200, zeros=0.9),
        "kmeans(bits=4,huffman=store)",
        "HuffmanDecode",
    ),
    "huffman-zero-runs-conv": (
        lambda r: _conv(r, 64, 128, (3, 3), 1, zeros=0.97),
        "kmeans(bits=3,huffman=store)",
        "RunLengthDecode",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pass_outputs_native_equals_function_bodies_and_numpy(case):
    build, spec, op = CASES[case]
    model, feeds = build(np.random.default_rng(len(case)))
    out, _ = optimize(model, spec)
    onnx.checker.check_model(out)
    assert op in {n.op_type for n in custom_nodes(out)}, [n.op_type for n in out.graph.node]
    reference = run(ops.decode_model(out), feeds)
    body = run(out, feeds)
    native = list(run_model(out, feeds, runtime=True).values())
    for r, b, n in zip(reference, body, native, strict=True):
        np.testing.assert_array_equal(b, r)  # the bodies fold into the same float weights
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(n, r, rtol=1e-5, atol=2e-6 * scale)  # float32 summation order
