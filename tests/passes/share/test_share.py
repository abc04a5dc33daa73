"""The weight-sharing family as a whole (what every share pass does): exactness against the decoded weights,
sizes on disk, layer selection, Gemm/Conv handling, opset upgrade, inlining, the per-layer report. Each pass's
own behaviour is in test_<pass>.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import builders
from onnxcomp import io, ops
from onnxcomp.api import optimize
from tests.support.compressed import (
    assert_exact,
    custom_nodes,
    decoded_weights,
    make_model,
    run,
    with_decoded_weights,
)
from tests.support.run import assert_same_outputs


def _feeds(model: onnx.ModelProto, batch: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    return builders.random_inputs(model, batch=batch, seed=seed)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


MODELS = {
    "mlp": lambda: builders.mlp(),  # MatMul+Add (absorbed bias) and Gemm transB=1
    "mobilenet": lambda: builders.mobilenet(image_size=(17, 15)),  # depthwise (group=C), 1x1 with bias, Gemm
    "transformer": lambda: builders.transformer_block(seq_len=5),  # 3-D activations into MatMul
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    "spec",
    [
        "kmeans(bits=3)",
        "kmeans(bits=5,group_size=4)",
        "ternary",
        "binary",
        "pow2",
        "prune-weights(ratio=0.9),kmeans(bits=4,sparse=always)",
    ],
)
def test_outputs_equal_the_model_with_decoded_weights(name, spec):
    model = MODELS[name]()
    out, report = optimize(model, spec)
    onnx.checker.check_model(out)
    assert custom_nodes(out) and len(out.functions) >= 1
    feeds = _feeds(model)
    # bit-exact against the numpy-decoded reference (same ops: MatMul + Add / Conv)
    assert_exact(ops.decode_model(out), out, feeds)
    # the original graph (Gemm, MatMul, Conv) with its weights replaced by the decoded ones
    ref = with_decoded_weights(io.normalize(model), out)
    assert_same_outputs(ref, out, feeds, rtol=1e-5, atol=1e-6)
    assert not report.passes[-1].skips or all("shared" not in s.reason for s in report.passes[-1].skips)


def test_exactly_equal_where_the_original_ops_are_kept():
    # Conv layers and MatMul(+Add) layers run the very same standard op after inlining: bit-exact
    model = builders.mobilenet(image_size=(17, 15))
    out, _ = optimize(model, "kmeans(bits=4)")
    ref = with_decoded_weights(io.normalize(model), out)
    convs = {n.output[0] for n in io.normalize(model).graph.node if n.op_type == "Conv"}
    feeds = _feeds(model)
    names = [n for n in convs if n in decoded_weights(out)]
    assert names
    a = dict(zip(names, run(_with_outputs(ref, names), feeds)[-len(names) :], strict=True))
    b = dict(zip(names, run(_with_outputs(out, names), feeds)[-len(names) :], strict=True))
    for n in names:
        np.testing.assert_array_equal(a[n], b[n])


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return m


def test_codes_are_packed_on_disk_about_one_eighth_at_four_bits():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 768)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 512])], [("y", ["b", 768])], opset=17)
    out, report = optimize(model, "kmeans(bits=4)")
    ratio = len(io.serialize(model)) / len(io.serialize(out))
    assert 7.5 < ratio < 8.0  # codes 1/8 of float32 + codebook, bias and the function body
    (layer,) = report.passes[0].layers
    assert layer.extra["bytes_packed"] == 512 * 768 // 2 + 16 * 2 + 768 * 4  # a float16 codebook of 16
    assert 0 < layer.error < 0.12  # 4-bit k-means of a Gaussian: ~0.1 relative Frobenius error


def test_gemm_alpha_beta_transb_and_bias_shapes():
    rng = np.random.default_rng(2)
    b = rng.standard_normal((37, 60)).astype(np.float32)  # transB: [N, K]
    c = rng.standard_normal((1, 37)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="g", alpha=0.5, beta=2.0, transB=1)
    model = make_model([node], {"b": b, "c": c}, [("x", ["n", 60])], [("y", ["n", 37])], opset=17)
    out, _ = optimize(model, "kmeans(bits=8)")
    (mm,) = custom_nodes(out)
    w = _weights(out)
    np.testing.assert_array_equal(w[mm.input[3]], 2.0 * c[0])  # beta * C is the bias
    (w_hat,) = decoded_weights(out).values()
    np.testing.assert_allclose(w_hat, 0.5 * b.T, atol=0.01)  # alpha folded into the codebook
    x = rng.standard_normal((3, 60)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], 0.5 * x @ b.T + 2 * c, rtol=0.02, atol=0.05)


def test_gemm_transa_and_matrix_bias_are_skipped_with_reasons():
    rng = np.random.default_rng(3)
    n1 = helper.make_node("Gemm", ["x", "b"], ["h"], name="ta", transA=1)
    n2 = helper.make_node("Gemm", ["h", "b2", "c2"], ["y"], name="mat_c")
    model = make_model(
        [n1, n2],
        {
            "b": rng.standard_normal((4, 5)).astype(np.float32),
            "b2": rng.standard_normal((5, 3)).astype(np.float32),
            "c2": rng.standard_normal((6, 3)).astype(np.float32),
        },
        [("x", [4, 6])],
        [("y", [6, 3])],
        opset=17,
    )
    out, report = optimize(model, "kmeans(bits=2)")
    reasons = {s.node: s.reason for s in report.passes[0].skips}
    assert "transA" in reasons["ta"] and "per-column" in reasons["mat_c"]
    assert not custom_nodes(out)


def test_layer_selection_options():
    model = builders.mlp()
    nodes = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    _, report = optimize(model, f"kmeans(bits=4,protect={nodes[1]},protect_first_last=true)")
    done = {layer.name for layer in report.passes[0].layers}
    assert done == set(nodes[2:-1])
    reasons = {s.node: s.reason for s in report.passes[0].skips}
    assert "protected" in reasons[nodes[1]] and "first or last" in reasons[nodes[0]]
    _, report = optimize(model, "kmeans(bits=4,min_params=2000)")
    small = {s.node for s in report.passes[0].skips if "min-params" in s.reason}
    assert small and small.isdisjoint({layer.name for layer in report.passes[0].layers})
    _, report = optimize(model, f"kmeans(bits=4,bits_per_layer={nodes[0]}:2)")
    bits = {layer.name: layer.extra["bits"] for layer in report.passes[0].layers}
    assert bits[nodes[0]] == 2 and bits[nodes[1]] == 4


def test_opset13_model_is_upgraded():
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
        helper.make_node("ReduceMean", ["h"], ["y"], name="mean", axes=[1], keepdims=1),
    ]
    model = make_model(
        nodes,
        {"w": rng.standard_normal((8, 16)).astype(np.float32)},
        [("x", ["b", 8])],
        [("y", ["b", 1])],
        opset=13,
        ir_version=7,
    )
    out, report = optimize(model, "kmeans(bits=4)")
    assert {o.domain: o.version for o in out.opset_import}[""] >= ops.MIN_OPSET
    assert report.passes[0].counters["opset_upgraded_to"] == ops.UPGRADE_OPSET
    onnx.checker.check_model(out)
    assert_exact(with_decoded_weights(model, out), out, {"x": rng.standard_normal((3, 8)).astype(np.float32)})


@pytest.mark.parametrize("how", ["option", "pass"])
@pytest.mark.parametrize("name", ["mobilenet", "mlp"])
def test_inline_writes_only_standard_ops(how, name):
    model = builders.mobilenet(image_size=(9, 9)) if name == "mobilenet" else builders.mlp(256, (512, 256))
    ref, _ = optimize(model, "prune-weights(ratio=0.7),kmeans(bits=4),huffman")
    spec = (
        "prune-weights(ratio=0.7),kmeans(bits=4,inline=true,huffman=store)"
        if how == "option"
        else "prune-weights(ratio=0.7),kmeans(bits=4),huffman,inline-functions"
    )
    out, _ = optimize(model, spec)
    onnx.checker.check_model(out)
    assert not out.functions
    assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
    assert ops.DOMAIN not in {o.domain for o in out.opset_import}
    assert_exact(ref, out, _feeds(model))
    if name == "mlp":  # the weights stay compressed on disk (the decode nodes cost ~4 kB per layer)
        assert len(io.serialize(out)) < 0.15 * len(io.serialize(model))


def test_report_has_the_per_layer_columns():
    _, report = optimize(builders.mlp(), "kmeans(bits=3)")
    p = report.passes[0]
    for layer in p.layers:
        for key in ("bits", "codebook_size", "sparsity", "bytes_before", "bytes_packed", "bytes_huffman"):
            assert key in layer.extra
        assert layer.error is not None and layer.error > 0
    assert p.counters["ratio_packed"] > 5
    assert report.bytes_after < report.bytes_before


def test_conv_auto_pad_same_becomes_explicit_pads():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((6, 3, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER", strides=[2, 1])
    model = make_model([node], {"w": w}, [("x", [1, 3, 7, 6])], [("y", [1, 6, 4, 6])], opset=17)
    out, _ = optimize(model, "kmeans(bits=6)")
    (conv,) = custom_nodes(out)
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs["pads"] == [1, 0, 1, 1] and attrs["strides"] == [2, 1]
    x = {"x": rng.standard_normal((1, 3, 7, 6)).astype(np.float32)}
    assert_exact(with_decoded_weights(model, out), out, x)
    dynamic = make_model([node], {"w": w}, [("x", [1, 3, "h", "w"])], [("y", None)], opset=17)
    _, report = optimize(dynamic, "kmeans(bits=6)")
    assert "auto_pad" in report.passes[0].skips[0].reason


def test_unnamed_node_gets_a_name_derived_from_its_output():
    rng = np.random.default_rng(9)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        {"w": rng.standard_normal((40, 24)).astype(np.float32)},
        [("x", [2, 40])],
        [("logits", [2, 24])],
    )
    out, _ = optimize(m, "kmeans(bits=2)")
    (node,) = custom_nodes(out)
    assert node.name.startswith("logits_"), node.name


@pytest.mark.parametrize("spec", ["pow2(bits=8)", "ternary", "binary"])
def test_layers_the_encoding_would_enlarge_are_skipped(spec):
    # a [1, 6] weight: 24 bytes of float32; a 256-entry pow2 codebook, or per-channel scales, cost more
    rng = np.random.default_rng(12)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="tiny")],
        {"w": rng.standard_normal((1, 6)).astype(np.float32)},
        [("x", [2, 1])],
        [("y", [2, 6])],
    )
    out, report = optimize(m, spec)
    assert not custom_nodes(out)
    assert [s.node for s in report.passes[0].skips] == ["tiny"]
    assert "smaller" in report.passes[0].skips[0].reason
