"""`onnxcomp inspect`: per-algorithm roofline data for convolutions (--json), two models, and the --plot chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from onnxcomp.api import optimize
from onnxcomp.cli import main
from tests.support.random_graphs import Builder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    b = Builder(17, seed=5)
    x = b.input("x", [1, 32, 40, 40])
    y = b.node("Relu", [b.conv(x, 32, 32, pads=[1, 1, 1, 1])])
    y = b.conv(y, 32, 16, k=1)
    b.output(b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2]), [1, 16, 20, 20])
    model = b.model()
    out, _ = optimize(model, "select-conv(algorithm=winograd,tiles=4)", hardware="zen4-1t")
    d = tmp_path_factory.mktemp("roofline")
    a, w = d / "a.onnx", d / "w.onnx"
    a.write_bytes(model.SerializeToString())
    w.write_bytes(out.SerializeToString())
    return a, w


def test_json_carries_every_algorithm(models, tmp_path, capsys):
    a, w = models
    out = tmp_path / "r.json"
    assert main(["inspect", str(a), str(w), "--hardware", "zen4-1t", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "w.onnx" in text and "x a.onnx" in text  # the comparison line
    doc = json.loads(out.read_text())
    assert doc["hardware"]["name"] == "zen4-1t" and doc["hardware"]["peak_gflops"] == 116.0
    convs = [r for r in doc["layers"] if r["op"] == "Conv"]
    assert len(convs) == 2
    three, one = convs
    assert three["algorithm"] == "im2col" and set(three["algorithms"]) == {
        "im2col",
        "winograd2",
        "winograd4",
        "winograd6",
    }
    assert set(one["algorithms"]) == {"im2col"}  # 1x1: one algorithm
    wino = three["algorithms"]["winograd4"]
    assert wino["flops"] < three["algorithms"]["im2col"]["flops"] / 2
    assert wino["intensity"] == pytest.approx(wino["flops"] / wino["bytes"])
    other = doc["other"]["layers"]
    wc = next(r for r in other if r["op"] == "WinogradConv")
    assert wc["algorithm"] == "winograd4" and wc["seconds"] == wc["algorithms"]["winograd4"]["seconds"]
    pool = next(r for r in doc["layers"] if r["op"] == "MaxPool")
    assert pool["algorithm"] is None and set(pool["algorithms"]) == {"roofline"}


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_plot_is_a_valid_chart(models, tmp_path, suffix, capsys):
    pytest.importorskip("matplotlib")
    a, w = models
    path = tmp_path / f"roofline{suffix}"
    assert main(["inspect", str(a), str(w), "--hardware", "zen4-1t", "--plot", str(path)]) == 0
    data = path.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")
        text = data.decode()
        assert "peak 116 GFLOP/s" in text and "arithmetic intensity" in text and "winograd4" in text


def test_plot_errors(models, tmp_path, monkeypatch, capsys):
    a, _ = models
    assert main(["inspect", str(a), "--plot", str(tmp_path / "chart.bmp")]) == 2
    assert ".svg, .png or .pdf" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    assert main(["inspect", str(a), "--plot", str(tmp_path / "chart.svg")]) == 2
    assert "pip install 'onnxcomp[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "chart.svg").exists()


def test_hardware_show(capsys):
    assert main(["hardware", "show", "zen4-1t"]) == 0
    out = capsys.readouterr().out
    assert '"peak_gflops": 116.0' in out and "zen5-1t" in out
    assert main(["hardware", "show", "nope"]) == 2
