"""Recurrent weights: kmeans stores the W and R constants of LSTM / GRU / RNN nodes as codes decoded in the graph
(CodebookDecode of the rows, reshaped back). A weight of at most 2**bits distinct values is stored exactly, so
the model's outputs equal the original's; otherwise the error is bounded by the codebook's; the bytes the report
gives are the bytes stored; shared or computed weights are left as they are, with a reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops as enc
from onnxcomp.api import optimize
from tests.support import models
from tests.support.compressed import run

GATES = models.RECURRENT_GATES


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_weights_of_few_values_are_stored_exactly(op, direction):
    model, _, _ = models.recurrent(op, direction=direction, levels=16)
    out, report = optimize(model, "kmeans(bits=4,min-params=0)")
    gathers = [n for n in out.graph.node if n.op_type == "CodebookDecode"]
    assert len(gathers) == 2 and all(n.domain == enc.DOMAIN for n in gathers)
    assert {i.name for i in out.graph.initializer}.isdisjoint({"W", "R"})  # no float copy left
    # lossless here: 16 distinct values, 16 codebook entries (onnxruntime's optimizations off)
    for got, want in zip(run(out, models.recurrent_feeds()), run(model, models.recurrent_feeds())):
        np.testing.assert_array_equal(got, want)
    decoded = enc.decode_model(out)
    for got, want in zip(run(decoded, models.recurrent_feeds()), run(model, models.recurrent_feeds())):
        np.testing.assert_array_equal(got, want)
    rows = {r.name: r for r in report.passes[0].layers}
    assert rows["rnn.W"].decision == f"kmeans 4-bit {op} W" and rows["rnn.R"].decision == f"kmeans 4-bit {op} R"
    assert rows["rnn.W"].error == 0.0


@settings(max_examples=12, deadline=None)
@given(
    op=st.sampled_from(sorted(GATES)),
    direction=st.sampled_from(["forward", "reverse", "bidirectional"]),
    hidden=st.integers(33, 70),
    inputs=st.integers(32, 61),  # RNN: 33 x 32 = 1056 weights, over the 1024 a codebook needs
    bits=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_property_few_values_round_trip_exactly(op, direction, hidden, inputs, bits, seed):
    # any recurrent node, shape and width: a weight of at most 2**bits distinct values decodes to itself, and the
    # graph computes what the original does, bit for bit, on odd-sized inputs
    model, _, _ = models.recurrent(op, hidden, inputs, direction, levels=1 << bits, seed=seed)
    out, _ = optimize(model, f"kmeans(bits={bits},min-params=0)")
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") == 2
    for got, want in zip(run(out, models.recurrent_feeds(inputs)), run(model, models.recurrent_feeds(inputs))):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits,bound", [(8, 0.01), (4, 0.15), (3, 0.3)])
def test_continuous_weights_lose_within_the_codebooks_reach(bits, bound):
    model, w, r = models.recurrent("LSTM", hidden=32, inputs=21)
    out, report = optimize(model, f"kmeans(bits={bits},min-params=0)")
    decoded = enc.decode_model(out)
    inits = {i.name: numpy_helper.to_array(i) for i in decoded.graph.initializer}
    # the decoded rows [D*G*H, K] (the Reshape back to [D, G*H, K] stays in the graph)
    (w_hat,) = [v.reshape(w.shape) for v in inits.values() if v.shape == (w.size // w.shape[-1], w.shape[-1])]
    (r_hat,) = [v.reshape(r.shape) for v in inits.values() if v.shape == (r.size // r.shape[-1], r.shape[-1])]
    assert np.linalg.norm(w_hat - w) / np.linalg.norm(w) < bound
    assert np.linalg.norm(r_hat - r) / np.linalg.norm(r) < bound
    y, y_ref = run(out, models.recurrent_feeds(21))[0], run(model, models.recurrent_feeds(21))[0]
    assert np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref) < 2 * bound
    # the bytes the report gives are the bytes stored
    stored = {i.name: numpy_helper.to_array(i).nbytes for i in out.graph.initializer}
    for row in (x for x in report.passes[0].layers if x.op == "LSTM"):
        (node,) = [n for n in out.graph.node if n.op_type == "CodebookDecode" and n.name == row.extra["node"]]
        # codebook, codes and the int64 row indices
        assert row.extra["bytes_stored"] == sum(stored[i] for i in node.input[:3])
        rows, k = (
            (w if row.name.endswith(".W") else r).reshape(-1, (w if row.name.endswith(".W") else r).shape[-1]).shape
        )
        assert stored[node.input[1]] == rows * -(-k * bits // 8)  # bit-packed rows
        assert row.extra["bytes_stored"] < row.extra["bytes_before"]


def test_recurrent_false_shared_and_computed_weights_are_left_alone():
    model, _, _ = models.recurrent("GRU")
    out, _ = optimize(model, "kmeans(bits=4,recurrent=false,min-params=0)")
    assert not any(n.op_type == "CodebookDecode" for n in out.graph.node)
    # R also read by a second node: left float, the report says why; W still encoded
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.append(helper.make_node("Add", ["R", "z"], ["zR"], name="other"))  # data-dependent: not folded
    shared.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 144, 48]))
    shared.graph.output.append(helper.make_tensor_value_info("zR", TensorProto.FLOAT, [1, 144, 48]))
    out2, report = optimize(shared, "kmeans(bits=4,min-params=0)")
    assert [n.op_type for n in out2.graph.node].count("CodebookDecode") == 1
    assert any(s.node == "rnn.R" and "shared" in s.reason for s in report.passes[0].skips)
    # W computed from the input: a reason, no crash
    computed = onnx.ModelProto()
    computed.CopyFrom(model)
    w = next(i for i in computed.graph.initializer if i.name == "W")
    computed.graph.initializer.remove(w)
    computed.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    out3, report3 = optimize(computed, "kmeans(bits=4,min-params=0)")
    assert any(s.node == "rnn.W" and "not cut from a constant" in s.reason for s in report3.passes[0].skips)
    assert [n.op_type for n in out3.graph.node].count("CodebookDecode") == 1  # R


def _branch(w_ih: str, w_hh: str, hidden: int, inputs: int, tag: str, constant=None):
    """If branch: PyTorch's export of an LSTM, the gates of weight_ih / weight_hh reordered by Slices and a Concat
    (i, f, g, o -> i, o, f, c), then Unsqueeze to [1, 4H, K]; ``constant``: weight_ih as a Constant node of the
    branch (else read from the outer scope)."""
    h = hidden
    nodes, inits = [], []
    if constant is not None:
        nodes.append(helper.make_node("Constant", [], [w_ih], value=numpy_helper.from_array(constant, w_ih)))
    for w in (w_ih, w_hh):
        parts = []
        for k, (a, b) in enumerate([(0, h), (3 * h, 4 * h), (h, 2 * h), (2 * h, 3 * h)]):
            s, e = f"{tag}{w}_s{k}", f"{tag}{w}_e{k}"
            inits += [
                numpy_helper.from_array(np.array([a], np.int64), s),
                numpy_helper.from_array(np.array([b], np.int64), e),
            ]
            nodes.append(helper.make_node("Slice", [w, s, e], [f"{tag}{w}_p{k}"]))
            parts.append(f"{tag}{w}_p{k}")
        nodes.append(helper.make_node("Concat", parts, [f"{tag}{w}_cat"], axis=0))
        inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{tag}{w}_ax"))
        nodes.append(helper.make_node("Unsqueeze", [f"{tag}{w}_cat", f"{tag}{w}_ax"], [f"{tag}{w}_3d"]))
    nodes.append(
        helper.make_node("LSTM", ["x", f"{tag}{w_ih}_3d", f"{tag}{w_hh}_3d"], ["", f"{tag}h"], hidden_size=hidden)
    )
    out = helper.make_tensor_value_info(f"{tag}h", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, tag, [], [out], inits)


def _if_model(then, other, inits, hidden: int, inputs: int) -> onnx.ModelProto:
    """c, x [T, N, inputs] -> If(c, then, other) -> h [1, N, hidden]; ``inits``: the main graph's initializers."""
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["h"], then_branch=then, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", inputs]),
        ],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "N", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("held", ["outer", "branch"])
