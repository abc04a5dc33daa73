"""binary: per-channel sign times mean |w|."""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxcomp.api import optimize
from tests.support.compressed import (
    decoded_weights,
    make_model,
)


def test_binary_is_per_channel_sign_times_mean_abs():
    w = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 20])], [("y", ["b", 6])], opset=17)
    out, _ = optimize(model, "binary")
    (w_hat,) = decoded_weights(out).values()
    # the scales as stored: float16 (codebook_dtype=auto), the values the model decodes
    scale = np.abs(w).mean(0, keepdims=True).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(w_hat, np.sign(w) * scale, rtol=1e-6)
