"""kmeans' block codebooks (``block-size``): never a worse weight reconstruction than the same groups' codebooks
over all inputs, data-free and calibrated (GPTVQ order) runs whose outputs follow the decoded weights, the byte
figures equal to the bytes in the written file, the auto granularity's choice reported, the CLI with --verify."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from onnxcomp.passes.share import (
    block_encode,
    compensated_quantize_blocks,
    decode_blocks,
    kmeans_encode,
    output_error,
)

from onnxcomp import ops
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.cli import run as cli
from tests.support.compressed import make_model, run, stored_inputs


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(8, 120),
    n=st.integers(1, 24),
    bits=st.integers(1, 4),
    gsz=st.sampled_from([0, 1, 3, 8]),
    bsz=st.integers(2, 50),
    heavy=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_block_codebooks_never_reconstruct_worse_than_the_same_bits_without_blocks(k, n, bits, gsz, bsz, heavy, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    if heavy:  # block scales differ a lot: where blocks help most
        w *= np.exp(rng.standard_normal((k, 1)) * 1.5).astype(np.float32)
    whole = kmeans_encode(w, bits, gsz, 1)
    blocks = block_encode(w, bits, gsz, 1, bsz, rng=rng)
    err_whole = float(np.sum((whole.decoded(1).astype(np.float64) - w) ** 2))
    err_blocks = float(np.sum((blocks.decoded(1).astype(np.float64) - w) ** 2))
    assert err_blocks <= err_whole * (1 + 1e-9) + 1e-12
    nb = -(-k // bsz) if bsz < k else 1
    assert blocks.table.shape == (whole.table.shape[0] * nb, 1 << bits)


def test_compensated_blocks_codes_decode_to_the_reported_error_and_beat_plain():
    rng = np.random.default_rng(5)
    r, n = 12, 40
    x = rng.standard_normal((400, n)) @ (rng.standard_normal((n, n)) * rng.random(n) ** 2)
    h = x.T @ x / x.shape[0]
    w = rng.standard_normal((r, n)) * np.exp(rng.standard_normal((1, n)))
    res = compensated_quantize_blocks(w, [h], 3, 4, 16)
    assert res.codebook.shape == (3 * 3, 8)  # 3 row groups x 3 blocks (16, 16, 8)
    q = decode_blocks(res.codebook, res.codes, 4, 16)
    assert output_error(w, q, [h]) == pytest.approx(res.error, rel=1e-9)
    assert res.error <= res.error_plain


def _net(seed=0):
    """x [N, 200] -> MatMul 200x48 -> Relu -> Gemm 48x10 (transB); input features of very different scales."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.standard_normal((200, 1)) * 1.2)
    w0 = (rng.standard_normal((200, 48)) * scale / 14).astype(np.float32)
    w1 = (rng.standard_normal((10, 48)) / 7).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="fc0"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w1"], ["y"], name="fc1", transB=1),
    ]
    model = make_model(nodes, {"w0": w0, "w1": w1}, [("x", ["N", 200])], [("y", ["N", 10])])
    x = rng.standard_normal((300, 200)).astype(np.float32)
    return model, x


