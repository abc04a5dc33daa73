"""kmeans group-size=auto (passes/share/_granularity.py): per-layer or per-channel codebooks from the channel
SQNR, and layers far below the model's median kept at 8 bits; the default without calibration data."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
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
    # the per-channel codebooks are counted: 32 x 16 float16 entries, or 32 x (16 int8 entries + a float16 scale)
    # where auto stores int8, against one codebook of 16 float16 entries
    assert layer.extra["groups"] == 32
    int8 = any(t.data_type == TensorProto.INT8 for t in auto.graph.initializer)
    extra = layer.extra["bytes_packed"] - report0.passes[0].layers[0].extra["bytes_packed"]
    assert extra == (32 * 18 if int8 else 32 * 32) - 2 * 16


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


def _packed_bytes(report) -> int:
    return sum(x.extra["bytes_packed"] for x in report.passes[0].layers)


def test_per_channel_codebooks_never_store_more_than_one_8_bit_codebook():
    """kmeans(bits=6) is never bigger than kmeans(bits=8): 64-entry per-channel codebooks on a 256-input layer
    store 10 bits/weight, one 8-bit codebook for the layer 8.06, so the layer takes the 8-bit codebook; at 4
    bits the per-channel codebooks (5 bits/weight) stay."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((256, 64)) * 10.0 ** (np.arange(64) % 4)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 256])], [("y", ["b", 64])], opset=17)
    reports = {b: optimize(model, f"kmeans(bits={b})")[1] for b in (4, 6, 8)}
    assert _packed_bytes(reports[6]) <= _packed_bytes(reports[8])
    # block codebooks (one more candidate) are held to the same cap
    _, blocks = optimize(model, "kmeans(bits=6,block-size=64)")
    assert _packed_bytes(blocks) <= _packed_bytes(reports[8])
    (six,) = reports[6].passes[0].layers
    assert six.extra["bits"] == 8 and "per-channel codebooks would" in six.decision
    (four,) = reports[4].passes[0].layers
    assert four.extra["groups"] == 64 and "per channel" in four.decision
    assert _packed_bytes(reports[4]) < _packed_bytes(reports[6])


def _stem():
    """x -> dw (a depthwise 3x3 Conv, 16 channels whose scales span 500x) -> pw (1x1 Conv, 16 -> 128) -> pw2
    (128 -> 1024): a small stem layer in front of bigger ones whose channel scales span 100x, as in the
    MobileNet-style detectors after BatchNorm folding."""
    rng = np.random.default_rng(6)
    dw = rng.standard_normal((16, 1, 3, 3)) * np.geomspace(1.0, 1 / 500, 16)[:, None, None, None]
    pw = rng.standard_normal((128, 16, 1, 1)) * np.geomspace(1.0, 1 / 100, 128)[:, None, None, None]
    pw2 = rng.standard_normal((1024, 128, 1, 1)) * np.geomspace(1.0, 1 / 100, 1024)[:, None, None, None]
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["h"], name="dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "pw"], ["h2"], name="pw"),
        helper.make_node("Conv", ["h2", "pw2"], ["y"], name="pw2"),
    ]
    inits = {"dw": dw.astype(np.float32), "pw": pw.astype(np.float32), "pw2": pw2.astype(np.float32)}
    return make_model(nodes, inits, [("x", [1, 16, 8, 8])], [("y", [1, 1024, 8, 8])], opset=17), inits["dw"]


def test_a_small_layer_whose_channels_span_500x_is_kept_exact_at_6_bits():
    """layout_det's stem depthwise conv (144 weights, channel scales over 500x): one 6-bit codebook leaves its
    small channels 1-8% relative error (channel SQNR ~21 dB, not 6 dB below the model's median, so no
    protection) and the detector's box agreement fell to 0.37; per-channel codebooks of 9 weights cannot pay
    for themselves, and the layer costs the model nothing kept float32 (a 256-entry codebook is bigger than
    its 576 bytes)."""
    model, dw = _stem()
    out, report = optimize(model, "kmeans(bits=6)")
    got = [i for i in out.graph.initializer if i.name == "dw"]
    assert got, "dw was compressed"
    np.testing.assert_array_equal(numpy_helper.to_array(got[0]), dw)
    skips = {s.node: s.reason for s in report.passes[0].skips}
    assert "left float32" in skips["dw"] and "small layer" in skips["dw"]
    layers = {x.name: x for x in report.passes[0].layers}
    assert layers["pw2"].extra["bits"] == 6  # the raises cost at most 1% of the model's stored bits
    # bits set by name are kept
    _, named = optimize(model, "kmeans(bits=6,bits_per_layer=dw:6)")
    assert {x.name: x.extra["bits"] for x in named.passes[0].layers}["dw"] == 6
