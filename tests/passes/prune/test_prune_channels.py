"""prune-channels (LASSO selection + least-squares refit) and its building blocks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxcomp.passes.prune import ADAPTERS, lasso_ranking, ridge_refit

from models import DIGITS_HELDOUT, DIGITS_LABELS, DIGITS_MODEL, builders
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from onnxcomp.graph import import_model
from onnxcomp.io import normalize
from tests.support.random_cnns import zero_channels
from tests.support.run import assert_same_outputs, outputs


def _conv_model(attrs: dict, x_shape, w_shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)
    graph = helper.make_graph(
        [node],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "attrs",
    [
        dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1]),
        dict(kernel_shape=[3, 2], dilations=[2, 1], pads=[2, 0, 1, 1]),
        dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
        dict(kernel_shape=[1, 1], auto_pad="VALID"),
    ],
)
def test_conv_patches_reproduce_the_convolution(attrs):
    kh, kw = attrs["kernel_shape"]
    model = _conv_model(attrs, (2, 3, 9, 7), (4, 3, kh, kw))
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 7)).astype(np.float32)
    y = outputs(model, {"x": x})["y"]
    node = next(n for n in import_model(normalize(model)).nodes if n.op == "Conv")
    ad = ADAPTERS["Conv"]
    idx = ad.sample(x, y, 10_000, np.random.default_rng(0))
    p = ad.patches(node, x, idx)
    pred = np.einsum("sck,ock->so", p, ad.weights(node)) + ad.bias(node)
    np.testing.assert_allclose(pred, ad.targets(y, idx), rtol=1e-4, atol=1e-4)
    assert len(idx[0]) == y.shape[0] * y.shape[2] * y.shape[3]  # every position, when fewer than asked


def test_ridge_refit_recovers_exact_weights_and_stays_near_w0_when_underdetermined():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((500, 12))
    w_true, b_true = rng.standard_normal((3, 12)), rng.standard_normal(3)
    w, b = ridge_refit(p, p @ w_true.T + b_true, np.zeros((3, 12)), None, True, 1e-9)
    np.testing.assert_allclose(w, w_true, atol=1e-4)  # products in float32
    np.testing.assert_allclose(b, b_true, atol=1e-4)
    few = p[:4]  # 4 samples, 12 unknowns: the ridge keeps the solution at w0 along the unseen directions
    w0 = rng.standard_normal((3, 12))
    w, _ = ridge_refit(few, few @ w0.T, w0, None, False, 1e-3)
    np.testing.assert_allclose(w, w0, atol=1e-3)


def test_lasso_ranking_puts_the_contributing_channels_first():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 8))
    beta = np.array([0.0, 3.0, 0.0, 0.0, 2.0, 0.0, 0.5, 0.0])
    t = z @ beta + 0.01 * rng.standard_normal(2000)
    scores = lasso_ranking(z.T @ z, z.T @ t, len(t), n_keep=3)
    assert set(np.argsort(-scores)[:3]) == {1, 4, 6}
    assert np.argsort(-scores)[0] == 1


def test_needs_calibration_data():
    with pytest.raises(UsageError, match="calibration"):
        optimize(onnx.load(DIGITS_MODEL), "prune-channels(ratio=0.3)")


def test_channels_that_contribute_nothing_are_chosen_and_removed_exactly():
    model, n = zero_channels(onnx.load(DIGITS_MODEL), 0.25, seed=3)
    x = np.load(DIGITS_HELDOUT)["input"][:100]
    for reconstruct in ("false", "true"):
        pruned, report = optimize(
            model, f"prune-channels(ratio=0.25,round_to=1,reconstruct={reconstruct})", calib={"input": x}
        )
        assert report.passes[0].counters["channels_removed"] == n
        assert_same_outputs(model, pruned, {"input": x}, rtol=1e-4, atol=1e-4)


def test_beats_l1_at_the_same_flops_on_held_out_data():
    model = onnx.load(DIGITS_MODEL)
    x = np.load(DIGITS_HELDOUT)["input"]
    labels = np.load(DIGITS_LABELS)
    calib, test = {"input": x[:225]}, {"input": x[225:]}

    def accuracy(spec):
        pruned, report = optimize(model, spec, calib=calib)
        acc = float((outputs(pruned, test)["logits"].argmax(1) == labels[225:]).mean())
        return acc, report.passes[0].counters["flops_removed"]

    lasso, f1 = accuracy("prune-channels(target_flops=0.5,round_to=1)")
    l1, f2 = accuracy("prune-filters(target_flops=0.5,round_to=1)")
    assert abs(f1 - 0.5) < 0.01 and abs(f2 - 0.5) < 0.01
    assert lasso >= 0.97 and lasso > l1 + 0.3


def test_runs_on_a_mobilenet_with_se_blocks_and_depthwise_followers():
    model = builders.mobilenet(variant="tiny", image_size=(19, 17))
    feeds = builders.random_inputs(model, batch=16, seed=1)
    pruned, report = optimize(model, "prune-channels(ratio=0.5,round_to=1,samples=512)", calib=feeds)
    res = report.passes[0]
    assert res.counters["channels_removed"] > 0 and res.counters["layers_refitted"] > 0
    test = builders.random_inputs(model, batch=4, seed=2)
    shapes = [v.shape for v in outputs(model, test).values()]
    assert [v.shape for v in outputs(pruned, test).values()] == shapes


def test_fixed_batch_larger_than_max_calib():
    """A model with a fixed batch of 6 and max_calib=4: the calibration data cannot be cut to 4 samples
    (onnxruntime refuses a batch of 4); the pass runs on all 6 instead of failing."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="c1"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="c2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 3, 5, 5])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    calib = {"x": rng.standard_normal((6, 3, 7, 7)).astype(np.float32)}
    for spec in (
        "prune-channels(ratio=0.5,round_to=1,max_calib=4)",
        "prune-filters(ratio=0.5,round_to=1,reconstruct=true,max_calib=4)",
    ):
        out, rep = optimize(model, spec, calib=calib)
        assert rep.passes[0].counters["channels_removed"] == 4, spec
        assert outputs(out, calib)["y"].shape == (6, 3, 5, 5)


def test_unnamed_layers_get_their_own_records_and_errors():
    """Nodes without names (common in exported models): each layer's record, refit error and count is its
    own, not merged under the empty name."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 1, 1)), ("w3", (3, 8, 1, 1)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    calib = {"x": rng.standard_normal((4, 3, 9, 9)).astype(np.float32)}
    _, rep = optimize(model, "prune-channels(ratio=0.5,round_to=1,samples=256)", calib=calib)
    res = rep.passes[0]
    names = [r.name for r in res.layers]
    assert len(names) == 3 and len(set(names)) == 3 and all(names), names
    assert res.counters["layers_refitted"] == 2
    assert sum(r.error is not None for r in res.layers) == 2