def _check_bytes_and_decode(out, report, x):
    """Every layer's reported bytes are its tensors' bytes in the written model; the model runs as its decode."""
    by_node = {n.name: n for n in out.graph.node}
    rows = report.passes[0].layers
    assert rows
    for row in rows:
        node = by_node[row.extra["node"]]
        assert row.extra["bytes_stored"] == sum(a.nbytes for i in node.input[1:] for a in stored_inputs(out, i))
    assert report.passes[0].counters["bytes_stored"] == sum(r.extra["bytes_stored"] for r in rows)
    ops.validate_model(out)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(ops.decode_model(out), {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("calibrated", [False, True])
def test_block_size_writes_block_nodes_whose_bytes_are_on_disk(calibrated, tmp_path):
    model, x = _net(1)
    spec = "kmeans(bits=4,group-size=8,block-size=64,sequential=false)"
    out, report = optimize(model, spec, calib={"x": x[:200]} if calibrated else None)
    blocks = {n.name: ops.node_attributes(n).get("block_size") for n in out.graph.node if n.domain == ops.DOMAIN}
    assert list(blocks.values()) == [64, None]  # fc0: 200 inputs in 4 blocks; fc1: 48 inputs, one block (no attribute)
    cb = next(i for i in out.graph.initializer if i.name.startswith("w0") and "codebook" in i.name)
    assert list(cb.dims) == [6 * 4, 16]  # 48 outputs / 8 = 6 groups, 4 blocks
    _check_bytes_and_decode(out, report, x[200:])
    if calibrated:
        assert report.passes[0].counters.get("layers_compensated", 0) >= 1
    # the file: what the report says is what is stored
    path = tmp_path / "m.onnx"
    onnx.save(out, str(path))
    assert onnx.load(str(path)).graph.initializer  # round-trips


def test_blocks_lower_the_output_error_where_input_scales_differ():
    model, x = _net(2)
    err = {}
    for spec in ("kmeans(bits=3,group-size=8)", "kmeans(bits=3,group-size=8,block-size=32)"):
        out, _ = optimize(model, spec)
        ref, got = run(model, {"x": x})[0], run(out, {"x": x})[0]
        err[spec] = float(np.sum((got - ref) ** 2) / np.sum(ref**2))
    assert err["kmeans(bits=3,group-size=8,block-size=32)"] < 0.7 * err["kmeans(bits=3,group-size=8)"]


def test_auto_granularity_considers_blocks_and_says_what_it_chose():
    model, x = _net(3)
    # with float16 codebooks fc0's per-channel codebooks cost 3.6 bits/weight and beat its blocks (16.0 dB vs
    # 11.4 dB at 3.19 bits): the blocks are weighed at what they store
    _, report16 = optimize(model, "kmeans(bits=3,block-size=32)")
    fc0 = next(r for r in report16.passes[0].layers if r.name == "fc0")
    assert "per channel" in fc0.decision and "blocks of 32 inputs gain less" in fc0.decision
    # float32 codebooks (4.28 bits/weight per channel): blocks of 32 win on fc0
    out, report = optimize(model, "kmeans(bits=3,block-size=32,codebook-dtype=float32)")
    decisions = {r.name: r.decision for r in report.passes[0].layers}
    assert any("blocks of 32 inputs" in d for d in decisions.values())
    chosen = [d for d in decisions.values() if "dB per stored bit" not in d]
    # fc0's inputs differ in scale by e^1.2 per feature: blocks of 32 win there
    assert any(d.startswith("kmeans 3-bit") and "blocks of 32 inputs" in d for d in chosen)
    _check_bytes_and_decode(out, report, x)


def test_negative_block_size_is_a_usage_error():
    model, _ = _net(0)
    with pytest.raises(UsageError, match="block-size"):
        optimize(model, "kmeans(block-size=-1)")


def test_cli_block_size_with_verify_on_the_bundled_model(tmp_path, capsys):
    from pathlib import Path

    src = Path(__file__).resolve().parents[3] / "models" / "digits_cnn.onnx"
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    code, _, err = cli(
        capsys, "optimize", src, out, "--passes", "kmeans(bits=4,block-size=64)", "--verify", "--report", rep
    )
    assert code == 0, err
    report = json.loads(rep.read_text())
    assert out.stat().st_size > 0
    assert "blocks of 64 inputs" in json.dumps(report)


def test_inlined_block_model_equals_the_function_model():
    # fc1 has no block_size: inlining applies the block body's default (one block) to it
    model, x = _net(4)
    spec = "kmeans(bits=4,group-size=8,block-size=64)"
    out, _ = optimize(model, spec)
    inl, _ = optimize(model, spec[:-1] + ",inline=true)")
    assert not inl.functions and not any(n.domain == ops.DOMAIN for n in inl.graph.node)
    np.testing.assert_allclose(run(inl, {"x": x})[0], run(out, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compensate", [False, True])
def test_lsq_refit_of_block_codebooks_never_raises_the_calibration_error(compensate):
    # one layer: the model's output error on the calibration rows is the refit's objective (H = X^T X)
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((200, 48)) * np.exp(rng.standard_normal((200, 1)))).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, [("x", ["N", 200])],
                       [("y", ["N", 48])])  # fmt: skip
    x = (rng.standard_normal((300, 200)) @ rng.standard_normal((200, 200)) * 0.1).astype(np.float32)
    err = {}
    for refine in (False, True):
        spec = f"kmeans(bits=3,group-size=8,block-size=64,sequential=false,compensate={str(compensate).lower()},"
        out, report = optimize(model, f"{spec}refine={str(refine).lower()})", calib={"x": x})
        ref, got = run(model, {"x": x})[0].astype(np.float64), run(out, {"x": x})[0].astype(np.float64)
        err[refine] = float(np.sum((got - ref) ** 2))
        assert ("lsq codebook" in report.passes[0].layers[0].decision) == refine
    assert err[True] <= err[False] * (1 + 1e-5)
    assert err[True] < 0.995 * err[False]  # and it does fit
