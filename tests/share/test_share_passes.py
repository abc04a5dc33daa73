"""The weight-sharing passes end to end: exactness against the decoded weights, value sets, error bounds,
sizes on disk, layer selection, Gemm/Conv handling, opset upgrade, inlining, Huffman storage."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import builders
from onnxcomp import io, ops
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from tests.share.share_helpers import (
    assert_exact,
    custom_nodes,
    decoded_weights,
    make_model,
    run,
    with_decoded_weights,
)
from tests.util import assert_same_outputs


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
    assert layer.extra["bytes_packed"] == 512 * 768 // 2 + 16 * 4 + 768 * 4
    assert 0 < layer.error < 0.12  # 4-bit k-means of a Gaussian: ~0.1 relative Frobenius error


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
def test_kmeans_error_falls_with_bits(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 64])], [("y", ["b", 96])], opset=17)
    out, report = optimize(model, f"kmeans(bits={bits})")
    (layer,) = report.passes[0].layers
    # Lloyd-Max quantizer of a Gaussian: distortion ~ 2.7 * 4**-bits (relative MSE), sqrt for Frobenius
    assert layer.error < 1.3 * np.sqrt(2.7 * 4.0**-bits) + 1e-3
    w_hat = next(iter(decoded_weights(out).values()))
    assert len(np.unique(w_hat)) <= 2**bits


def test_pruned_zeros_stay_exactly_zero_and_sparse_layout():
    model = builders.mlp(in_features=64, hidden=(128, 96))
    pruned, _ = optimize(model, "prune-weights(ratio=0.8)")
    out, report = optimize(pruned, "kmeans(bits=4)")
    dec = decoded_weights(out)
    orig = {n.output[0]: n for n in io.normalize(pruned).graph.node}
    w = _weights(pruned)
    for name, w_hat in dec.items():
        node = orig[name]
        if node.op_type == "Add":
            node = next(m for m in io.normalize(pruned).graph.node if m.output[0] in node.input)
        wo = w[node.input[1]]
        if node.op_type == "Gemm":
            wo = wo.T
        np.testing.assert_array_equal(w_hat == 0, wo == 0)
    formats = {layer.name: layer.extra["format"] for layer in report.passes[0].layers}
    assert any(f.startswith("sparse") for f in formats.values()), formats
    assert {n.op_type for n in custom_nodes(out)} >= {"SparseCodebookMatMul"}


def test_sparse_option():
    model = builders.mlp(in_features=64, hidden=(128,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.5)")
    never, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    always, _ = optimize(pruned, "kmeans(bits=4,sparse=always)")
    assert "SparseCodebookMatMul" not in {n.op_type for n in custom_nodes(never)}
    assert "SparseCodebookMatMul" in {n.op_type for n in custom_nodes(always)}
    auto, _ = optimize(pruned, "kmeans(bits=4)")  # 50% sparse: the EIE layout is larger at 4 bits
    assert "SparseCodebookMatMul" not in {n.op_type for n in custom_nodes(auto)}
    feeds = _feeds(model)
    assert_same_outputs(never, always, feeds, rtol=1e-5, atol=1e-6)


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


def test_binary_is_per_channel_sign_times_mean_abs():
    w = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    model = make_model([node], {"w": w}, [("x", ["b", 20])], [("y", ["b", 6])], opset=17)
    out, _ = optimize(model, "binary")
    (w_hat,) = decoded_weights(out).values()
    np.testing.assert_allclose(w_hat, np.sign(w) * np.abs(w).mean(0, keepdims=True), rtol=1e-6)


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
    np.testing.assert_allclose(k, np.round(k), atol=1e-5)
    assert k.min() >= kmin - 1e-6 and k.max() <= kmax + 1e-6
    if scale == "none":
        assert s == 1.0
    inside = (np.abs(w) >= s * 2.0**kmin) & (np.abs(w) <= s * 2.0**kmax)
    # the nearest power of two is never more than 1/3 off (worst case: 1.5 * 2**k)
    assert np.all(np.abs(w - w_hat)[inside] <= np.abs(w)[inside] / 3 + 1e-7)


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


def test_huffman_pass_is_lossless_and_smaller():
    model = builders.mlp(in_features=64, hidden=(256, 128))
    packed, _ = optimize(model, "prune-weights(ratio=0.8),kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman")
    assert report.passes[0].counters["tensors_coded"] >= 2
    assert "HuffmanDecode" in {n.op_type for n in custom_nodes(coded)}
    assert len(io.serialize(coded)) < 0.7 * len(io.serialize(packed))
    assert_exact(packed, coded, _feeds(model))
    # the reported Huffman size is what the stored form saves
    layers = report.passes[0].layers
    assert (
        sum(r.extra["bytes_packed"] - r.extra["bytes_huffman"] for r in layers)
        == report.passes[0].counters["bytes_saved"]
    )


def test_report_has_the_per_layer_columns():
    _, report = optimize(builders.mlp(), "kmeans(bits=3)")
    p = report.passes[0]
    for layer in p.layers:
        for key in ("bits", "codebook_size", "sparsity", "bytes_before", "bytes_packed", "bytes_huffman"):
            assert key in layer.extra
        assert layer.error is not None and layer.error > 0
    assert p.counters["ratio_packed"] > 5
    assert report.bytes_after < report.bytes_before


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


def test_kmeans_weighted_and_refined_codebooks_fit_the_outputs_better():
    model = builders.mlp(in_features=32, hidden=(64,))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 32)).astype(np.float32) * np.linspace(0.1, 10, 32).astype(np.float32)
    calib = {"input": x}
    ref = run(model, calib)[0]

    def err(spec, c=calib):
        out, _ = optimize(model, spec, calib=c)
        return float(np.linalg.norm(run(out, calib)[0] - ref))

    plain = err("kmeans(bits=2)", None)
    weighted = err("kmeans(bits=2,refine=false)")
    refined = err("kmeans(bits=2)")
    assert weighted < plain and refined < weighted


def test_bits_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError):
        optimize(builders.mlp(), "kmeans(bits=9)")
    with pytest.raises(UsageError):
        optimize(builders.mlp(), "pow2(bits=1)")


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


def test_prune_ratio_per_layer():
    model = builders.mlp(in_features=32, hidden=(64, 48))
    _, report = optimize(model, "prune-weights(ratio=0.25)")
    names = [row.name for row in report.passes[0].layers]
    assert len(names) >= 2
    _, report = optimize(model, f"prune-weights(ratio=0.25,ratio_per_layer={names[0]}:0.75)")
    sparsity = {row.name: row.extra["sparsity"] for row in report.passes[0].layers}
    assert sparsity[names[0]] == pytest.approx(0.75, abs=1e-3)
    assert all(sparsity[n] == pytest.approx(0.25, abs=1e-3) for n in names[1:])


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


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_huffman_codes_zero_runs_of_pruned_layers(kind):
    # a 95%-pruned layer: its packed codes are coded as (zero run, code) symbols, which cost less than
    # Huffman over the packed bytes (a byte symbol cannot cost less than one bit)
    from onnxcomp.passes.share import huffman as huffman_pass

    from onnxcomp.ops import huffman as _huffman

    model = builders.mlp(in_features=256, hidden=(512,)) if kind == "matmul" else builders.vgg(width=0.25)
    pruned, _ = optimize(model, "prune-weights(ratio=0.95)")
    packed, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman")
    op_types = [n.op_type for n in custom_nodes(coded)]
    assert "RunLengthDecode" in op_types
    assert_exact(packed, coded, _feeds(model))
    np.testing.assert_array_equal(
        np.concatenate([t.ravel() for t in decoded_weights(coded).values()]),
        np.concatenate([t.ravel() for t in decoded_weights(packed).values()]),
    )
    # the chosen form is smaller than Huffman over the packed bytes, by what huffman_form says
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in packed.graph.initializer}
    node = max(
        (n for n in custom_nodes(packed) if ops.get_op(n.op_type).code_input),
        key=lambda n: inits[n.input[2]].size,
    )
    codes = inits[node.input[2]]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    layout = ops.get_op(node.op_type).code_input[1](attrs)
    size, runs = huffman_pass.huffman_form(codes, layout)
    assert runs is not None
    assert size < _huffman.coded_size(codes)
    assert report.passes[0].counters["bytes_saved"] > 0


def test_huffman_store_pays_for_the_decoder_body():
    # one small pruned layer: Huffman saves a few hundred bytes of codes, less than the ~3.5 kB function body
    # of HuffmanDecode the model would have to carry, so the store leaves it packed and says why
    model = builders.mlp(in_features=48, hidden=(64,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.9)")
    packed, _ = optimize(pruned, "kmeans(bits=4,sparse=never)")
    coded, report = optimize(packed, "huffman(min_gain=1)")
    assert "HuffmanDecode" not in {n.op_type for n in custom_nodes(coded)}
    assert not any(f.name == "HuffmanDecode" for f in coded.functions)
    assert report.passes[0].skips and "function body" in report.passes[0].skips[0].reason
    assert len(io.serialize(coded)) <= len(io.serialize(packed))
    # huffman=store decides the same way, and still reports the per-layer Huffman size
    stored, rep = optimize(pruned, "kmeans(bits=4,sparse=never,huffman=store)")
    assert "HuffmanDecode" not in {n.op_type for n in custom_nodes(stored)}
    rows = rep.passes[0].layers
    assert any(r.extra["bytes_huffman"] < r.extra["bytes_packed"] for r in rows)
    assert all(r.extra["bytes_stored"] == r.extra["bytes_packed"] for r in rows)
    # a large layer pays for it: coded, and its stored bytes are what the file saves
    big = builders.mlp(in_features=512, hidden=(512,))
    out, rep = optimize(big, "prune-weights(ratio=0.9),kmeans(bits=4,sparse=never,huffman=store)")
    assert "HuffmanDecode" in {n.op_type for n in custom_nodes(out)}
    rows = rep.passes[-1].layers
    assert any(r.extra["bytes_stored"] < r.extra["bytes_packed"] for r in rows)
    assert rep.passes[-1].counters["bytes_stored"] == sum(r.extra["bytes_stored"] for r in rows)


def test_huffman_store_keeps_the_eie_layout_of_very_sparse_matmuls():
    # the zero-run form would make the dense layout about as small, but the EIE layout is what the native
    # runtime runs fastest (it skips the zeros) and what decodes at load in memory proportional to the nonzeros
    model = builders.mlp(in_features=512, hidden=(512,))
    out, _ = optimize(model, "prune-weights(ratio=0.96),kmeans(bits=5,huffman=store)")
    op_types = {n.op_type for n in custom_nodes(out)}
    assert "SparseCodebookMatMul" in op_types and "HuffmanDecode" in op_types
    assert "RunLengthDecode" not in op_types


def test_zero_runs_of_ternary_codes():
    # TernaryMatMul codes are 2-bit: a pruned ternary layer is stored as zero runs too, and decodes exactly
    model = builders.mlp(in_features=512, hidden=(512,))
    pruned, _ = optimize(model, "prune-weights(ratio=0.95)")
    packed, _ = optimize(pruned, "ternary")
    coded, _ = optimize(packed, "huffman")
    op_types = [n.op_type for n in custom_nodes(coded)]
    assert "TernaryMatMul" in op_types and "RunLengthDecode" in op_types
    assert_exact(packed, coded, _feeds(model))
    assert len(io.serialize(coded)) < 0.5 * len(io.serialize(packed))
