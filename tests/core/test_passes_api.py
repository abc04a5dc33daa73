"""The pass contract: preconditions (``requires``) and postconditions (``ensures``) hold for a pass called directly,
not only inside a pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import DIGITS_HELDOUT, DIGITS_MODEL
from onnxcomp import io
from onnxcomp.errors import PassError, UsageError
from onnxcomp.graph import export_model, import_model, opset_version
from onnxcomp.passes_api import Pass, PassContext, PassResult, get_pass


def _graph(path=DIGITS_MODEL):
    return import_model(io.normalize(io.load_model(path)))


def test_a_pass_needing_calibration_data_refuses_to_run_without_it_when_called_directly():
    graph = _graph()
    cls = get_pass("prune-channels")
    assert cls.needs_calib
    with pytest.raises(UsageError, match="'prune-channels' needs calibration data"):
        cls(ratio=0.3)(graph, PassContext())
    with np.load(DIGITS_HELDOUT) as z:
        calib = {"input": z["input"][:32]}
    result = cls(ratio=0.3, round_to=1)(graph, PassContext(calib=calib))
    assert result.counters["channels_removed"] > 0


class _Probe(Pass):
    """x -> x (test pass): ``requires`` may decline; ``run`` may rename the graph output."""

    name = "probe"

    @dataclasses.dataclass
    class Options:
        decline: bool = False
        rename_output: bool = False

    calls = 0

    def requires(self, graph, ctx, result):
        result.count("checked")
        return super().requires(graph, ctx, result) or ("declined for the test" if self.options.decline else None)

    def run(self, graph, ctx):
        type(self).calls += 1
        if self.options.rename_output:
            graph.outputs[0].name = "renamed"
        result = self.new_result()
        result.count("ran")
        return result


def test_a_declined_precondition_skips_run_and_says_why():
    _Probe.calls = 0
    result = _Probe(decline=True)(_graph(), PassContext())
    assert _Probe.calls == 0
    assert [(s.node, s.reason) for s in result.skips] == [("model", "declined for the test")]
    assert result.counters == {"checked": 1}


def test_the_preconditions_counters_come_first_in_the_result():
    _Probe.calls = 0
    result = _Probe()(_graph(), PassContext())
    assert _Probe.calls == 1
    assert list(result.counters) == ["checked", "ran"]


def test_a_pass_that_renames_a_graph_output_breaks_the_postcondition():
    with pytest.raises(PassError, match="changed the graph's inputs or outputs"):
        _Probe(rename_output=True)(_graph(), PassContext())


def _opset13_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_a_share_pass_called_directly_upgrades_an_old_opset_first():
    graph = import_model(io.normalize(_opset13_model()))
    result = get_pass("kmeans")(bits=4)(graph, PassContext())
    assert opset_version(graph) >= 16
    assert next(iter(result.counters)) == "opset_upgraded_to" and result.counters["layers"] == 1
    onnx.checker.check_model(export_model(graph))


def test_a_share_pass_with_nothing_to_write_leaves_an_old_opset_alone():
    graph = import_model(io.normalize(_opset13_model()))
    result = get_pass("kmeans")(bits=4, protect=["mm"])(graph, PassContext())
    assert opset_version(graph) == 13
    assert "opset_upgraded_to" not in result.counters and result.skips


def test_merge_before_keeps_both_results():
    pre, own = PassResult("p"), PassResult("p")
    pre.count("a", 2)
    pre.skip("model", "x")
    own.count("a", 1)
    own.count("b")
    own.skip("n", "y")
    own.merge_before(pre)
    assert own.counters == {"a": 3, "b": 1} and [s.reason for s in own.skips] == ["x", "y"]
