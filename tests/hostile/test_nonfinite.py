"""Issue 9 items 3 and 4: NaN/Inf never pass unnoticed (weights, BatchNorm folding, verification)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxcomp.api import optimize
from onnxcomp.errors import InputError
from onnxcomp.verify import Tolerance, compare_arrays
from tests.support import models
from tests.support.cli import assert_one_line_error, run, save
from tests.support.run import assert_same_outputs


# ------------------------------------------------------------------------------ item 3: BN and weights
@pytest.mark.parametrize(("var", "eps"), [([1.0, -0.5, 2.0], 1e-5), ([1.0, 0.0, 2.0], 0.0)])
def test_bn_with_var_plus_eps_not_positive_is_left_unfused(var, eps):
    m = models.conv_bn(var, eps)
    out, rep = optimize(m)  # the default lossless pipeline
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    skips = [s.reason for p in rep.passes if p.name == "fuse-bn" for s in p.skips]
    assert any("variance + epsilon <= 0 in 1 channel(s) (first: [1])" in r for r in skips), skips
    for t in out.graph.initializer:  # no weight was turned into NaN/Inf
        assert np.isfinite(onnx.numpy_helper.to_array(t)).all(), t.name
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    assert_same_outputs(m, out, feeds, exact=True)  # NaN channel where ORT puts it, same bits elsewhere


def test_healthy_bn_still_folds():
    out, _ = optimize(models.conv_bn([1.0, 0.5, 2.0]))
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]


def test_nan_weights_are_reported_on_load(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[0, 0, 0, 0], w[1, 0, 0, 0] = np.nan, np.inf
    _, rep = optimize(models.conv(dims=(1, 3, 8, 8), weight=w))
    assert rep.warnings == ["non-finite weights in the input model: conv1.weight (1 NaN and 1 Inf of 108 values)"]
    p = save(models.conv(dims=(1, 3, 8, 8), weight=w), tmp_path / "nan.onnx")
    code, stdout, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--report", tmp_path / "r.json")
    assert code == 0, err
    assert "warning: non-finite weights in the input model: conv1.weight" in stdout
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == rep.warnings


def test_lowrank_skips_nan_weights_with_a_reason():
    w = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32)
    w[3, 5] = np.nan
    out, rep = optimize(models.mlp(w), "lowrank(min_params=16,energy=0.5)")
    (skip,) = [s for p in rep.passes for s in p.skips]
    assert skip.node == "/fc/MatMul" and "1 NaN and 0 Inf" in skip.reason
    assert [n.op_type for n in out.graph.node] == ["MatMul", "Relu"]


@pytest.mark.parametrize("spec", ["kmeans(bits=4)", "prune-weights(ratio=0.5)", "ternary", "pow2", "binary"])
def test_share_passes_leave_nan_layers_alone(spec):
    w = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32)
    w[3, 5] = np.nan
    out, rep = optimize(models.mlp(w), spec)
    skips = [s.reason for p in rep.passes for s in p.skips]
    assert any("NaN" in r for r in skips), skips
    assert [n.op_type for n in out.graph.node] == ["MatMul", "Relu"]


# ----------------------------------------------------------------------------- item 4: verification
def test_candidate_nan_where_the_reference_is_finite_fails():
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    new = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
    for tol in (Tolerance.lossless(), Tolerance.lossy()):
        m = compare_arrays("y", ref, new, tol)
        assert not m.ok and "2 NaN/Inf values where the original is finite" in m.why


def test_all_non_finite_reference_is_an_input_error():
    ref = np.full(6, np.nan, np.float32)
    with pytest.raises(InputError, match="NaN/Inf everywhere"):
        compare_arrays("y", ref, ref.copy(), Tolerance.lossless())


def test_partially_non_finite_reference_compares_the_rest():
    ref = np.array([np.nan, 1.0, 2.0, -np.inf], np.float32)
    assert compare_arrays("y", ref, ref + 0, Tolerance.lossless()).ok
    m = compare_arrays("y", ref, np.array([np.nan, 1.0, 5.0, -np.inf], np.float32), Tolerance.lossless())
    assert not m.ok and "max abs error" in m.why
    m = compare_arrays("y", ref, np.array([1.0, 1.0, 2.0, -np.inf], np.float32), Tolerance.lossless())
    assert not m.ok and "non-finite" in m.why


def test_verify_of_an_all_nan_model_is_exit_2(tmp_path, capsys):
    w = np.full((4, 3, 3, 3), np.nan, np.float32)
    p = save(models.conv(dims=(1, 3, 8, 8), weight=w), tmp_path / "nan.onnx")
    code, _, err = run(capsys, "verify", p, p)
    assert_one_line_error(code, err)
    assert "NaN/Inf everywhere" in err
    code, _, err = run(capsys, "optimize", p, tmp_path / "o.onnx", "--verify", "--passes", "kmeans(bits=4)")
    assert_one_line_error(code, err)
    assert not (tmp_path / "o.onnx").exists()
