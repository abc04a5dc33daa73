"""onnxcomp.diff: nodes removed, added and rewritten, op counts, params, FLOPs and sizes between two models."""

from __future__ import annotations

import json

from models import DIGITS_MODEL
from onnxcomp import io
from onnxcomp.api import optimize
from onnxcomp.cli import main
from onnxcomp.diff import diff_models


def test_identical_models_differ_in_nothing():
    m = io.normalize(io.load_model(DIGITS_MODEL))
    d = diff_models(m, m)
    assert d.removed == d.added == d.rewritten == [] and d.op_counts == {}
    assert d.params[0] == d.params[1] > 0 and d.flops[0] == d.flops[1] > 0
    assert d.serialized_bytes[0] == d.serialized_bytes[1]


def test_bn_folding_removes_the_batchnorms_and_rewrites_the_convs():
    a = io.normalize(io.load_model(DIGITS_MODEL))
    b, _ = optimize(a, "fuse-bn")
    d = diff_models(a, io.normalize(b))
    bns = [n.name for n in a.graph.node if n.op_type == "BatchNormalization"]
    assert bns and {name for name, op in d.removed} == set(bns)
    assert all(op == "BatchNormalization" for _, op in d.removed)
    assert d.added == []
    assert d.op_counts == {"BatchNormalization": (len(bns), 0)}
    # the convs before the BNs now write the BNs' outputs with folded weights
    rewritten = {name for name, before, _ in d.rewritten}
    assert rewritten and all(before == "Conv" for _, before, _ in d.rewritten)
    assert rewritten <= {n.name for n in a.graph.node if n.op_type == "Conv"}
    assert d.params[1] < d.params[0]  # the BN scale, bias, mean and variance are gone
    assert d.flops[1] < d.flops[0]


def test_kmeans_shows_ops_replaced_and_fewer_weight_bytes():
    a = io.normalize(io.load_model(DIGITS_MODEL))
    b, _ = optimize(a, "kmeans(bits=4)")
    d = diff_models(a, io.normalize(b))
    assert ("CodebookConv" in {op for _, op in d.added}) and d.op_counts["Conv"][1] < d.op_counts["Conv"][0]
    assert d.weight_bytes[1] < d.weight_bytes[0] / 4
    assert d.serialized_bytes[1] < d.serialized_bytes[0]


def test_cli_diff_writes_the_same_numbers_as_json(tmp_path, capsys):
    out = tmp_path / "b.onnx"
    assert main(["optimize", str(DIGITS_MODEL), str(out), "--passes", "fuse-bn", "-q"]) == 0
    js = tmp_path / "d.json"
    assert main(["diff", str(DIGITS_MODEL), str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(js.read_text())
    d = diff_models(io.normalize(io.load_model(DIGITS_MODEL)), io.normalize(io.load_model(out)))
    assert data["op_counts"] == {k: list(v) for k, v in d.op_counts.items()}
    assert [tuple(r) for r in data["removed"]] == d.removed
    assert "removed" in printed and "BatchNormalization" in printed


def test_layers_replaced_inside_if_and_loop_bodies_are_listed():
    from tests.support.models import control_flow_layers

    model = control_flow_layers()
    out, _ = optimize(model, "kmeans(bits=4)")
    d = diff_models(model, out)
    assert d.op_counts["Conv"] == (2, 0) and d.op_counts["CodebookConv"] == (0, 2)
    assert d.op_counts["MatMul"] == (4, 2) and d.op_counts["Gemm"] == (1, 0)  # the shared MatMuls stay
    assert d.op_counts["CodebookMatMul"] == (0, 3)
    assert {name for name, _ in d.removed} >= {"then_conv", "else_conv", "then_gemm", "loop_matmul"}
    assert d.weight_bytes[1] < d.weight_bytes[0] / 2
