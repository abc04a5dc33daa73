"""Sequential calibration of prune-weights and kmeans (``sequential=true``): every layer is fitted on its
input in the graph changed so far, towards the output it had in the original graph."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnxcomp.passes import share
from onnxcomp.passes.share import kmeans as kmeans_mod

from models import builders
from onnxcomp.analysis import weights
from onnxcomp.api import optimize
from onnxcomp.errors import UsageError
from onnxcomp.graph import import_model
from onnxcomp.passes_api import PassContext, PassResult, get_pass
from tests.support.compressed import decoded_weights, make_model, run


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _linear_chain(seed: int = 0, k: int = 12, h: int = 10, n: int = 6):
    """x [N, k] @ W1 [k, h] @ W2 [h, n] (no activation: the sequential fit has a closed form)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((k, h)).astype(np.float32)
    w2 = rng.standard_normal((h, n)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
        helper.make_node("MatMul", ["y1", "w2"], ["y"], name="mm2"),
    ]
    model = make_model(nodes, {"w1": w1, "w2": w2}, [("x", ["N", k])], [("y", ["N", n])])
    x = rng.standard_normal((64, k)).astype(np.float32) * np.linspace(0.2, 3.0, k).astype(np.float32)
    return model, {"x": x}


def _mlp_calib(seed: int = 3, rows: int = 96):
    model = builders.mlp(in_features=24, hidden=(32, 32), out_features=8, seed=seed)
    rng = np.random.default_rng([seed, rows])
    x = rng.standard_normal((rows, 24)).astype(np.float32) * np.linspace(0.3, 3.0, 24).astype(np.float32)
    return model, {"input": x}


def _out_error(model, out, feeds) -> float:
    ref = run(model, feeds)[0].astype(np.float64)
    return float(np.linalg.norm(run(out, feeds)[0] - ref) / np.linalg.norm(ref))


def test_sequential_lsq_has_a_lower_output_error_than_one_shot():
    model, calib = _mlp_calib()
    held_out = _mlp_calib(rows=200)[1]
    errs = {}
    for seq in ("false", "true"):
        out, _ = optimize(model, f"prune-weights(ratio=0.7,update=lsq,sequential={seq})", calib=calib)
        errs[seq] = (_out_error(model, out, calib), _out_error(model, out, held_out))
    # the later layers correct the earlier layers' error, on the calibration data and beyond it
    assert errs["true"][0] < 0.9 * errs["false"][0]
    assert errs["true"][1] < errs["false"][1]


def test_nothing_pruned_leaves_the_outputs_equal():
    model, calib = _mlp_calib()
    out, report = optimize(model, "prune-weights(ratio=0,update=lsq,sequential=true)", calib=calib)
    np.testing.assert_allclose(run(out, calib)[0], run(model, calib)[0], rtol=1e-6, atol=1e-6)
    assert report.passes[0].counters["sparsity"] == 0


def test_the_layer_after_a_pruned_one_is_the_least_squares_fit_to_the_original_output():
    """W2' = argmin ||X W1' W2' - X W1 W2||^2 + l ||W2' - W2||^2 (l = damp * mean diag of H_cc)."""
    model, calib = _linear_chain()
    damp = 1e-4
    spec = f"prune-weights(ratio=0,ratio_per_layer=mm1:0.5,update=lsq,damp={damp},sequential=true)"
    out, _ = optimize(model, spec, calib=calib)
    w, w_new = _weights(model), _weights(out)
    assert (w_new["w1"] == 0).mean() == 0.5 and not (w_new["w2"] == 0).any()
    x = calib["x"].astype(np.float64)
    xc, xo = x @ w_new["w1"], x @ w["w1"]  # the second layer's input now and originally
    hcc, hco = xc.T @ xc / len(x), xc.T @ xo / len(x)
    lam = damp * np.mean(np.diag(hcc))
    w2 = w["w2"].astype(np.float64)
    expected = np.linalg.solve(hcc + lam * np.eye(len(hcc)), hco @ w2 + lam * w2)
    np.testing.assert_allclose(w_new["w2"], expected, rtol=1e-4, atol=1e-4)
    # and it does make up for the first layer: the one-shot model keeps W2 as it was
    one_shot, _ = optimize(model, spec.replace("sequential=true", "sequential=false"), calib=calib)
    np.testing.assert_array_equal(_weights(one_shot)["w2"], w["w2"])
    assert _out_error(model, out, calib) < 0.6 * _out_error(model, one_shot, calib)


