"""Recurrent weights: kmeans stores the W and R constants of LSTM / GRU / RNN nodes as codes decoded in the graph
(CodebookGather of every row, reshaped back). A weight of at most 2**bits distinct values is stored exactly, so
the model's outputs equal the original's; otherwise the error is bounded by the codebook's; the bytes the report
gives are the bytes stored; shared or computed weights are left as they are, with a reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops as enc
from onnxcomp.api import optimize
from tests.support.compressed import run

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _recurrent_model(op: str, hidden: int = 48, inputs: int = 29, direction: str = "forward", levels: int = 0):
    """x [T, N, I] -> op -> Y; W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] constants. ``levels``: W and R drawn
    from that many distinct values (0: continuous)."""
    rng = np.random.default_rng(0)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]

    def draw(*shape):
        if levels:
            values = np.arange(-levels // 2, levels - levels // 2) / 32.0  # exact in a float16 codebook
            return rng.choice(values, size=shape).astype(np.float32)
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    w, r = draw(d, g * hidden, inputs), draw(d, g * hidden, hidden)
    b = (rng.standard_normal((d, 2 * g * hidden)) * 0.1).astype(np.float32)
    node = helper.make_node(op, ["x", "W", "R", "B"], ["Y", "Y_h"], name="rnn", hidden_size=hidden, direction=direction)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", inputs])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", d, "N", hidden]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [d, "N", hidden]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), w, r


def _feeds(inputs: int = 29):
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((9, 3, inputs)).astype(np.float32)}  # odd sizes: 9 steps, batch 3


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_weights_of_few_values_are_stored_exactly(op, direction):
    model, _, _ = _recurrent_model(op, direction=direction, levels=16)
    out, report = optimize(model, "kmeans(bits=4,min-params=0)")
    gathers = [n for n in out.graph.node if n.op_type == "CodebookGather"]
    assert len(gathers) == 2 and all(n.domain == enc.DOMAIN for n in gathers)
    assert {i.name for i in out.graph.initializer}.isdisjoint({"W", "R"})  # no float copy left
    # lossless here: 16 distinct values, 16 codebook entries (onnxruntime's optimizations off)
    for got, want in zip(run(out, _feeds()), run(model, _feeds())):
        np.testing.assert_array_equal(got, want)
    decoded = enc.decode_model(out)
    for got, want in zip(run(decoded, _feeds()), run(model, _feeds())):
        np.testing.assert_array_equal(got, want)
    rows = {r.name: r for r in report.passes[0].layers}
    assert rows["rnn.W"].decision == f"kmeans 4-bit {op} W" and rows["rnn.R"].decision == f"kmeans 4-bit {op} R"
    assert rows["rnn.W"].error == 0.0


@pytest.mark.parametrize("bits,bound", [(8, 0.01), (4, 0.15), (3, 0.3)])
def test_continuous_weights_lose_within_the_codebooks_reach(bits, bound):
    model, w, r = _recurrent_model("LSTM", hidden=32, inputs=21)
    out, report = optimize(model, f"kmeans(bits={bits},min-params=0)")
    decoded = enc.decode_model(out)
    inits = {i.name: numpy_helper.to_array(i) for i in decoded.graph.initializer}
    # the decoded rows [D*G*H, K] (the Reshape back to [D, G*H, K] stays in the graph)
    (w_hat,) = [v.reshape(w.shape) for v in inits.values() if v.shape == (w.size // w.shape[-1], w.shape[-1])]
    (r_hat,) = [v.reshape(r.shape) for v in inits.values() if v.shape == (r.size // r.shape[-1], r.shape[-1])]
    assert np.linalg.norm(w_hat - w) / np.linalg.norm(w) < bound
    assert np.linalg.norm(r_hat - r) / np.linalg.norm(r) < bound
    y, y_ref = run(out, _feeds(21))[0], run(model, _feeds(21))[0]
    assert np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref) < 2 * bound
    # the bytes the report gives are the bytes stored: the codebook and the packed codes of each weight
    stored = {i.name: numpy_helper.to_array(i).nbytes for i in out.graph.initializer}
    for row in (x for x in report.passes[0].layers if x.op == "LSTM"):
        (node,) = [n for n in out.graph.node if n.op_type == "CodebookGather" and n.name == row.extra["node"]]
        assert row.extra["bytes_stored"] == stored[node.input[0]] + stored[node.input[1]]
        rows, k = (
            (w if row.name.endswith(".W") else r).reshape(-1, (w if row.name.endswith(".W") else r).shape[-1]).shape
        )
        assert stored[node.input[1]] == rows * -(-k * bits // 8)  # bit-packed rows
        assert row.extra["bytes_stored"] < row.extra["bytes_before"]


def test_recurrent_false_shared_and_computed_weights_are_left_alone():
    model, _, _ = _recurrent_model("GRU")
    out, _ = optimize(model, "kmeans(bits=4,recurrent=false,min-params=0)")
    assert not any(n.op_type == "CodebookGather" for n in out.graph.node)
    # R also read by a second node: left float, the report says why; W still encoded
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.append(helper.make_node("Add", ["R", "z"], ["zR"], name="other"))  # data-dependent: not folded
    shared.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 144, 48]))
    shared.graph.output.append(helper.make_tensor_value_info("zR", TensorProto.FLOAT, [1, 144, 48]))
    out2, report = optimize(shared, "kmeans(bits=4,min-params=0)")
    assert [n.op_type for n in out2.graph.node].count("CodebookGather") == 1
    assert any(s.node == "rnn.R" and "shared" in s.reason for s in report.passes[0].skips)
    # W computed from the input: a reason, no crash
    computed = onnx.ModelProto()
    computed.CopyFrom(model)
    w = next(i for i in computed.graph.initializer if i.name == "W")
    computed.graph.initializer.remove(w)
    computed.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    out3, report3 = optimize(computed, "kmeans(bits=4,min-params=0)")
    assert any(s.node == "rnn.W" and "not a constant" in s.reason for s in report3.passes[0].skips)
    assert [n.op_type for n in out3.graph.node].count("CodebookGather") == 1  # R
