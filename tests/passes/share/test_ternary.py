"""ternary: value sets, lsq against twn, ternary convolutions as CodebookConv."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from models import builders
from onnxcomp.api import optimize
from tests.support.compressed import (
    custom_nodes,
    decoded_weights,
)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_ternary_value_sets_and_lsq_beats_twn():
    model = builders.mlp(in_features=48, hidden=(64,))
    errors = {}
    for method in ("twn", "lsq"):
        out, report = optimize(model, f"ternary(method={method})")
        errors[method] = sum(layer.error for layer in report.passes[0].layers)
        for w_hat in decoded_weights(out).values():
            for col in w_hat.T:  # per output channel: {-a_n, 0, +a_p}
                values = np.unique(col)
                assert (len(values) <= 3 and 0.0 in values) or len(values) <= 2
                if method == "twn":
                    nz = np.abs(values[values != 0])
                    assert np.allclose(nz, nz[0])
    assert errors["lsq"] <= errors["twn"] + 1e-9
    assert {n.op_type for n in custom_nodes(out)} == {"TernaryMatMul"}


def test_ternary_conv_uses_codebook_conv():
    out, _ = optimize(builders.mobilenet(image_size=(9, 9)), "ternary(per_channel=false)")
    assert {n.op_type for n in custom_nodes(out)} == {"CodebookConv", "TernaryMatMul"}
    for node in custom_nodes(out):
        if node.op_type == "CodebookConv":
            cb = _weights(out)[node.input[1]]
            assert cb.shape == (1, 4) and cb[0, 0] == 0 and cb[0, 3] == 0 and cb[0, 1] >= 0 >= cb[0, 2]
