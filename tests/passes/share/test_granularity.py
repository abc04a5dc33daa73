"""kmeans group-size=auto (passes/share/_granularity.py): per-layer or per-channel codebooks from the channel
SQNR, and layers far below the model's median kept at 8 bits; the default without calibration data."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnxcomp.passes.share import channel_sqnr

from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.support.compressed import decoded_weights, make_model


def test_channel_sqnr_is_the_mean_relative_error_of_the_live_channels():
    w = np.array([[1.0, 0.0], [0.0, 10.0], [1e-9, 0.0]])
    q = np.array([[1.1, 0.0], [0.0, 10.0], [1.0, 1.0]])  # the dead third channel is left out
    assert channel_sqnr(w, q, 0) == pytest.approx(-10 * np.log10((0.01 + 0.0) / 2))
    assert channel_sqnr(w.T, q.T, 1) == pytest.approx(channel_sqnr(w, q, 0))
    assert channel_sqnr(w[:2], w[:2], 0) == float("inf")


def _channel_errors(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    return ((w - q) ** 2).sum(0) / (w**2).sum(0)  # MatMul: output channels are columns


def test_channels_of_very_different_scales_get_their_own_codebooks_by_default():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 32)) * 10.0 ** (np.arange(32) % 4)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 32])], opset=17)
    auto, report = optimize(model, "kmeans(bits=4)")  # no calibration data: auto
    (layer,) = report.passes[0].layers
    assert "per channel" in layer.decision and "dB" in layer.decision
    per_layer, report0 = optimize(model, "kmeans(bits=4,group-size=0)")
    q_auto, q_layer = next(iter(decoded_weights(auto).values())), next(iter(decoded_weights(per_layer).values()))
    # every channel within 4-bit Lloyd-Max distortion (~0.01); one shared codebook leaves the small ones ~1
    assert _channel_errors(w, q_auto).max() < 0.03 < _channel_errors(w, q_layer).max()
    # the per-channel codebooks are counted: 32 x 16 float16 entries (2 bytes) more than one codebook
    assert layer.extra["groups"] == 32
    assert layer.extra["bytes_packed"] - report0.passes[0].layers[0].extra["bytes_packed"] == 2 * 16 * 31


def test_channels_of_one_scale_share_one_codebook():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 32])], opset=17)
    _, report = optimize(model, "kmeans(bits=4)")
    assert "per layer" in report.passes[0].layers[0].decision


def _chain(bad_scale: float):
    """x -> fc0 -> fc1 -> fc2 -> fc3: Gaussian layers, and fc3 with 4 inputs per output (per-channel
    codebooks cannot pay for themselves) whose channels span ``bad_scale``."""
    rng = np.random.default_rng(2)
    inits, nodes = {}, []
    for i, (k, n) in enumerate([(64, 64), (64, 64), (64, 4), (4, 256)]):
        w = rng.standard_normal((k, n))
        if i == 3:
            w *= bad_scale ** (np.arange(n) % 2)
        inits[f"w{i}"] = w.astype(np.float32)
        nodes.append(helper.make_node("MatMul", [f"h{i}" if i else "x", f"w{i}"], [f"h{i + 1}"], name=f"fc{i}"))
    return make_model(nodes, inits, [("x", ["b", 64])], [("h4", ["b", 256])], opset=17)


def test_a_layer_far_below_the_median_channel_sqnr_keeps_8_bits_unless_its_bits_are_named():
    model = _chain(1e4)
    _, report = optimize(model, "kmeans(bits=4)")
    layers = {x.name: x for x in report.passes[0].layers}
    assert layers["fc3"].extra["bits"] == 8 and "kept at 8 bits" in layers["fc3"].decision
    assert all(layers[f"fc{i}"].extra["bits"] == 4 for i in range(2))
    _, named = optimize(model, "kmeans(bits=4,bits_per_layer=fc3:4)")
    assert {x.name: x.extra["bits"] for x in named.passes[0].layers}["fc3"] == 4
    # channels of one scale: nothing is far below, all stay at 4 bits
    _, even = optimize(_chain(1.0), "kmeans(bits=4)")
    assert {x.extra["bits"] for x in even.passes[0].layers} == {4}


def test_group_size_checks():
    rng = np.random.default_rng(3)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model(
        [node], {"w": rng.standard_normal((8, 8)).astype(np.float32)}, [("x", ["b", 8])], [("y", ["b", 8])]
    )
    with pytest.raises(UsageError, match="group-size"):
        optimize(model, "kmeans(bits=4,group-size=-1)")
    with pytest.raises(UsageError, match="group"):
        optimize(model, "kmeans(bits=4,group-size=sometimes)")


@pytest.mark.parametrize("compensate", ["true", "false"])
def test_auto_granularity_holds_with_calibration_data(compensate):
    """group-size=auto with --calib (the default): the compensated (and the plain calibrated) encoding keeps the
    codebooks per channel that the weights' channel SQNR chose, and the 8-bit protection (they were per layer)."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((64, 32)) * 10.0 ** (np.arange(32) % 4)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 32])], opset=17)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    spec = f"kmeans(bits=4,group-size=auto,compensate={compensate},sequential=false)"
    auto, report = optimize(model, spec, calib={"x": x})
    (layer,) = report.passes[0].layers
    assert layer.extra["groups"] == 32 and "per channel" in layer.decision
    if compensate == "true":
        assert "compensated" in layer.decision or "plain" in layer.decision
    q = next(iter(decoded_weights(auto).values()))
    assert _channel_errors(w, q).max() < 0.03
    # auto is also the default with calibration data; group-size=0 gives one codebook for the layer
    _, default = optimize(model, spec.replace(",group-size=auto", ""), calib={"x": x})
    assert default.passes[0].layers[0].extra["groups"] == 32
    _, per_layer = optimize(model, spec.replace("group-size=auto", "group-size=0"), calib={"x": x})
    assert per_layer.passes[0].layers[0].extra["groups"] == 1
    # the protection: fc3's channels span 1e4 with 4 inputs each, it keeps 8 bits also when calibrated
    xc = rng.standard_normal((512, 64)).astype(np.float32)
    _, chain = optimize(_chain(1e4), spec, calib={"x": xc})
    assert {x.name: x.extra["bits"] for x in chain.passes[0].layers}["fc3"] == 8