@pytest.mark.parametrize("scope", ["layer", "output", "global"])
def test_sequential_mask_sparsity_is_exact(scope):
    model, calib = _mlp_calib()
    ratio = 0.65
    spec = f"prune-weights(ratio={ratio},scope={scope},update=lsq,sequential=%s)"
    seq, _ = optimize(model, spec % "true", calib=calib)
    shot, _ = optimize(model, spec % "false", calib=calib)
    ws, w0 = _weights(seq), _weights(shot)
    names = [n for n, v in _weights(model).items() if v.ndim == 2]
    for name in names:
        zs, z0 = (ws[name] == 0), (w0[name] == 0)
        if scope == "layer":
            assert zs.sum() == round(ratio * zs.size)
        elif scope == "output":
            out_axis = 0 if name.startswith("fc1") else 1  # builders.mlp: fc1 is a Gemm with transB=1
            assert np.all(zs.sum(axis=1 - out_axis) == round(ratio * zs.shape[1 - out_axis]))
        else:  # global: each layer loses as many weights as in the one-shot global mask
            assert zs.sum() == z0.sum()
    assert sum((ws[n] == 0).sum() for n in names) == sum((w0[n] == 0).sum() for n in names)
    # the first layer sees the original input: same mask; a later one is chosen on its current input
    assert np.array_equal(ws["fc0.weight"] == 0, w0["fc0.weight"] == 0)
    assert any(not np.array_equal(ws[n] == 0, w0[n] == 0) for n in names)


def test_im2col_pair_takes_the_same_positions_from_both_inputs():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1], group=2)
    graph = import_model(make_model([node], {"w": w}, [("x", [5, 4, 9, 9])], [("y", [5, 6, 9, 9])]))
    t = weights.TARGETS["Conv"](graph, graph.nodes[0])
    x_orig = rng.standard_normal((5, 4, 9, 9)).astype(np.float32)
    cur, orig = share.im2col_pair(2 * x_orig, x_orig, t, 100, np.random.default_rng(0))
    full = share.im2col(x_orig, t, 10**6, np.random.default_rng(0))
    assert len(cur) == len(orig) == 2  # one block per conv group
    for c, o, f in zip(cur, orig, full, strict=True):
        assert c.shape == o.shape == (100, 18)
        np.testing.assert_array_equal(c, 2 * o)  # row i of both is the same patch
        assert not np.array_equal(o, f[:100])  # a random subset of the 405 positions, not the first ones
        assert {r.tobytes() for r in o} <= {r.tobytes() for r in f}
    with pytest.raises(ValueError):
        share.im2col_pair(x_orig[:2], x_orig, t, 100, np.random.default_rng(0))


