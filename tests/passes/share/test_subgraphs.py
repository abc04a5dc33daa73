"""The weight-encoding passes on layers inside If branches and Loop bodies (Silero VAD keeps its layers in If
branches): every body layer is encoded where it lives, shared weights are left alone with a reason, the model
passes the checker and computes what the encoding says, on both branches."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.support.models import control_flow_feeds, control_flow_layers
from tests.support.run import outputs, run_pipeline

BODY_LAYERS = {"then_conv", "then_gemm", "else_conv", "else_matmul", "loop_matmul"}
SHARED = {"shared_then_matmul", "shared_else_matmul"}
EVEN16 = np.linspace(-1.0, 1.0, 16)  # 16 evenly spaced values: a 16-entry codebook holds them exactly
POW2 = [0.0, *(s * 2.0**-k for s in (1, -1) for k in range(7))]  # 0 and +-2^0..2^-6: pow2(bits=4)'s levels


def _compress(spec: str, model: onnx.ModelProto | None = None, calib=None):
    model = model if model is not None else control_flow_layers()
    out, report = run_pipeline(model, spec, calib=calib)
    onnx.checker.check_model(out, full_check=True)
    return model, out, report.passes[-1]


def _body_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    found, stack = [], [n for n in model.graph.node]
    while stack:
        n = stack.pop()
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                found.extend(g.node)
                stack.extend(g.node)
    return found


def _body_inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    found = {}
    stack = list(model.graph.node)
    while stack:
        n = stack.pop()
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                found.update({i.name: numpy_helper.to_array(i) for i in g.initializer})
                stack.extend(g.node)
    return found


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize(
    ("spec", "levels", "ops"),
    [
        # float32 codebooks: the k-means fit holds the weights exactly (float16 storage would round the values)
        ("kmeans(bits=4,group-size=0,codebook-dtype=float32)", EVEN16, {"CodebookConv", "CodebookMatMul"}),
        ("pow2(bits=4)", POW2, {"CodebookConv", "CodebookMatMul"}),
    ],
)
def test_codebooks_holding_the_weights_encode_body_layers_losslessly(spec, levels, ops):
    model, out, res = _compress(spec, control_flow_layers(levels=levels))
    assert {r.name for r in res.layers} == BODY_LAYERS
    assert all(r.error == 0.0 for r in res.layers), [(r.name, r.error) for r in res.layers]
    assert {r.name: r.extra["subgraph"].split()[0] for r in res.layers} == {
        "then_conv": "If",
        "then_gemm": "If",
        "else_conv": "If",
        "else_matmul": "If",
        "loop_matmul": "Loop",
    }
    body_ops = {n.op_type for n in _body_nodes(out) if n.domain == "com.onnxcomp"}
    assert body_ops == ops
    assert not any(n.domain == "com.onnxcomp" for n in out.graph.node)  # written where the layers live
    assert any(o.domain == "com.onnxcomp" for o in out.opset_import)
    for flag in (True, False):  # both branches
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        native = outputs(out, feeds, runtime=True)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=f"{name} flag={flag}")
            np.testing.assert_allclose(native[name], got[name], rtol=1e-5, atol=1e-5, err_msg=f"{name} native")


@pytest.mark.parametrize(
    ("spec", "bound"),
    [("kmeans(bits=3)", 0.25), ("pow2(bits=4)", 0.4), ("ternary", 0.8), ("kmeans(bits=4)", 0.15), ("binary", 0.65)],
)
def test_lossy_encodings_of_body_layers_stay_within_their_weight_error(spec, bound):
    model, out, res = _compress(spec)
    assert {r.name for r in res.layers} == BODY_LAYERS
    skips = {s.node: s.reason for s in res.skips}
    for name in SHARED:
        assert "shared" in skips[name], skips
    worst = max(r.error for r in res.layers)
    assert 0.0 < worst < bound
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        ref, got = outputs(model, feeds), outputs(out, feeds)
        native = outputs(out, feeds, runtime=True)
        np.testing.assert_array_equal(got["shared"], ref["shared"])  # the shared weight is untouched
        for name in ("conv", "fc", "loop"):
            err = _rel(ref[name], got[name])
            # a layer's output error is about its weight error (the loop compounds 3 trips through tanh)
            assert 0.0 < err < 3 * bound, (name, flag, err)
            np.testing.assert_allclose(native[name], got[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_prune_weights_zeroes_the_smallest_body_weights_in_place():
    model, out, res = _compress("prune-weights(ratio=0.5)")
    assert {r.name for r in res.layers} == BODY_LAYERS
    before = {**_body_inits(model), **{i.name: numpy_helper.to_array(i) for i in model.graph.initializer}}
    for n in _body_nodes(model):
        if n.op_type == "Constant":
            before[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    after = {**_body_inits(out), **{i.name: numpy_helper.to_array(i) for i in out.graph.initializer}}
    for name in ("then_conv_w", "then_fc_w", "outer_conv_w", "else_fc_w", "loop_w"):
        w, p = before[name], after[name]
        kept = p != 0
        assert kept.sum() == w.size - round(0.5 * w.size), name
        np.testing.assert_array_equal(p[kept], w[kept])  # kept weights bit-identical
        assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min()  # the smallest magnitudes went
    np.testing.assert_array_equal(after["shared_w"], before["shared_w"])
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        np.testing.assert_array_equal(outputs(out, feeds)["shared"], outputs(model, feeds)["shared"])


def test_calibration_reaches_layers_in_branches_and_loop_bodies():
    calib = control_flow_feeds(True, seed=5)
    _, _, res = _compress("kmeans(bits=4,sequential=false)", calib=calib)
    decisions = {r.name: r.decision for r in res.layers}
    assert set(decisions) == BODY_LAYERS
    # the If branches read x and v from the main graph; the Loop body's MatMul reads the loop-carried h, captured
    # at every trip (a scan output of the body): all refined on the data
    for name in BODY_LAYERS:
        assert "lsq codebook" in decisions[name], decisions
    assert "layers_data_free_subgraph" not in res.counters


def test_budget_mode_measures_body_layers_sensitivity_on_the_model_output():
    calib = control_flow_feeds(False, seed=3)
    model, out, res = _compress("kmeans(target-bits=4,candidate-bits=2;4;8)", calib=calib)
    assert {r.name for r in res.layers} == BODY_LAYERS
    assert res.counters["budget_bits"] <= 4.0 * 1.01
    assert res.counters["budget_predicted_error"] > 0  # measured on the outputs (body weights fed as inputs)
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        got = outputs(out, feeds)
        assert _rel(outputs(model, feeds)["fc"], got["fc"]) < 0.5


def _if_matmuls(k: int, n: int, bits: int, seed: int) -> onnx.ModelProto:
    """y = If(flag, X @ W_then, Relu(X) @ W_else), each W [k, n] drawn from 2**bits evenly spaced values."""
    rng = np.random.default_rng(seed)
    levels = np.linspace(-1.0, 1.0, 1 << bits).astype(np.float32)

    def branch(name: str, relu: bool) -> onnx.GraphProto:
        nodes = [helper.make_node("Relu", ["x"], [f"{name}_r"])] if relu else []
        src = f"{name}_r" if relu else "x"
        nodes.append(helper.make_node("MatMul", [src, f"{name}_w"], [f"{name}_y"], name=f"{name}_mm"))
        w = levels[rng.integers(0, len(levels), (k, n))]
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [5, n])
        return helper.make_graph(nodes, name, [], [out], [numpy_helper.from_array(w, f"{name}_w")])

    g = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("t", False), else_branch=branch("e", True))],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, k]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, n])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(9, 40),
    n=st.integers(9, 40),
    bits=st.integers(2, 4),
    seed=st.integers(0, 1000),
)
def test_property_branch_layers_with_at_most_2_bits_values_are_encoded_exactly(k, n, bits, seed):
    model = _if_matmuls(k, n, bits, seed)
    _, out, res = _compress(f"kmeans(bits={bits},group-size=0,codebook-dtype=float32)", model)  # exact values
    encoded = {r.name for r in res.layers}
    skipped = {s.node for s in res.skips}
    assert encoded | skipped >= {"t_mm", "e_mm"}
    assert all(r.error == 0.0 for r in res.layers)
    x = np.random.default_rng(seed).standard_normal((5, k)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        np.testing.assert_allclose(outputs(out, feeds)["y"], outputs(model, feeds)["y"], rtol=1e-5, atol=1e-4)


def test_calibration_reaches_layers_inside_the_branch_the_data_takes():
    """else: Relu(x) @ W_e reads a tensor computed inside its branch: captured (through the If) when the
    calibration data takes that branch, data-free when it does not."""
    model = _if_matmuls(24, 20, 4, seed=3)
    x = np.random.default_rng(4).standard_normal((5, 24)).astype(np.float32)
    spec = "kmeans(bits=3,compensate=false,sequential=false)"
    else_feeds = {"x": x, "flag": np.array(False)}
    ref = outputs(model, else_feeds)["y"]
    errors = {}
    for flag, data_free in ((False, 0), (True, 1)):
        _, out, res = _compress(spec, model, calib={"x": x, "flag": np.array(flag)})
        decisions = {r.name: r.decision for r in res.layers}
        assert "lsq codebook" in decisions["t_mm"]  # reads the main graph's x: always captured
        assert ("lsq codebook" in decisions["e_mm"]) == (not flag), decisions
        assert res.counters.get("layers_data_free_subgraph", 0) == data_free
        errors[flag] = _rel(ref, outputs(out, else_feeds)["y"])
    # the codebook fitted to the else branch's captured input gives it the lower output error on that input
    assert 0 < errors[False] < errors[True]


def test_huffman_codes_the_packed_codes_of_body_layers_losslessly():
    model = _if_matmuls(256, 192, 4, seed=5)
    encoded, _ = run_pipeline(model, "prune-weights(ratio=0.9),kmeans(bits=4,sparse=never)")
    for spec in ("huffman(min-gain=1)", "kmeans-store"):
        if spec == "kmeans-store":
            out, report = run_pipeline(model, "prune-weights(ratio=0.9),kmeans(bits=4,sparse=never,huffman=store)")
            res = report.passes[-1]
            assert res.counters["bytes_stored"] < res.counters["bytes_packed"]
        else:
            out, report = run_pipeline(encoded, spec)
            assert {r.name for r in report.passes[-1].layers} == {n.name for n in _body_nodes(encoded) if n.domain}
        onnx.checker.check_model(out, full_check=True)
        decoders = [n for n in _body_nodes(out) if n.op_type in ("HuffmanDecode", "RunLengthDecode")]
        assert len({n.op_type for n in decoders}) >= 1 and len(decoders) >= 2  # in both branches
        assert not any(n.op_type == "HuffmanDecode" for n in out.graph.node)
        assert out.ByteSize() < encoded.ByteSize()
        x = np.random.default_rng(6).standard_normal((5, 256)).astype(np.float32)
        for flag in (True, False):
            feeds = {"x": x, "flag": np.array(flag)}
            want = outputs(encoded, feeds)["y"]
            np.testing.assert_array_equal(outputs(out, feeds)["y"], want)
            np.testing.assert_allclose(outputs(out, feeds, runtime=True)["y"], want, rtol=1e-5, atol=1e-4)


def test_inline_writes_standard_ops_inside_the_bodies():
    model = control_flow_layers()
    _, ref, _ = _compress("kmeans(bits=4)", model)
    _, out, res = _compress("kmeans(bits=4,inline=true)", model)
    assert res.counters["functions_inlined"] == len(BODY_LAYERS)
    assert not out.functions and all(n.domain in ("", "ai.onnx") for n in _body_nodes(out) + list(out.graph.node))
    assert [o.domain for o in out.opset_import] == [""]
    for flag in (True, False):
        feeds = control_flow_feeds(flag)
        want, got = outputs(ref, feeds), outputs(out, feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_budgets_leave_layers_the_calibration_data_never_reaches_at_the_default():
    """The calibration data takes the then branch: the else branch's layer has zero measured output error at
    every candidate, which would give it the fewest bits / the most zeros (silently breaking the other branch)."""
    model = _if_matmuls(64, 48, 4, seed=7)
    calib = {"x": np.random.default_rng(8).standard_normal((5, 64)).astype(np.float32), "flag": np.array(True)}
    _, _, res = _compress("kmeans(target-bits=3.5,candidate-bits=2;3;4;8,bits=4)", model, calib=calib)
    bits = {r.name: r.extra["bits"] for r in res.layers}
    assert bits["e_mm"] == 4 and res.counters["budget_layers_not_reached"] == 1
    _, _, res = _compress("prune-weights(target-sparsity=0.6)", model, calib=calib)
    sparsity = {r.name: r.extra["sparsity"] for r in res.layers}
    assert abs(sparsity["e_mm"] - 0.6) < 0.01 and res.counters["budget_layers_not_reached"] == 1


def test_a_scan_body_layer_is_encoded_exactly_by_a_codebook_holding_its_weights():
    """state <- Tanh((state + x_t) @ W) over 4 steps (Scan), W [24, 24] from 16 evenly spaced values."""
    rng = np.random.default_rng(9)
    f = TensorProto.FLOAT
    w = EVEN16.astype(np.float32)[rng.integers(0, 16, (24, 24))] / 4
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["sum"]),
            helper.make_node("MatMul", ["sum", "scan_w"], ["mm"], name="scan_matmul"),
            helper.make_node("Tanh", ["mm"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["y_t"]),
        ],
        "body",
        [helper.make_tensor_value_info("s_in", f, [3, 24]), helper.make_tensor_value_info("x_t", f, [3, 24])],
        [helper.make_tensor_value_info("s_out", f, [3, 24]), helper.make_tensor_value_info("y_t", f, [3, 24])],
        [numpy_helper.from_array(w, "scan_w")],
    )
    g = helper.make_graph(
        [helper.make_node("Scan", ["s0", "seq"], ["s_last", "ys"], name="scan", body=body, num_scan_inputs=1)],
        "g",
        [helper.make_tensor_value_info("s0", f, [3, 24]), helper.make_tensor_value_info("seq", f, [4, 3, 24])],
        [helper.make_tensor_value_info("s_last", f, [3, 24]), helper.make_tensor_value_info("ys", f, [4, 3, 24])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _, out, res = _compress("kmeans(bits=4,group-size=0,codebook-dtype=float32)", model)  # exact values
    assert [(r.name, r.extra["subgraph"], r.error) for r in res.layers] == [("scan_matmul", "Scan scan body", 0.0)]
    assert any(n.op_type == "CodebookMatMul" for n in _body_nodes(out))
    feeds = {
        "s0": rng.standard_normal((3, 24)).astype(np.float32),
        "seq": rng.standard_normal((4, 3, 24)).astype(np.float32),
    }
    ref, got, native = outputs(model, feeds), outputs(out, feeds), outputs(out, feeds, runtime=True)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(native[name], ref[name], rtol=1e-5, atol=1e-5)


def test_embedding_tables_inside_branches_become_codebook_gathers():
    """then: Gather(Constant-node table [1200, 16], ids); else: Gather(body initializer table, ids) + 1."""
    rng = np.random.default_rng(11)
    tables = [EVEN16.astype(np.float32)[rng.integers(0, 16, (1200, 16))] for _ in range(2)]
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [
            helper.make_node("Constant", [], ["tab_t"], name="tab_t_const", value=numpy_helper.from_array(tables[0])),
            helper.make_node("Gather", ["tab_t", "ids"], ["emb_t"], name="gather_t"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("emb_t", f, [2, 5, 16])],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Gather", ["tab_e", "ids"], ["g_e"], name="gather_e"),
            helper.make_node("Add", ["g_e", "one"], ["emb_e"], name="add_e"),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("emb_e", f, [2, 5, 16])],
        [numpy_helper.from_array(tables[1], "tab_e"), numpy_helper.from_array(np.float32(1.0), "one")],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="if0", then_branch=then_g, else_branch=else_g)],
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", f, [2, 5, 16])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _, out, res = _compress("kmeans(bits=4,group-size=0,codebook-dtype=float32)", model)  # exact values
    rows = {r.name: r for r in res.layers}
    assert set(rows) == {"gather_t", "gather_e"} and all(r.error == 0.0 for r in rows.values())
    assert {r.extra["subgraph"] for r in rows.values()} == {"If if0 then_branch", "If if0 else_branch"}
    assert sum(n.op_type == "CodebookGather" for n in _body_nodes(out)) == 2
    assert out.ByteSize() < model.ByteSize() / 5
    ids = rng.integers(0, 1200, (2, 5)).astype(np.int64)
    for flag in (True, False):
        feeds = {"ids": ids, "flag": np.array(flag)}
        want = outputs(model, feeds)["y"]
        np.testing.assert_array_equal(outputs(out, feeds)["y"], want)
        np.testing.assert_array_equal(outputs(out, feeds, runtime=True)["y"], want)
