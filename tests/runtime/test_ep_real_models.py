"""Real trained models (PP-OCRv5 detector, classifier and recognizer, magika; test extras) compressed or
Winograd-rewritten, run under the OnnxcompExecutionProvider: outputs equal to onnxruntime's CPU EP running the same
file (the ops' function bodies) within float rounding, and the EP ran part of the model where it applies.

Float rounding is the lossless verification tolerance (1e-5 + 1e-4 relative to max|ref|), except where the EP runs
many stacked Winograd F(4,3) layers on k-means filters: on the PP-OCRv5 detector after
fuse-bn,kmeans(bits=4),select-conv the probability map differs by 1.4e-4 (cosine 1 - 3e-12; the custom-op library's
own Winograd path differs by 4.8e-4 on the same file), so that case is held to 5e-4 relative."""

from __future__ import annotations

import pytest
from eputil import cpu_op_counts, ep_nodes

from onnxcomp import runtime
from onnxcomp.api import optimize
from onnxcomp.verify import Tolerance, compare_arrays
from tests.e2e.realmodels import FEEDS, MODELS

pytestmark = [pytest.mark.usefixtures("runtime_lib", "ep_devices"), pytest.mark.slow]

LOSSLESS = Tolerance.lossless()
WINOGRAD_STACK = Tolerance(atol=1e-5, rtol=5e-4, min_cosine=0.99999)
CASES = [
    ("ocr_det", "fuse-bn,select-conv", True, LOSSLESS),  # the FPN head's 3x3 stride-1 layers: WinogradConv chains
    ("ocr_det", "fuse-bn,kmeans(bits=4),select-conv", True, WINOGRAD_STACK),  # CodebookConv with winograd_tile
    ("ocr_cls", "fuse-bn,kmeans(bits=4)", False, LOSSLESS),  # depthwise / 1x1 / strided only: convs declined
    ("ocr_rec", "fuse-bn,kmeans(bits=4)", True, LOSSLESS),  # CodebookMatMul in the SVTR blocks and the CTC head
    ("magika", "kmeans(bits=4)", False, LOSSLESS),
]


@pytest.mark.parametrize(("key", "passes", "claims", "tol"), CASES, ids=[f"{k}:{p}" for k, p, _, _ in CASES])
def test_real_model_under_the_ep_equals_the_cpu_ep(key, passes, claims, tol, tmp_path):
    path = MODELS[key].path()
    if path is None:
        pytest.skip(f"{MODELS[key].dist} is not installed (a test extra)")
    feeds = FEEDS[key]()[0]
    out, _ = optimize(str(path), passes)
    cpu = runtime.session(out, runtime="ort", threads=1)
    ep = runtime.session(out, runtime="ep", threads=1)
    names = [o.name for o in cpu.get_outputs()]
    for name, want, got in zip(names, cpu.run(None, feeds), ep.run(None, feeds)):
        m = compare_arrays(name, want, got, tol)
        assert m.ok, f"{key} {passes} {name}: {m.why}"
    ran = ep_nodes(out, feeds, tmp_path)
    if claims:
        assert ran, f"the EP ran nothing of {key} after {passes}"
        if "select-conv" in passes:  # every WinogradConv / winograd_tile CodebookConv in the EP
            assert not cpu_op_counts(out, feeds, tmp_path).get("WinogradConv")
