"""Embedding tables: kmeans writes constant Gather tables as CodebookGather; its function body gathers and
decodes only the indexed rows and equals Gather on the numpy-decoded table (indices of any rank, negative
ones included); the bytes the report gives are the bytes stored."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops as enc
from onnxcomp.api import optimize
from tests.support.compressed import run


def _embedding_model(v: int = 300, d: int = 20, seed: int = 0, index_shape=("N", "L")):
    """ids -> Gather(table) -> MatMul: a token embedding followed by a projection."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((v, d)).astype(np.float32)
    w = (rng.standard_normal((d, 7)) / 4).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed", axis=0),
        helper.make_node("MatMul", ["emb", "w"], ["y"], name="proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, list(index_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*index_shape, 7])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), table


@pytest.mark.parametrize("bits,group", [(4, 0), (3, 64), (8, 0), (2, 1)])
def test_codebook_gather_equals_gather_on_the_decoded_table(bits, group):
    model, table = _embedding_model(v=301, d=19)
    out, report = optimize(model, f"kmeans(bits={bits},group-size={group},min-params=0)")
    nodes = [n for n in out.graph.node if n.domain == enc.DOMAIN]
    assert [n.op_type for n in nodes if n.op_type == "CodebookGather"] == ["CodebookGather"]
    decoded = enc.decode_model(out)
    assert not any(n.domain == enc.DOMAIN for n in decoded.graph.node)
    rng = np.random.default_rng(1)
    ids = rng.integers(-301, 301, size=(3, 11)).astype(np.int64)  # negative indices count from the end
    got = run(out, {"ids": ids})[0]
    want = run(decoded, {"ids": ids})[0]
    np.testing.assert_array_equal(got, want)
    # the decoded table is the k-means table: every row within the codebook's reach of the original
    dec_table = numpy_helper.to_array(next(i for i in decoded.graph.initializer if i.dims == [301, 19]))
    rel = np.linalg.norm(dec_table - table) / np.linalg.norm(table)
    assert rel < {2: 0.45, 3: 0.2, 4: 0.12, 8: 0.01}[bits]
    row = next(r for r in report.passes[0].layers if r.op == "Gather")
    stored = {i.name: numpy_helper.to_array(i).nbytes for i in out.graph.initializer}
    gather = next(n for n in nodes if n.op_type == "CodebookGather")
    assert row.extra["bytes_stored"] == stored[gather.input[0]] + stored[gather.input[1]]


def test_codebook_gather_keeps_the_index_shape():
    model, _ = _embedding_model(index_shape=("A", "B", "C"))
    out, _ = optimize(model, "kmeans(bits=4,min-params=0)")
    ids = np.array([[[0, 5], [299, -1]], [[7, 7], [1, 2]]], np.int64)
    assert run(out, {"ids": ids})[0].shape == (2, 2, 2, 7)
    scalar_model, _ = _embedding_model(index_shape=())
    s_out, _ = optimize(scalar_model, "kmeans(bits=4,min-params=0)")
    assert run(s_out, {"ids": np.array(3, np.int64)})[0].shape == (7,)


def test_embeddings_false_leaves_tables_alone_and_shared_tables_are_kept():
    model, _ = _embedding_model()
    out, _ = optimize(model, "kmeans(bits=4,embeddings=false,min-params=0)")
    assert not any(n.op_type == "CodebookGather" for n in out.graph.node)
    # a table also read by another node (here a second Gather) stays a float Gather
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.append(helper.make_node("Gather", ["table", "ids2"], ["emb2"], name="embed2", axis=0))
    shared.graph.input.append(helper.make_tensor_value_info("ids2", TensorProto.INT64, ["M"]))
    shared.graph.output.append(helper.make_tensor_value_info("emb2", TensorProto.FLOAT, ["M", 20]))
    out2, _ = optimize(shared, "kmeans(bits=4,min-params=0)")
    assert not any(n.op_type == "CodebookGather" for n in out2.graph.node)
