"""optimize() report: output serialized once (checker, onnxruntime load check, size); costs of concrete models."""

from __future__ import annotations

import onnx
import pytest

from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.errors import InputError
from tests.core import modelgen


def test_report_bytes_match_the_serialized_output():
    out, report = optimize(modelgen.conv_relu(), "fold-constants")
    assert report.bytes_after == len(io.serialize(out))


def test_check_model_takes_bytes():
    model = modelgen.conv_relu(dynamic=False)
    io.check_model(model.SerializeToString(), "m")
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[2].input[0] = "missing"
    with pytest.raises(InputError, match="m: invalid ONNX model"):
        io.check_model(bad.SerializeToString(), "m")


@pytest.mark.parametrize("dynamic", [False, True])
def test_report_costs_equal_costing_the_concrete_models(dynamic):
    from onnxcomp import cost

    model = modelgen.conv_relu(dynamic=dynamic)
    shapes = {"x": (2, 3, 7, 9)} if dynamic else {}
    out, report = optimize(model, "fold-constants", input_shapes=shapes)
    norm = io.normalize(model, shapes)
    assert report.before == cost.summarize(cost.concrete(norm, shapes))
    assert report.after == cost.summarize(cost.concrete(out, shapes))
    assert report.after.flops > 0