def test_weights_cut_by_layout_ops_inside_if_branches(held):
    # Silero VAD: weight_ih / weight_hh are cut into gates and concatenated again inside If branches, a Constant
    # node of the outer branch or an outer-scope initializer; the weight itself is encoded once, decoded where
    # it was held, and both branches read the decoded weight
    hidden, inputs = 32, 29
    rng = np.random.default_rng(5)
    values = np.arange(-8, 8) / 32.0
    w_ih = rng.choice(values, size=(4 * hidden, inputs)).astype(np.float32)
    w_hh = rng.choice(values, size=(4 * hidden, hidden)).astype(np.float32)
    then = _branch("w_ih", "w_hh", hidden, inputs, "t", constant=w_ih if held == "branch" else None)
    other = _branch("w_ih2" if held == "branch" else "w_ih", "w_hh", hidden, inputs, "e")
    inits = [numpy_helper.from_array(w_hh, "w_hh")]
    inits.append(
        numpy_helper.from_array(w_ih if held == "outer" else w_ih[::-1].copy(), "w_ih" if held == "outer" else "w_ih2")
    )
    model = _if_model(then, other, inits, hidden, inputs)
    out, report = optimize(model, "kmeans(bits=4,min-params=0)")
    for c in (True, False):
        feeds = {**models.recurrent_feeds(inputs), "c": np.array(c)}
        np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])
    encoded = [r for r in report.passes[0].layers if r.op == "LSTM"]
    names = sorted(r.name.split(" ")[0] for r in encoded)
    assert names == (["w_hh", "w_ih", "w_ih2"] if held == "branch" else ["w_hh", "w_ih"])  # each weight once
    main = [n.op_type for n in out.graph.node]
    bodies = {a.name: a.g for a in out.graph.node[main.index("If")].attribute}
    # decoded where the weight was held: a branch's Constant node in that branch; an initializer in the innermost
    # graph enclosing its readers (main for one read by both branches, the else branch for w_ih2)
    counts = [
        [n.op_type for n in g.node].count("CodebookDecode") for g in (bodies["then_branch"], bodies["else_branch"])
    ]
    assert (main.count("CodebookDecode"), *counts) == ((1, 1, 1) if held == "branch" else (2, 0, 0))
    assert not {"w_ih", "w_hh", "w_ih2"} & {i.name for i in out.graph.initializer}


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_budget_allocates_bits_to_recurrent_weights(calibrated):
    # the budget prices W and R like any layer: by the model-output error of each width on the calibration data
    # (the weight swapped in by name, reshaped back to [D, G*H, K]), or by the weight error without data
    model, _, _ = models.recurrent("LSTM", hidden=64, inputs=40)
    calib = {"x": np.random.default_rng(0).standard_normal((9, 16, 40)).astype(np.float32)} if calibrated else None
    out, report = optimize(model, "kmeans(target-bits=3.5,min-params=0)", calib=calib)
    p = report.passes[-1]
    bits = {r.name: r.extra["bits"] for r in p.layers}
    assert set(bits) == {"rnn.W", "rnn.R"} and len(set(bits.values())) == 2  # mixed: the budget sits between
    assert p.counters["budget_bits"] <= 3.5
    assert [n.op_type for n in out.graph.node].count("CodebookDecode") == 2


