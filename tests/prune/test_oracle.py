"""The exactness oracle: removing channels whose consumer weights are zero changes no output."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxcomp.passes.prune._apply import apply_removal
from onnxcomp.passes.prune._select import choose

from onnxcomp.analysis.channels import analyze_channels
from onnxcomp.graph import export_model, import_model
from onnxcomp.io import infer_shapes, normalize
from tests.prune.graphs import random_cnn, zero_consumers
from tests.util import assert_same_outputs


def _export(graph) -> onnx.ModelProto:
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = export_model(graph)
    del model.graph.value_info[:]
    model = infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def prune_with_oracle(model: onnx.ModelProto, ratios, seed: int = 0):
    """(reference with zeroed consumer weights, pruned model, channels removed)."""
    graph = import_model(normalize(model))
    plan = analyze_channels(graph)
    removed = np.zeros(plan.n_channels, dtype=bool)
    rng = np.random.default_rng(seed)
    for g, ratio in zip([g for g in plan.groups if g.prunable], ratios, strict=False):
        removed[g.offset: g.offset + g.size] = choose(g, rng.random(g.size), round(ratio * g.size))
    zero_consumers(plan, removed)
    reference = _export(graph)
    apply_removal(graph, plan, removed)
    return reference, _export(graph), int(removed.sum())


@given(random_cnn(), st.lists(st.floats(0.2, 0.95), min_size=30, max_size=30), st.integers(0, 100))
@settings(max_examples=40)
def test_random_graphs_zeroed_channels_prune_exactly(model, ratios, seed):
    reference, pruned, n = prune_with_oracle(model, ratios, seed)
    feeds = {"input": np.random.default_rng(seed).standard_normal(
        [2, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]]).astype(np.float32)}
    assert_same_outputs(reference, pruned, feeds, rtol=1e-4, atol=1e-5)
    if n:
        assert _params(pruned) < _params(reference)
