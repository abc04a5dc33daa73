"""onnxcomp.report: the JSON report's content, number formatting, the rendered tables."""

from __future__ import annotations

import io as stdio
import json

import numpy as np
import pytest
from rich.console import Console

from models import DIGITS_MODEL
from onnxcomp.api import optimize
from onnxcomp.passes_api import PassResult, jsonable
from onnxcomp.report import Report, format_count


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0"),
        (999, "999"),
        (1000, "1.00k"),
        (1234567, "1.23M"),
        (-2.5e9, "-2.50G"),
        (0.12345, "0.1235"),
        (3.0, "3"),
    ],
)
def test_format_count(value, text):
    assert format_count(value) == text


def test_jsonable_converts_numpy_tuples_and_paths():
    from pathlib import Path

    out = jsonable({1: (np.float32(0.5), np.int64(3)), "p": Path("/a/b"), "l": [np.bool_(True)]})
    assert out == {"1": [0.5, 3], "p": "/a/b", "l": [True]}
    json.dumps(out)  # plain JSON types only


def test_report_json_holds_passes_costs_and_sizes():
    _, report = optimize(str(DIGITS_MODEL), "fuse-bn,kmeans(bits=4)")
    data = json.loads(report.to_json())
    assert data["pipeline"] == "fuse-bn,kmeans(bits=4)" and data["lossless"] is False
    assert [p["name"] for p in data["passes"]] == ["fuse-bn", "kmeans"]
    km = data["passes"][1]
    assert km["counters"]["layers"] == len(km["layers"]) > 0
    assert all({"bits", "bytes_before", "bytes_stored"} <= set(r["extra"]) for r in km["layers"])
    model = data["model"]
    assert model["bytes_before"] == DIGITS_MODEL.stat().st_size
    assert 0 < model["bytes_after"] < model["bytes_before"]
    assert model["after"]["weight_bytes"] < model["before"]["weight_bytes"]
    assert data["verification"] is None


def test_lossless_only_when_every_pass_is():
    assert Report("a", [PassResult("a", lossless=True), PassResult("b", lossless=True)]).lossless
    assert not Report("a", [PassResult("a", lossless=True), PassResult("b", lossless=False)]).lossless


def test_bytes_before_of_an_in_memory_model_is_its_serialized_size():
    import onnx

    model = onnx.load(str(DIGITS_MODEL))
    _, report = optimize(model, "fuse-bn")
    assert report.bytes_before == model.ByteSize()


def test_render_prints_the_pass_layer_and_model_tables():
    _, report = optimize(str(DIGITS_MODEL), "fuse-bn,kmeans(bits=4)")
    buf = stdio.StringIO()
    report.render(Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    assert "onnxcomp: fuse-bn,kmeans(bits=4)" in text
    assert "kmeans: layers" in text and "kmeans 4-bit" in text
    assert "weight bytes" in text and "file bytes" in text
    layers = report.passes[1].layers
    assert layers[0].name in text
