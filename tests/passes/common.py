"""Helpers for pass unit tests: run a spec, compare with the original under onnxruntime, inspect results."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from onnxcomp.graph import import_model
from onnxcomp.io import normalize
from onnxcomp.passes_api import PassContext, PassResult, get_pass
from tests.util import assert_same_outputs, random_feeds, run_pipeline


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


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def reasons(result: PassResult) -> str:
    return " | ".join(f"{s.node}: {s.reason}" for s in result.skips)


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
