"""pow2: weights are signed powers of two (times a fitted scale)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnxcomp.api import optimize
from tests.support.compressed import (
    decoded_weights,
    make_model,
)


@pytest.mark.parametrize("scale", ["none", "lsq"])
def test_pow2_values_are_signed_powers_of_two(scale):
    w = (np.random.default_rng(1).standard_normal((40, 30)) * 0.2).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 40])], [("y", ["b", 30])], opset=17)
    out, report = optimize(model, f"pow2(bits=4,scale={scale})")
    (w_hat,) = decoded_weights(out).values()
    (layer,) = report.passes[0].layers
    kmin, kmax = layer.extra["exponents"]
    s = layer.extra["scale"]
    assert kmax - kmin + 1 == 7
    nz = w_hat[w_hat != 0] / s
    k = np.log2(np.abs(nz))
    # s * 2^k as stored: float16 rounding of s moves log2 by at most log2(1 + 2^-11) < 7.1e-4 (s = 1 is exact)
    tol = 1e-6 if scale == "none" else 7.1e-4
    np.testing.assert_allclose(k, np.round(k), atol=max(tol, 1e-5))
    assert k.min() >= kmin - tol and k.max() <= kmax + tol
    if scale == "none":
        assert s == 1.0
    inside = (np.abs(w) >= s * 2.0**kmin) & (np.abs(w) <= s * 2.0**kmax)
    # the nearest power of two is never more than 1/3 off (worst case: 1.5 * 2**k)
    assert np.all(np.abs(w - w_hat)[inside] <= np.abs(w)[inside] / 3 + 1e-7)
