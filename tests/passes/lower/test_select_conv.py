"""select-conv: WinogradConv on the 3x3 stride-1 layers the estimator picks, everything else untouched."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from hypothesis import given

from onnxcomp.api import optimize
from onnxcomp.cost import Hardware
from onnxcomp.errors import UsageError
from onnxcomp.verify import Tolerance, compare_arrays, run_model
from tests.support.random_graphs import Builder, models


def ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def assert_lossless(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict, runtime: bool = False) -> None:
    ra, rb = run_model(a, feeds), run_model(b, feeds, runtime=runtime)
    for name in ra:
        m = compare_arrays(name, ra[name], rb[name], Tolerance.lossless())
        assert m.ok, f"{name}: {m.why}"


def mixed_model(opset: int = 17) -> tuple[onnx.ModelProto, dict]:
    """Every kind of convolution: 3x3 stride 1 (with Relu, LeakyRelu, Clip, nothing; one read twice), 1x1,
    3x3 stride 2, depthwise, dilated, SAME_UPPER, dynamic weights; odd sizes, batch 2."""
    b = Builder(opset, seed=3)
    x = b.input("x", [2, 5, 13, 11])
    y = b.node("Relu", [b.conv(x, 5, 8, pads=[1, 1, 1, 1])], name="relu_a")  # fused
    y = b.conv(y, 8, 8, k=1)  # 1x1
    y = b.node("LeakyRelu", [b.conv(y, 8, 8, bias=False, pads=[0, 1, 2, 1])], alpha=0.2)  # fused
    y = b.conv(y, 8, 16, strides=[2, 2], pads=[1, 1, 1, 1])  # strided
    y = b.conv(y, 16, 16, group=16, pads=[1, 1, 1, 1])  # depthwise
    y = b.node("Clip", [b.conv(y, 16, 16, auto_pad="SAME_UPPER"), b.const(0.0), b.const(6.0)])  # fused Relu6
    y = b.conv(y, 16, 16, dilations=[2, 2], pads=[2, 2, 2, 2])  # dilated
    shared = b.conv(y, 16, 12, pads=[1, 1, 1, 1])  # read by Relu and a graph output: not fused
    y = b.node("Relu", [shared])
    w = b.input("w", [12, 12, 3, 3])
    y = b.node("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])  # dynamic weights
    b.output(y)
    b.output(shared)
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 5, 13, 11)).astype(np.float32),
        "w": (rng.standard_normal((12, 12, 3, 3)) * 0.1).astype(np.float32),
    }
    return b.model(), feeds


def _select(report):
    return next(p for p in report.passes if p.name == "select-conv")


def test_winograd_on_every_eligible_layer():
    model, feeds = mixed_model()
    out, report = optimize(model, "select-conv(algorithm=winograd)", input_shapes={"w": (12, 12, 3, 3)})
    res = _select(report)
    counts = ops(out)
    assert counts["WinogradConv"] == 4  # the 3x3 stride-1 dense layers with constant weights
    assert counts["Conv"] == 5  # 1x1, strided, depthwise, dilated, dynamic weights
    assert res.counters["winograd_conv"] == 4 and res.counters["activations_fused"] == 3
    assert counts["LeakyRelu"] == 0 and counts["Clip"] == 0 and counts["Relu"] == 1  # the shared one stays
    wc = {n.output[0]: _node_attrs(n) for n in out.graph.node if n.op_type == "WinogradConv"}
    fused = {(a.get("leaky_alpha"), a.get("clip_min"), a.get("clip_max")) for a in wc.values()}
    assert (0.0, float("-inf"), float("inf")) in fused  # Relu
    assert any(f[0] is not None and abs(f[0] - 0.2) < 1e-7 for f in fused)  # LeakyRelu(0.2)
    assert (1.0, 0.0, 6.0) in fused  # Clip(0, 6)
    assert (None, None, None) in fused  # the shared layer: no activation attributes
    pads = sorted(tuple(a["pads"]) for a in wc.values())
    assert (0, 1, 2, 1) in pads and (1, 1, 1, 1) in pads  # SAME_UPPER 3x3 stride 1: 1 on every side
    decisions = {rec.name: rec.decision for rec in res.layers}
    assert len(decisions) == 9  # every convolution is in the report
    reasons = " ".join(decisions.values())
    for why in ("strides [2, 2]", "group 16", "dilations [2, 2]", "kernel 1x1", "not constant"):
        assert why in reasons
    for rec in res.layers:
        assert "im2col" in rec.extra["predicted_us"]
        if rec.decision.startswith("winograd"):
            assert {"winograd2", "winograd4"} <= set(rec.extra["predicted_us"])
    onnx.checker.check_model(out)
    assert_lossless(model, out, feeds)  # the function bodies (plain onnxruntime)


def test_auto_follows_the_estimator_and_margin(tmp_path):
    model, _ = mixed_model()
    slow = tmp_path / "slow.json"
    from onnxcomp import hardware

    hardware.save(
        Hardware("slow-winograd", 100.0, 30.0, efficiency={"winograd2.gemm": 1e-3, "winograd4.gemm": 1e-3}), slow
    )
    out, report = optimize(model, f"select-conv(hardware={slow})", input_shapes={"w": (12, 12, 3, 3)})
    assert ops(out)["WinogradConv"] == 0
    assert all(r.decision.startswith("im2col") for r in _select(report).layers)
    # a big layer, where Winograd is predicted much faster: auto takes it, unless the margin asks for more
    b = Builder(17, seed=1)
    x = b.input("x", [1, 64, 56, 56])
    b.output(b.conv(x, 64, 64, pads=[1, 1, 1, 1]))
    big = b.model()
    out, report = optimize(big, "select-conv", hardware="zen4-1t")
    assert ops(out)["WinogradConv"] == 1
    rec = _select(report).layers[0]
    assert rec.extra["algorithm"] in ("winograd2", "winograd4")
    assert rec.extra["predicted_us"][rec.extra["algorithm"]] < 0.9 * rec.extra["predicted_us"]["im2col"]
    out, _ = optimize(big, "select-conv(margin=0.95)", hardware="zen4-1t")
    assert ops(out)["WinogradConv"] == 0
    out, _ = optimize(big, "select-conv(algorithm=im2col)", hardware="zen4-1t")
    assert ops(out)["WinogradConv"] == 0


def test_tiles_option_and_f63():
    b = Builder(17, seed=2)
    x = b.input("x", [1, 32, 24, 24])
    b.output(b.conv(x, 32, 32, pads=[1, 1, 1, 1]))
    model = b.model()
    for tiles, want in (("6", 6), ("2", 2)):
        out, report = optimize(model, f"select-conv(algorithm=winograd,tiles={tiles})", hardware="zen4-1t")
        node = next(n for n in out.graph.node if n.op_type == "WinogradConv")
        assert _node_attrs(node)["tile"] == want
        feeds = {"x": np.random.default_rng(0).standard_normal((1, 32, 24, 24)).astype(np.float32)}
        assert_lossless(model, out, feeds)
    _, report = optimize(model, "select-conv(algorithm=winograd)", hardware="zen4-1t")
    assert "winograd6" not in _select(report).layers[0].extra["predicted_us"]  # not considered by default


@pytest.mark.parametrize(
    "spec,word",
    [
        ("select-conv(tiles=3)", "tiles"),
        ("select-conv(margin=1.5)", "margin"),
        ("select-conv(hardware=nowhere)", "unknown hardware"),
        ("select-conv(algorithm=fast)", "algorithm"),
    ],
)
def test_bad_options(spec, word):
    model, _ = mixed_model()
    with pytest.raises(UsageError, match=word):
        optimize(model, spec, input_shapes={"w": (12, 12, 3, 3)})


def test_old_opset_is_upgraded_then_rewritten():
    model, feeds = mixed_model(opset=11)
    out, report = optimize(model, "select-conv(algorithm=winograd)", input_shapes={"w": (12, 12, 3, 3)})
    from onnxcomp.ops import UPGRADE_OPSET

    assert _select(report).counters.get("opset_upgraded_to") == UPGRADE_OPSET == 16
    assert ops(out)["WinogradConv"] == 4
    assert_lossless(model, out, feeds)


def test_codebook_conv_gets_winograd_tile_and_loses_it():
    b = Builder(17, seed=4)
    x = b.input("x", [1, 16, 20, 20])
    y = b.node("Relu", [b.conv(x, 16, 24, pads=[1, 1, 1, 1])])
    b.output(b.conv(y, 24, 8, k=1))
    model = b.model()
    out, report = optimize(model, "kmeans(bits=4),select-conv(algorithm=winograd)")
    cb = [n for n in out.graph.node if n.op_type == "CodebookConv"]
    tiles = {_node_attrs(n).get("winograd_tile", 0) for n in cb}
    assert tiles == {0, 2} or tiles == {0, 4}  # the 3x3 layer gets one, the 1x1 none
    assert _select(report).counters["codebook_conv_winograd"] == 1
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 16, 20, 20)).astype(np.float32)}
    assert_lossless(out, out, feeds)  # the function body ignores the attribute
    again, _ = optimize(out, "select-conv(algorithm=im2col)")
    assert all("winograd_tile" not in _node_attrs(n) for n in again.graph.node if n.op_type == "CodebookConv")


@given(case=models(opsets=(13, 17)))
def test_random_graphs_stay_within_the_lossless_tolerance(case):
    model, feeds = case
    out, _ = optimize(model, "select-conv(algorithm=winograd)")
    assert_lossless(model, out, feeds)
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]


def test_codebook_conv_with_huffman_coded_codes():
    """Codes decoded by a HuffmanDecode (the same bytes at every run) get winograd_tile too."""
    b = Builder(17, seed=6)
    x = b.input("x", [1, 32, 24, 24])
    b.output(b.node("Relu", [b.conv(x, 32, 48, pads=[1, 1, 1, 1])]), [1, 48, 24, 24])
    model = b.model()
    compressed, _ = optimize(model, "prune-weights(ratio=0.9),kmeans(bits=4,huffman=store)")
    assert any(n.op_type == "HuffmanDecode" for n in compressed.graph.node)
    out, report = optimize(compressed, "select-conv(algorithm=winograd)")
    conv = next(n for n in out.graph.node if n.op_type == "CodebookConv")
    assert _node_attrs(conv).get("winograd_tile") in (2, 4)
    assert _select(report).counters["codebook_conv_winograd"] == 1
