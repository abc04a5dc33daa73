"""Running pipelines and passes in tests, and comparing models under onnxruntime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from onnxcomp.api import optimize
from onnxcomp.calib import generate_inputs
from onnxcomp.graph import import_model
from onnxcomp.io import normalize
from onnxcomp.passes_api import PassContext, PassResult, get_pass
from onnxcomp.verify import run_model

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def run_pipeline(model: onnx.ModelProto, spec: str, **kw) -> tuple[onnx.ModelProto, object]:
    """optimize() without verification (tests compare outputs themselves)."""
    return optimize(model, spec, **kw)


def outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runtime: bool | None = None) -> dict[str, np.ndarray]:
    """All outputs under onnxruntime with its graph optimizations disabled."""
    return run_model(model, feeds, runtime=runtime)


def random_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0):
    return generate_inputs(normalize(model, shapes), shapes, seed=seed)


def assert_same_outputs(
    a: onnx.ModelProto,
    b: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    exact: bool = False,
) -> None:
    """Every output of ``b`` equals ``a``'s (exactly, or to float-rounding tolerance scaled by the output)."""
    ra, rb = outputs(a, feeds), outputs(b, feeds)
    assert list(ra) == list(rb), (list(ra), list(rb))
    for name in ra:
        x, y = ra[name], rb[name]
        assert x.shape == y.shape, (name, x.shape, y.shape)
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            scale = max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
            np.testing.assert_allclose(y, x, rtol=rtol, atol=atol * scale, err_msg=name)


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def apply(
    model: onnx.ModelProto,
    spec: str,
    feeds: dict[str, np.ndarray] | None = None,
    *,
    exact: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[onnx.ModelProto, PassResult]:
    """Run ``spec`` through optimize(), check outputs equal the original's; returns (model, last pass result)."""
    out, report = run_pipeline(model, spec)
    feeds = feeds if feeds is not None else random_feeds(model, seed=1)
    assert_same_outputs(model, out, feeds, rtol=rtol, atol=atol, exact=exact)
    return out, report.passes[-1]


def run_on_graph(model: onnx.ModelProto, name: str, **options):
    """Run one pass on the imported graph directly (no export/ORT): for skip checks on models ORT rejects."""
    graph = import_model(normalize(model))
    result = get_pass(name)(**options)(graph, PassContext())
    return graph, result


def op_counts(model: onnx.ModelProto) -> Counter:
    """How many nodes of each op type the model has."""
    return Counter(n.op_type for n in model.graph.node)


def reasons(result: PassResult) -> str:
    return " | ".join(f"{s.node}: {s.reason}" for s in result.skips)


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