def test_sequential_conv_lsq_solves_the_paired_normal_equations():
    """lsq_update with x_orig on a grouped Conv: per output, w'_S from H_cc[S,S] and H_co[S,:] w."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)  # group=2: 2 filters of 3 channels per group
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=2)
    graph = import_model(make_model([node], {"w": w}, [("x", [8, 6, 5, 5])], [("y", [8, 4, 4, 4])]))
    t = weights.TARGETS["Conv"](graph, graph.nodes[0])
    xo = rng.standard_normal((8, 6, 5, 5)).astype(np.float32)
    xc = (xo + 0.3 * rng.standard_normal(xo.shape)).astype(np.float32)
    keep = rng.random(t.w2.shape) < 0.6
    damp = 1e-3
    got = share.lsq_update(t, keep, xc, damp, 1e12, np.random.default_rng(0), x_orig=xo)
    assert np.all(got[~keep] == 0)
    pc = share.im2col(xc, t, 10**6, np.random.default_rng(0))
    po = share.im2col(xo, t, 10**6, np.random.default_rng(0))
    for j in range(4):
        g = j // 2
        s = np.flatnonzero(keep[j])
        a, b = pc[g][:, s], po[g] @ t.w2[j].astype(np.float64)
        hss = a.T @ a / len(a)
        lam = damp * np.mean(np.diag(pc[g].T @ pc[g] / len(a)))
        # min ||A w' - X_o w||^2 / n + lam ||w' - w_S||^2
        ws = t.w2[j, s].astype(np.float64)
        expected = np.linalg.solve(hss + lam * np.eye(s.size), a.T @ b / len(a) + lam * ws)
        np.testing.assert_allclose(got[j, s], expected, rtol=1e-4, atol=1e-5)


def test_sequential_codebook_is_the_least_squares_fit_to_the_original_output():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((10, 7)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="m")
    graph = import_model(make_model([node], {"w": w}, [("x", ["N", 10])], [("y", ["N", 7])]))
    t = weights.TARGETS["MatMul"](graph, graph.nodes[0])
    xo = rng.standard_normal((50, 10)).astype(np.float32)
    xc = (1.1 * xo + 0.2 * rng.standard_normal(xo.shape)).astype(np.float32)
    e = kmeans_mod.kmeans_encode(t.w2, 2, 0, t.out_axis)
    table = kmeans_mod.refine_codebook(t, e, xc, np.random.default_rng(0), damp=0.0, x_orig=xo)
    # explicit design: output j of sample i is sum_l (sum_{k: code[k, j] = l} xc[i, k]) c_l
    onehot = np.eye(4)[e.codes]  # [k, n, L]
    design = np.einsum("ik,knl->nil", xc.astype(np.float64), onehot).reshape(-1, 4)
    target = (xo.astype(np.float64) @ w).T.reshape(-1)
    expected = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(table[0], expected, rtol=1e-4, atol=1e-5)


def test_waves_share_one_capture_per_level():
    """x -> (a, b) -> Add -> c: a and b in the first wave, c in the second; one capture of the current graph
    for the second wave, besides the one of the original inputs."""
    rng = np.random.default_rng(7)
    ws = {n: rng.standard_normal((8, 8)).astype(np.float32) for n in ("wa", "wb", "wc")}
    nodes = [
        helper.make_node("MatMul", ["x", "wa"], ["ya"], name="a"),
        helper.make_node("MatMul", ["x", "wb"], ["yb"], name="b"),
        helper.make_node("Add", ["ya", "yb"], ["s"], name="add"),
        helper.make_node("MatMul", ["s", "wc"], ["y"], name="c"),
    ]
    model = make_model(nodes, ws, [("x", ["N", 8])], [("y", ["N", 8])])
    graph = import_model(model)
    targets = weights.collect_targets(graph, weights.SelectOptions(), PassResult(name="test"))
    assert [[t.name for t in wave] for wave in share.sequential_waves(targets)] == [["a", "b"], ["c"]]

    class Counting(PassContext):
        def capture(self, graph, names, max_samples=None):
            self.captures.append(sorted(names))
            return super().capture(graph, names, max_samples)

    calib = {"x": rng.standard_normal((32, 8)).astype(np.float32)}
    for name, opts in (("prune-weights", {"ratio": 0.5, "update": "lsq"}), ("kmeans", {"bits": 2})):
        ctx = Counting(calib=calib)
        ctx.captures = []
        get_pass(name)(sequential=True, **opts)(import_model(model), ctx)
        assert ctx.captures == [["s", "x"], ["s"]], name


def test_sequential_without_calibration_data_is_a_usage_error_unless_left_unset():
    model = builders.mlp(in_features=8, hidden=(8,))
    with pytest.raises(UsageError, match="sequential"):
        optimize(model, "prune-weights(criterion=magnitude,sequential=true)")
    with pytest.raises(UsageError, match="sequential"):
        optimize(model, "kmeans(bits=4,sequential=true)")
    optimize(model, "prune-weights(ratio=0.5),kmeans(bits=4)")  # unset: off without calibration data


def test_sequential_is_on_by_default_with_calibration_data_and_only_for_the_lsq_update():
    model, calib = _mlp_calib()
    # kmeans: on by default only without the error-compensated mode (which is on by default with calibration)
    _, report = optimize(model, "prune-weights(ratio=0.6,update=lsq),kmeans(bits=3,compensate=false)", calib=calib)
    for p in report.passes:
        decisions = [layer.decision for layer in p.layers]
        assert "sequential" not in decisions[0] and all("sequential" in d for d in decisions[1:]), decisions
    # without the lsq update a layer keeps its weights and its original-input Wanda mask
    a, _ = optimize(model, "prune-weights(ratio=0.6,sequential=true)", calib=calib)
    b, _ = optimize(model, "prune-weights(ratio=0.6,sequential=false)", calib=calib)
    for name, w in _weights(a).items():
        np.testing.assert_array_equal(w, _weights(b)[name])


def test_compensated_kmeans_is_one_shot_unless_sequential_is_set():
    model, calib = _mlp_calib()
    _, one_shot = optimize(model, "kmeans(bits=3)", calib=calib)
    assert not any("sequential" in r.decision for r in one_shot.passes[0].layers)
    _, seq = optimize(model, "kmeans(bits=3,sequential=true)", calib=calib)
    decisions = [r.decision for r in seq.passes[0].layers]
    assert all("sequential" in d for d in decisions[1:]) and all("compensated" in d for d in decisions), decisions


def test_sequential_kmeans_after_sequential_prune_keeps_zeros_and_runs():
    model, calib = _mlp_calib()
    spec = "prune-weights(ratio=0.8,scope=global,update=lsq,sequential=true),kmeans(bits=3,sequential=true)"
    out, report = optimize(model, spec, calib=calib)
    decoded = decoded_weights(out)
    assert len(decoded) == 3
    assert sum(int((w == 0).sum()) for w in decoded.values()) == round(0.8 * (24 * 32 + 32 * 32 + 32 * 8))
    assert all("sequential" in layer.decision for layer in report.passes[1].layers[1:])
    assert _out_error(model, out, calib) < 0.5


def test_dense_refit_is_the_ridge_least_squares_fit_and_the_identity_without_upstream_change():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((9, 5)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="m")
    graph = import_model(make_model([node], {"w": w}, [("x", ["N", 9])], [("y", ["N", 5])]))
    t = weights.TARGETS["MatMul"](graph, graph.nodes[0])
    xo = rng.standard_normal((40, 9)).astype(np.float32)
    xc = (xo + 0.4 * rng.standard_normal(xo.shape)).astype(np.float32)
    h, cross = share.paired_grams(t, xc, xo, np.random.default_rng(0))
    got = share.dense_refit(t, h, cross, 1e-2, 1e12)
    a = xc.astype(np.float64)
    lam = 1e-2 * np.mean(np.diag(a.T @ a / 40))
    expected = np.linalg.solve(a.T @ a / 40 + lam * np.eye(9), a.T @ (xo @ w.astype(np.float64)) / 40 + lam * w)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    assert share.dense_refit(t, h, None, 1e-2, 1e12) is t.w2
    assert share.dense_refit(t, h, cross, 1e-2, 10.0) is None  # too expensive


def test_sequential_kmeans_refits_the_weights_and_has_a_lower_output_error():
    model, calib = _mlp_calib()
    held_out = _mlp_calib(rows=200)[1]
    errs, reports = {}, {}
    for seq in ("false", "true"):
        out, reports[seq] = optimize(model, f"kmeans(bits=2,sequential={seq})", calib=calib)
        errs[seq] = (_out_error(model, out, calib), _out_error(model, out, held_out))
    assert errs["true"][0] < 0.7 * errs["false"][0]
    assert errs["true"][1] < 0.85 * errs["false"][1]
    decisions = [layer.decision for layer in reports["true"].passes[0].layers]
    assert "re-fit" not in decisions[0] and all("re-fit" in d for d in decisions[1:])


def test_a_layer_with_too_few_calibration_rows_per_weight_is_fitted_one_shot():
    model, calib = _linear_chain()
    few = {"x": calib["x"][:15]}  # mm2 keeps its 10 inputs per output: 15 rows < 2 per weight
    spec = "prune-weights(ratio=0,ratio_per_layer=mm1:0.5,update=lsq,sequential=true)"
    out, report = optimize(model, spec, calib=few)
    np.testing.assert_array_equal(_weights(out)["w2"], _weights(model)["w2"])
    assert report.passes[0].counters["layers_one_shot"] == 1
    assert "sequential" not in report.passes[0].layers[1].decision
    out, report = optimize(model, spec, calib={"x": calib["x"][:20]})  # 20 rows: enough
    assert not np.array_equal(_weights(out)["w2"], _weights(model)["w2"])
    assert "layers_one_shot" not in report.passes[0].counters


@pytest.mark.parametrize(
    ("pads", "strides", "dilations"), [([0, 0, 0, 0], [1, 1], [1, 1]), ([1, 2, 0, 1], [2, 3], [2, 1])]
)
def test_positions_counts_the_im2col_rows(pads, strides, dilations):
    w = np.zeros((2, 3, 3, 2), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=pads, strides=strides, dilations=dilations)
    graph = import_model(make_model([node], {"w": w}, [("x", [4, 3, 11, 9])], [("y", None)]))
    t = weights.TARGETS["Conv"](graph, graph.nodes[0])
    x = np.ones((4, 3, 11, 9), np.float32)
    assert share.positions(x, t) == share.im2col(x, t, 10**6, np.random.default_rng(0))[0].shape[0]


@pytest.mark.parametrize(
    "spec",
    [
        "prune-weights(ratio=0.5,update=lsq,max_update_flops=10)",
        "kmeans(bits=3,max_refine_flops=10,sequential=true)",
    ],
)
def test_too_large_a_refit_is_one_shot_without_computing_the_grams(spec, monkeypatch):
    # the k x k Gram matrices of a large layer cost memory and time before any flop limit on the solves is
    # checked: over the limit, a layer is fitted one-shot and the paired (current/original) grams never built
    from onnxcomp.passes.share import prune_weights as prune_mod

    def boom(*args, **kwargs):
        raise AssertionError("paired grams computed for a layer over the flop limit")

    # the passes' own references (the helper module's are not looked up by them)
    monkeypatch.setattr(kmeans_mod, "paired_grams", boom)
    monkeypatch.setattr(prune_mod, "paired_grams", boom)
    model, calib = _mlp_calib()
    _, report = optimize(model, spec, calib=calib)
    assert report.passes[0].counters["layers_one_shot"] >= 1  # every layer after the first wave