def _correlated_inputs(steps: int, batch: int, inputs: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs whose features are correlated and of unequal scale (a non-diagonal H, as real activations), small
    enough that the gates do not saturate (saturated, the hidden states are +-1 whatever R's rounding)."""
    mix = np.random.default_rng(5).standard_normal((inputs, inputs)) * 0.5 + np.eye(inputs)
    x = np.random.default_rng(seed).standard_normal((steps, batch, inputs)) @ mix * np.linspace(0.02, 0.3, inputs)
    return {"x": x.astype(np.float32)}


def _relative_error(model: onnx.ModelProto, ref: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    got, want = run(model, feeds)[0], run(ref, feeds)[0]
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize(
    ("op", "direction"), [("LSTM", "bidirectional"), ("LSTM", "reverse"), ("GRU", "forward"), ("RNN", "bidirectional")]
)
@pytest.mark.parametrize("slot", ["W", "R"])
def test_calibrated_rows_are_error_compensated(op, direction, slot):
    # with calibration data the rows of W (inputs x_t) and of R (each direction's previous hidden state) are
    # rounded with GPTQ on the Hessians of those inputs: on held-out inputs the output error is well below plain
    # k-means'. A GRU's R with linear_before_reset=0 multiplies r * h, which the captured states are not: plain.
    model, _, _ = models.recurrent(op, hidden=40, inputs=29, direction=direction)
    calib, held_out = _correlated_inputs(24, 16, 29, 1), _correlated_inputs(17, 5, 29, 2)
    spec = f"kmeans(bits=3,min-params=0,layers={slot})"
    comp, report = optimize(model, spec, calib=calib)
    plain, plain_report = optimize(model, spec.replace(")", ",compensate=false)"), calib=calib)
    row = {r.name: r for r in report.passes[0].layers}[f"rnn.{slot}"]
    assert {r.name: r for r in plain_report.passes[0].layers}[f"rnn.{slot}"].decision == f"kmeans 3-bit {op} {slot}"
    e_comp, e_plain = _relative_error(comp, model, held_out), _relative_error(plain, model, held_out)
    if op == "GRU" and slot == "R":
        assert row.decision.startswith(f"kmeans 3-bit {op} R (plain: GRU R with linear_before_reset=0")
        assert e_comp == pytest.approx(e_plain, rel=1e-6)
        return
    assert row.decision == f"kmeans 3-bit {op} {slot} compensated"
    assert report.passes[0].counters["recurrent_compensated"] == 1
    assert e_comp < 0.95 * e_plain, (e_comp, e_plain)  # (measured: W 0.61-0.74, R 0.73-0.92 of plain)


def test_recurrent_rows_without_enough_calibration_steps_stay_plain():
    # fewer captured steps than inputs per row: H is rank-deficient, GPTQ would fit the steps (as for a layer)
    model, _, _ = models.recurrent("LSTM", hidden=40, inputs=29)
    calib = _correlated_inputs(4, 5, 29, 1)
    out, report = optimize(model, "kmeans(bits=3,min-params=0,layers=W)", calib=calib)
    row = report.passes[0].layers[0]
    assert row.decision == "kmeans 3-bit LSTM W (plain: fewer calibration steps than inputs)"
    assert report.passes[0].counters["recurrent_plain"] == 1
    plain, _ = optimize(model, "kmeans(bits=3,min-params=0,layers=W,compensate=false)", calib=calib)
    assert {i.name: i.raw_data for i in out.graph.initializer} == {i.name: i.raw_data for i in plain.graph.initializer}


@pytest.mark.parametrize("cut", ["gates", "transposed", "last-axis"])
def test_calibrated_weights_cut_into_gates_are_compensated(cut):
    # Silero VAD: weights cut into W / R by Slices along their rows (PyTorch's gate reorder; Slices without axes)
    # inside If branches multiply the same inputs: compensated with the Hessians of the branch the calibration data
    # takes (w_hh: read by both branches' LSTMs, the else one never run: its states are not captured). A weight
    # whose inputs axis a Transpose moves, or a Slice cuts, is rounded plain, and the report says why.
    hidden, inputs = 32, 29
    rng = np.random.default_rng(2)
    w_ih = (rng.standard_normal((4 * hidden, inputs)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) * 0.3).astype(np.float32)
    then = _branch("w_ih", "w_hh", hidden, inputs, "t")
    then.node[-1].output[0] = "tY"  # the hidden states, R's inputs
    other = _branch("w_ih2", "w_hh", hidden, inputs, "e")
    other.node[-1].output[0] = "eY"
    inits = [numpy_helper.from_array(w_hh, "w_hh"), numpy_helper.from_array(w_ih[::-1].copy(), "w_ih2")]
    stored = {"gates": "w_ih", "transposed": "w_ih_t", "last-axis": "w_ih_p"}[cut]
    if cut == "gates":
        inits.append(numpy_helper.from_array(w_ih, "w_ih"))
    elif cut == "transposed":  # stored [K, 4H], transposed into the gates' rows
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w_ih.T), stored))
        then.node.insert(0, helper.make_node("Transpose", [stored], ["w_ih"], perm=[1, 0]))
    else:  # stored with 3 more inputs, cut off along the inputs axis
        inits.append(numpy_helper.from_array(np.pad(w_ih, ((0, 0), (0, 3))), stored))
        then.initializer.extend(
            numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((0, "p0"), (inputs, "p1"), (1, "p2"))
        )
        then.node.insert(0, helper.make_node("Slice", [stored, "p0", "p1", "p2"], ["w_ih"]))
    model = _if_model(then, other, inits, hidden, inputs)
    calib = {**_correlated_inputs(24, 16, inputs, 1), "c": np.array(True)}
    held_out = {**_correlated_inputs(17, 5, inputs, 2), "c": np.array(True)}
    comp, report = optimize(model, "kmeans(bits=3,min-params=0)", calib=calib)
    plain, _ = optimize(model, "kmeans(bits=3,min-params=0,compensate=false)", calib=calib)
    rows = {r.name.split(" ")[0]: r.decision for r in report.passes[0].layers}
    assert rows["w_hh"] == "kmeans 3-bit LSTM R compensated"
    # (the else branch's W reads the outer input x, captured whichever branch runs)
    assert rows["w_ih2"] == "kmeans 3-bit LSTM W compensated"
    if cut == "gates":
        assert rows[stored] == "kmeans 3-bit LSTM W compensated"
        assert _relative_error(comp, model, held_out) < 0.95 * _relative_error(plain, model, held_out)
    else:
        assert rows[stored] == "kmeans 3-bit LSTM W (plain: cut into the weight by ops that may move its inputs axis)"


