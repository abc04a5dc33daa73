"""inline-functions: every model-local function expanded into standard ops; outputs bit-identical; weights stay
packed."""

from __future__ import annotations

import numpy as np

from models import DIGITS_HELDOUT, DIGITS_MODEL
from onnxcomp import ops
from onnxcomp.api import optimize
from tests.support.run import outputs


def _feeds():
    with np.load(DIGITS_HELDOUT) as z:
        return {"input": z["input"][:16]}


def test_compressed_model_becomes_standard_ops_with_the_same_outputs():
    packed, _ = optimize(str(DIGITS_MODEL), "kmeans(bits=4,huffman=store)")
    assert ops.uses_ops(packed) and packed.functions
    out, report = optimize(packed, "inline-functions")
    assert not ops.uses_ops(out) and not out.functions
    assert ops.DOMAIN not in {o.domain for o in out.opset_import}
    assert report.passes[0].counters["calls_inlined"] == sum(n.domain == ops.DOMAIN for n in packed.graph.node)
    feeds = _feeds()
    ref, got = outputs(packed, feeds, runtime=False), outputs(out, feeds)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    # the weights stay compressed: the inlined decode reads the same packed initializers
    packed_inits = {t.name for t in packed.graph.initializer if t.data_type == 2}  # uint8
    assert packed_inits and packed_inits <= {t.name for t in out.graph.initializer}


def test_a_model_without_functions_is_left_alone_and_says_why():
    _, report = optimize(str(DIGITS_MODEL), "fuse-bn,inline-functions")
    result = report.passes[1]
    assert not result.changed
    assert result.skips and "no model-local functions" in result.skips[0].reason
