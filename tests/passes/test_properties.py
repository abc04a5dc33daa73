"""Property tests: every lossless pass, alone and in the default pipeline, keeps a random model's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from onnxcomp.passes_api import registry
from onnxcomp.pipeline import DEFAULT_PIPELINE
from tests.support.random_graphs import models
from tests.support.run import assert_same_outputs, op_types, run_pipeline

MINE = ("eliminate", "fuse-bn", "fuse-affine", "fuse-activation")
SPECS = (*MINE, DEFAULT_PIPELINE, DEFAULT_PIPELINE + ",fuse-activation")


def test_passes_are_registered_and_lossless():
    passes = registry()
    for name in MINE:
        assert passes[name].lossless, name
    assert "fuse-activation" not in DEFAULT_PIPELINE  # its output runs in onnxruntime only


@pytest.mark.parametrize("spec", SPECS)
@given(case=models())
def test_outputs_unchanged(spec, case):
    model, feeds = case
    out, _report = run_pipeline(model, spec)
    # float64 folding keeps the error at float32 rounding of the output magnitude
    assert_same_outputs(model, out, feeds, rtol=1e-4, atol=1e-4)
    assert len(out.graph.node) <= len(model.graph.node) + sum(1 for op in op_types(model) if op == "MatMul")
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]


@given(case=models())
def test_default_pipeline_leaves_no_foldable_pattern(case):
    """After the default pipeline no BatchNormalization or no-op remains where a fusion was possible."""
    model, _feeds = case
    out, _report = run_pipeline(model, DEFAULT_PIPELINE)
    outputs = {o.name for o in out.graph.output}
    producers = {t: n for n in out.graph.node for t in n.output}
    readers: dict[str, int] = {}
    for n in out.graph.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    inputs = {i.name for i in out.graph.input}
    for n in out.graph.node:
        if n.op_type == "Identity" and n.output[0] in outputs and (n.input[0] in outputs or n.input[0] in inputs):
            continue  # two graph outputs (or an output copying an input) of one value: the Identity is needed
        assert n.op_type not in ("Identity", "Dropout"), n
        prod = producers.get(n.input[0]) if n.input else None
        if n.op_type == "BatchNormalization" and prod is not None and prod.op_type in ("Conv", "ConvTranspose"):
            # only kept when the conv output is shared or a graph output
            assert readers[n.input[0]] > 1 or n.input[0] in outputs, n
    np.testing.assert_equal(sorted(outputs), sorted(o.name for o in model.graph.output))