def test_calibrated_r_with_an_initial_state_input():
    # R's Hessian also sums the initial state (initial_h, a graph input here: a streaming model's carried state):
    # captured with the states Y, compensated, and the model still runs on held-out states
    hidden, inputs = 40, 29
    model, _, _ = models.recurrent("LSTM", hidden=hidden, inputs=inputs, direction="bidirectional")
    node = model.graph.node[0]
    node.input.extend(["", "h0"])  # sequence_lens, initial_h
    model.graph.input.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "N", hidden]))
    onnx.checker.check_model(model)

    def feeds(steps: int, batch: int, seed: int) -> dict[str, np.ndarray]:
        h0 = np.random.default_rng(seed + 10).standard_normal((2, batch, hidden)) * 0.05
        return {**_correlated_inputs(steps, batch, inputs, seed), "h0": h0.astype(np.float32)}

    comp, report = optimize(model, "kmeans(bits=3,min-params=0,layers=R)", calib=feeds(24, 16, 1))
    assert report.passes[0].layers[0].decision == "kmeans 3-bit LSTM R compensated"
    plain, _ = optimize(model, "kmeans(bits=3,min-params=0,layers=R,compensate=false)", calib=feeds(24, 16, 1))
    held_out = feeds(17, 5, 2)
    assert _relative_error(comp, model, held_out) < _relative_error(plain, model, held_out)
