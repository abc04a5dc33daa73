"""lowrank: param-ratio (2x fewer parameters) and the activation-aware (whitened) truncation with --calib."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.api import optimize
from tests.support.run import outputs

from .test_svd import conv_model, mlp


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _anisotropic(rng, n, k):
    """Inputs whose energy sits in a few fixed directions (a spectrum falling over four decades)."""
    q, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((k, k)))
    return ((rng.standard_normal((n, k)) * np.logspace(0, -4, k)) @ q.T).astype(np.float32)


@pytest.mark.parametrize("trans_b", [False, True])
def test_param_ratio_halves_the_parameters(trans_b):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((96, 80)).astype(np.float32)
    w2 = rng.standard_normal((40, 80) if trans_b else (80, 40)).astype(np.float32)
    _, rep = optimize(mlp(w1, w2, np.zeros(40, np.float32), trans_b), "lowrank(param-ratio=0.5,min-params=0)")
    layers = rep.passes[0].layers
    assert len(layers) == 2
    for rec in layers:
        assert 0.45 * rec.params_before <= rec.params_after <= 0.5 * rec.params_before, rec


def test_calibrated_factors_beat_data_free_on_anisotropic_inputs():
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((64, 64)).astype(np.float32)
    w2 = rng.standard_normal((64, 32)).astype(np.float32)
    model = mlp(w1, w2, np.zeros(32, np.float32))
    calib = {"x": _anisotropic(rng, 512, 64)}
    test = {"x": _anisotropic(np.random.default_rng(2), 256, 64)}
    ref = outputs(model, test)["y"]
    spec = "lowrank(param-ratio=0.3,min-params=0)"
    free, _ = optimize(model, spec)
    aware, rep = optimize(model, spec, calib=calib)
    assert all("activation-aware" in r.decision for r in rep.passes[0].layers)
    e_free, e_aware = _rel(outputs(free, test)["y"], ref), _rel(outputs(aware, test)["y"], ref)
    assert e_aware < 0.6 * e_free, (e_aware, e_free)
    # same ranks either way
    assert [r.extra["rank"] for r in rep.passes[0].layers] == [9, 6]  # int(0.3 * K * N / (K + N))


def test_calibrated_conv_uses_im2col_statistics():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    model = conv_model(w, np.zeros(32, np.float32), pads=[1, 1, 1, 1])
    # channels with very different scales: the whitened truncation keeps what the data excites
    scale = np.logspace(0, -3, 16).astype(np.float32)[None, :, None, None]
    calib = {"x": rng.standard_normal((16, 16, 9, 11)).astype(np.float32) * scale}
    test = {"x": np.random.default_rng(4).standard_normal((4, 16, 9, 11)).astype(np.float32) * scale}
    ref = outputs(model, test)["y"]
    spec = "lowrank(param-ratio=0.4,min-params=0)"
    free, _ = optimize(model, spec)
    aware, rep = optimize(model, spec, calib=calib)
    assert "activation-aware" in rep.passes[0].layers[0].decision
    assert _rel(outputs(aware, test)["y"], ref) < 0.7 * _rel(outputs(free, test)["y"], ref)


def test_param_ratio_is_checked():
    from onnxcomp.errors import UsageError

    rng = np.random.default_rng(0)
    model = mlp(
        rng.standard_normal((8, 8)).astype(np.float32),
        rng.standard_normal((8, 4)).astype(np.float32),
        np.zeros(4, np.float32),
    )
    with pytest.raises(UsageError):
        optimize(model, "lowrank(param-ratio=1.5)")
