"""The weight-sharing passes through the CLI on the bundled digits model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxcomp import io, ops
from tests.support.compressed import custom_nodes, run

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "models" / "digits_cnn.onnx"
HELDOUT = ROOT / "models" / "digits_heldout.npz"
LABELS = ROOT / "models" / "digits_labels.npy"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxcomp", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not DIGITS.exists(), reason="bundled digits model missing")
def test_cli_kmeans_on_digits(tmp_path):
    out, report = tmp_path / "d4.onnx", tmp_path / "r.json"
    r = _cli(
        "optimize",
        str(DIGITS),
        str(out),
        "--passes",
        "kmeans(bits=4)",
        "--calib",
        str(HELDOUT),
        "--labels",
        str(LABELS),
        "--verify",
        "--min-cosine",
        "0.99",
        "--report",
        str(report),
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "top-1 accuracy" in r.stdout
    data = json.loads(report.read_text())
    (share,) = data["passes"]
    assert share["name"] == "kmeans" and len(share["layers"]) == 6
    assert {"bits", "codebook_size", "sparsity", "bytes_before", "bytes_packed", "bytes_huffman"} <= set(
        share["layers"][0]["extra"]
    )
    before, after = data["model"]["bytes_before"], data["model"]["bytes_after"]
    assert before == DIGITS.stat().st_size and after == out.stat().st_size
    assert before / after > 6.5  # 4-bit codes: ~1/8 of float32, plus graph and BatchNormalization
    v = data["verification"]
    assert v["accuracy_new"] >= v["accuracy_ref"] - 0.01
    model = io.load_model(out)
    assert {n.op_type for n in custom_nodes(model)} == {"CodebookConv", "CodebookMatMul"}
    x = np.load(HELDOUT)["input"][:7]
    np.testing.assert_array_equal(run(model, {"input": x})[0], run(ops.decode_model(model), {"input": x})[0])


@pytest.mark.skipif(not DIGITS.exists(), reason="bundled digits model missing")
def test_cli_deep_compression_pipeline_and_pass_listing(tmp_path):
    out = tmp_path / "dc.onnx"
    r = _cli(
        "optimize",
        str(DIGITS),
        str(out),
        "--passes",
        "prune-weights(ratio=0.8,scope=global,update=lsq),kmeans(bits=4,huffman=store)",
        "--calib",
        str(HELDOUT),
        "-q",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert DIGITS.stat().st_size / out.stat().st_size > 10
    assert "HuffmanDecode" in {n.op_type for n in custom_nodes(io.load_model(out))}
    r = _cli("passes")
    assert r.returncode == 0
    for name in ("kmeans", "prune-weights", "ternary", "binary", "pow2", "huffman", "inline-functions"):
        assert name in r.stdout
    r = _cli("optimize", str(DIGITS), str(tmp_path / "x.onnx"), "--passes", "kmeans(bits=4,colour=red)")
    assert r.returncode == 2 and "valid options" in (r.stderr + r.stdout)
