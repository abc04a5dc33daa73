"""kmeans' scaled codebooks (passes/share/_encode.py ``scaled_encode``): one codebook for the layer at each output
channel's scale, a float32 scale per channel, the per-channel table computed in the model by one Mul."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnxcomp.passes.share import scaled_dtype, scaled_encode

from onnxcomp.api import optimize
from tests.support.compressed import assert_exact, decoded_weights, make_model, run, with_decoded_weights


def _fc(span: float, seed: int = 0):
    """A MatMul [64 inputs, 48 outputs] whose output channels' scales cycle over 1, span^(1/3), ..., span."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((64, 48)) * span ** ((np.arange(48) % 4) / 3)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    return make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 48])], opset=17), w


def _channel_errors(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    return ((w - q) ** 2).sum(0) / (w**2).sum(0)  # MatMul: output channels are columns


def test_8_bit_channels_of_very_different_scales_take_a_scaled_codebook():
    model, w = _fc(1e3)
    out, report = optimize(model, "kmeans(bits=8,group-size=scaled)")
    (row,) = report.passes[0].layers
    assert "each output channel's scale" in row.decision
    assert row.extra["channel_scales"] == 48 and row.extra["groups"] == 1
    (mul,) = [n for n in out.graph.node if n.op_type == "Mul"]
    (op,) = [n for n in out.graph.node if n.op_type == "CodebookMatMul"]
    assert op.input[1] == mul.output[0]
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    casts = {n.output[0]: n.input[0] for n in out.graph.node if n.op_type == "Cast"}
    stored = [casts[i] for i in mul.input]  # float16 values and scales, each Cast to float32 for the Mul
    # stored: the 256 values and 48 scales (float16), the codes and the bias; no [48, 256] table
    assert sorted(inits[i].shape for i in stored) == [(1, 256), (48, 1)]
    assert {inits[i].dtype for i in stored} == {np.dtype(np.float16)}
    assert row.extra["bytes_stored"] == sum(inits[i].nbytes for i in [*stored, *op.input[2:]])
    assert row.extra["bytes_stored"] == 2 * 256 + 2 * 48 + 64 * 48 + 4 * 48
    q = next(iter(decoded_weights(out).values()))
    per_layer, _ = optimize(model, "kmeans(bits=8,group-size=0)")
    q0 = next(iter(decoded_weights(per_layer).values()))
    # every channel at 8-bit distortion; one codebook for the layer leaves the 1000x smaller ones coarse
    assert _channel_errors(w, q).max() < 2e-4 < 20 * 2e-4 < _channel_errors(w, q0).max()
    # the model computes what the report decodes: bit-equal to the decoded weights, and with onnxruntime's
    # optimizations (the Mul folded at load) equal within float rounding
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    assert_exact(with_decoded_weights(model, out), out, {"x": x})
    np.testing.assert_allclose(run(out, {"x": x}, optimize=True)[0], run(out, {"x": x})[0], rtol=1e-5, atol=1e-5)
    # a re-loaded compressed model keeps the Mul (an expanding op): it does not grow by the table
    again, _ = optimize(out, "eliminate")
    assert [n.op_type for n in again.graph.node].count("Mul") == 1


def test_auto_does_not_take_scaled_codebooks():
    """group-size=auto (the default) chooses per layer / per channel only: on the detectors scaled 8-bit codebooks
    raised the channel SQNR but not the task metrics (benchmarks/QUALITY.md)."""
    model, _ = _fc(1e3)
    out, report = optimize(model, "kmeans(bits=8)")
    assert "scale" not in report.passes[0].layers[0].decision
    assert not [n for n in out.graph.node if n.op_type == "Mul"]


@pytest.mark.parametrize("out_axis", [0, 1])
def test_channels_that_are_multiples_of_one_codebook_are_exact(out_axis):
    """Rows that are permutations of one set of 16 values times a scale each: one 4-bit codebook at the channel
    scales reconstructs them exactly (scales the least-squares fit of the codes); one codebook for the layer
    cannot (48 x 16 distinct values)."""
    rng = np.random.default_rng(2)
    values = rng.standard_normal(16)
    rows = np.stack([rng.permutation(np.tile(values, 4)) for _ in range(48)]) * rng.uniform(0.01, 10, (48, 1))
    w2 = (rows if out_axis == 0 else rows.T).astype(np.float32)
    e = scaled_encode(w2, 4, out_axis)
    assert e.table.shape == (1, 16) and e.scales is not None and e.scales.shape == (48,)
    np.testing.assert_allclose(e.decoded(out_axis), w2, rtol=1e-5, atol=1e-6)
    # the scales are the least-squares scales of the codes: moving one raises its channel's error
    noisy = w2 + 0.01 * rng.standard_normal(w2.shape).astype(np.float32)
    n = scaled_encode(noisy, 4, out_axis)
    err = ((n.decoded(out_axis) - noisy) ** 2).sum()
    for j in (0, 17):
        for f in (0.99, 1.01):
            moved = n.scales.copy()
            moved[j] *= f
            n2 = type(n)(n.table, n.codes, n.bits, n.group_size, scales=moved)
            assert ((n2.decoded(out_axis) - noisy) ** 2).sum() > err


def test_calibrated_8_bit_scaled_codebook_is_compensated_and_exact_in_the_model():
    model, w = _fc(1e3, seed=3)
    x = np.random.default_rng(4).standard_normal((256, 64)).astype(np.float32)
    out, report = optimize(model, "kmeans(bits=8,group-size=scaled,sequential=false)", calib={"x": x})
    (row,) = report.passes[0].layers
    assert "each output channel's scale" in row.decision and "compensated" in row.decision
    q = next(iter(decoded_weights(out).values()))
    assert _channel_errors(w, q).max() < 1e-3
    xe = np.random.default_rng(5).standard_normal((7, 64)).astype(np.float32)
    assert_exact(with_decoded_weights(model, out), out, {"x": xe})


def test_scaled_codebooks_store_float16_unless_a_scale_is_not_a_normal_float16():
    book = np.linspace(-1, 1, 16)
    assert scaled_dtype(book, np.array([0.5, 2.0, 0.0]), "auto") == "float16"  # an all-zero channel's 0 is exact
    assert scaled_dtype(book, np.array([0.5, 1e-6]), "auto") == "float32"  # subnormal in float16
    assert scaled_dtype(book, np.array([0.5, 1e-6]), "float16") == "float16"  # as asked
    assert scaled_dtype(book * 1e5, np.array([0.5]), "auto") == "float32"  # past float16's range


def _correlated_fc(seed: int = 0):
    """A MatMul [64 inputs, 48 outputs] with channel scales spanning 1000x, and inputs of rank ~6 (plus noise and
    an offset), as a conv's im2col columns are: GPTQ's codes then stray far from the normalized weights."""
    rng = np.random.default_rng(seed)
    model, w = _fc(1e3, seed)
    mix = rng.standard_normal((6, 64))

    def inputs(rows: int, s: int) -> np.ndarray:
        r = np.random.default_rng(s)
        return (r.standard_normal((rows, 6)) @ mix + 0.1 * r.standard_normal((rows, 64)) + 1.0).astype(np.float32)

    return model, w, inputs


@pytest.mark.parametrize(
    "spec",
    [
        "kmeans(bits=4,group-size=scaled,sequential=false)",
        "kmeans(bits=4,group-size=scaled,sequential=false,refine=false)",
        "kmeans(bits=4,group-size=scaled,compensate=false,sequential=false)",
    ],
)
def test_calibrated_scaled_codebook_fits_each_channel_scale_on_the_layer_output(spec):
    """The calibrated scales are the least-squares scales of the layer output, s_j = q_j^T H w_j / q_j^T H q_j:
    no channel's output on the calibration inputs gets closer to the original's by rescaling it. Fitted on the
    weights instead, the compensated codes (which stray from the weights by design) left channels 5% off and the
    layout detector collapsed (box agreement 0.01; 0.90 with the output fit: benchmarks/QUALITY.md)."""
    model, w, inputs = _correlated_fc()
    x = inputs(256, 1)  # <= calib-samples: the scales see exactly these rows
    out, report = optimize(model, spec, calib={"x": x})
    assert "each output channel's scale" in report.passes[0].layers[0].decision
    q = next(iter(decoded_weights(out).values())).astype(np.float64)
    yq, yw = x.astype(np.float64) @ q, x.astype(np.float64) @ w
    best = (yq * yw).sum(0) / (yq * yq).sum(0)  # the factor that would fit channel j's output best
    # float16 scales and codebook: within their rounding (2^-11 relative) and the solve's
    np.testing.assert_allclose(best, 1.0, atol=2e-3)


def test_calibrated_scaled_codebook_compensated_beats_plain_on_held_out_inputs():
    model, w, inputs = _correlated_fc(seed=5)
    x, xe = inputs(256, 1), inputs(200, 2)
    ref = xe @ w

    def error(spec: str) -> float:
        out, _ = optimize(model, spec, calib={"x": x})
        return float(np.linalg.norm(run(out, {"x": xe})[0] - ref) / np.linalg.norm(ref))

    compensated = error("kmeans(bits=4,group-size=scaled,sequential=false)")
    plain = error("kmeans(bits=4,group-size=scaled,compensate=false,sequential=false)")
    assert compensated < 0.5 * plain and compensated < 0.03


def test_sequential_scaled_codebook_fits_the_original_output_on_the_quantized_input():
    """Plain sequential mode: the second layer's scales are fitted with H_cc = X_c^T X_c and H_co = X_c^T X_o
    (its input in the quantized graph, X_c, against the original's, X_o): the model's output on the calibration
    inputs cannot get closer to the original's by rescaling a channel."""
    _, w1, inputs = _correlated_fc(seed=7)
    rng = np.random.default_rng(8)
    w2 = (rng.standard_normal((48, 32)) * 1e2 ** ((np.arange(32) % 4) / 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    model = make_model(nodes, {"w": w1, "w2": w2}, [("x", ["b", 64])], [("y", ["b", 32])], opset=17)
    x = inputs(256, 1)
    out, report = optimize(model, "kmeans(bits=4,group-size=scaled,compensate=false)", calib={"x": x})
    assert "lsq codebook sequential" in report.passes[0].layers[1].decision
    yq, yo = (run(m, {"x": x})[0].astype(np.float64) for m in (out, model))
    np.testing.assert_allclose((yq * yo).sum(0) / (yq * yq).sum(0), 1.0, atol=2e-3)
