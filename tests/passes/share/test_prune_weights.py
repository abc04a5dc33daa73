"""prune-weights: ratios and scopes, Wanda and the lsq update, kept weights bit-identical, per-layer ratios."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import builders
from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.compressed import (
    make_model,
    run,
)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_prune_weights_ratios_and_scopes():
    model = builders.mlp(in_features=40, hidden=(50,))
    out, report = optimize(model, "prune-weights(ratio=0.6,scope=output)")
    for node in io.normalize(out).graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            w = _weights(out)[node.input[1]]
            if node.op_type == "Gemm":
                w = w.T
            zeros_per_output = (w == 0).sum(0)
            assert np.all(zeros_per_output == round(0.6 * w.shape[0]))
    out, report = optimize(model, "prune-weights(ratio=0.75,scope=global)")
    assert report.passes[0].counters["sparsity"] == 0.75
    with pytest.raises(UsageError):
        optimize(model, "prune-weights(criterion=wanda)")


def test_wanda_and_lsq_update_use_the_calibration_data():
    model = builders.mlp(in_features=32, hidden=(64,))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    x[:, :16] *= 10.0  # the first half of the input features carries most of the energy
    calib = {"input": x}
    ref = run(model, calib)[0]

    def err(spec):
        out, _ = optimize(model, spec, calib=calib)
        return float(np.linalg.norm(run(out, calib)[0] - ref))

    magnitude = err("prune-weights(ratio=0.5,criterion=magnitude)")
    wanda = err("prune-weights(ratio=0.5,criterion=wanda)")
    lsq = err("prune-weights(ratio=0.5,criterion=wanda,update=lsq)")
    assert wanda < magnitude and lsq < wanda


def test_prune_keeps_the_kept_weights_bit_identical():
    rng = np.random.default_rng(7)
    b = rng.standard_normal((30, 40)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "b"], ["y"], name="g", alpha=0.3, transB=1)
    model = make_model([node], {"b": b}, [("x", ["n", 40])], [("y", ["n", 30])], opset=17)
    out, _ = optimize(model, "prune-weights(ratio=0.5)")
    pruned = _weights(out)["b"]
    kept = pruned != 0
    assert kept.mean() == 0.5
    np.testing.assert_array_equal(pruned[kept], b[kept])
    assert np.abs(b[~kept]).max() <= np.abs(b[kept]).min()


def test_prune_ratio_per_layer():
    model = builders.mlp(in_features=32, hidden=(64, 48))
    _, report = optimize(model, "prune-weights(ratio=0.25)")
    names = [row.name for row in report.passes[0].layers]
    assert len(names) >= 2
    _, report = optimize(model, f"prune-weights(ratio=0.25,ratio_per_layer={names[0]}:0.75)")
    sparsity = {row.name: row.extra["sparsity"] for row in report.passes[0].layers}
    assert sparsity[names[0]] == pytest.approx(0.75, abs=1e-3)
    assert all(sparsity[n] == pytest.approx(0.25, abs=1e-3) for n in names[1:])
