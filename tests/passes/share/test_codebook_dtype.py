"""The stored type of the share passes' codebooks (ShareOptions.codebook_dtype): the auto rule, the errors and
sizes reported for what is stored (float16 entries counted 2 bytes, errors of the float16 values)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import ops
from onnxcomp.api import optimize
from passes.share._emit import FP16_ROW_TOLERANCE, INT8_MAX_ADDED, codebook_dtype, int8_rows
from tests.support.compressed import custom_nodes, decoded_weights, make_model, run, stored_inputs


def test_auto_rule_refuses_what_float16_cannot_hold():
    assert codebook_dtype(np.array([[0.1, -0.7, 3.0]]), "auto") == "float16"
    assert codebook_dtype(np.array([[1e5, 1.0]]), "auto") == "float32"  # past 65504: inf in float16
    # a row of 1e-8-scale entries: float16 flushes them to (sub)normals far from their values
    assert codebook_dtype(np.array([[0.5, 1.0], [1e-8, 3e-8]]), "auto") == "float32"
    # tiny entries next to large ones in the same row: within 2^-10 of the row's largest
    assert codebook_dtype(np.array([[1.0, 1e-8, -2e-9]]), "auto") == "float16"
    assert codebook_dtype(np.array([[np.nan, 1.0]]), "auto") == "float32"
    assert codebook_dtype(np.array([[1e5]]), "float16") == "float16"  # asked for: written as asked
    assert codebook_dtype(np.array([[0.5]]), "float32") == "float32"


def _tables(limit: float) -> st.SearchStrategy[np.ndarray]:
    """Codebook tables [rows, entries] of finite normal values in [-limit, limit] (a test scales them by a power of
    two)."""
    return hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=16),
        elements=st.floats(-limit, limit, allow_nan=False, allow_subnormal=False),
    )


@settings(max_examples=200, deadline=None)
@given(_tables(1e6), st.integers(-40, 20))
def test_auto_rule_float16_only_within_the_row_tolerance(table, exponent):
    table = table * 2.0**exponent
    if codebook_dtype(table, "auto") == "float16":
        half = table.astype(np.float16).astype(np.float64)
        assert np.isfinite(half).all()
        err = np.abs(table - half).max(axis=1)
        assert (err <= FP16_ROW_TOLERANCE * np.abs(table).max(axis=1)).all()
    # float16 values (normal, in range) always pass: they round to themselves
    half = np.clip(table, -60000, 60000).astype(np.float16).astype(np.float64)
    rows_ok = (np.abs(half).max(axis=1) >= 2.0**-14).all() if half.size else True
    if rows_ok:
        small = np.abs(half) < 2.0**-14  # subnormal entries are exact too, only their row's scale matters
        assert codebook_dtype(np.where(small, 0.0, half), "auto") == "float16"


def _mlp(rng):
    w0 = rng.standard_normal((64, 48)).astype(np.float32)
    w1 = (rng.standard_normal((48, 10)) * 1e5).astype(np.float32)  # past float16's range: float32
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="fc0"),
        helper.make_node("MatMul", ["h", "w1"], ["y"], name="fc1"),
    ]
    return make_model(nodes, {"w0": w0, "w1": w1}, [("x", ["N", 64])], [("y", ["N", 10])])


def _conv(rng):
    w = rng.standard_normal((16, 1, 5, 5)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=16, pads=[2, 2, 2, 2])
    return make_model([node], {"w": w}, [("x", [1, 16, 8, 8])], [("y", None)])


@pytest.mark.parametrize(
    "spec",
    [
        "kmeans(bits=4,group_size=1)",
        "kmeans(bits=8)",
        "kmeans(bits=3,group_size=1,block_size=16)",
        "binary",
        "pow2(bits=4)",
        "ternary",
    ],
)
@pytest.mark.parametrize("build", [_mlp, _conv])
def test_reported_bytes_are_on_disk_and_errors_are_of_the_stored_codebook(spec, build):
    rng = np.random.default_rng(5)
    model = build(rng)
    out, report = optimize(model, spec.replace(")", ",min_params=0)") if ")" in spec else f"{spec}(min_params=0)")
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    by_node = {n.name: n for n in out.graph.node}
    rows = report.passes[0].layers
    assert rows
    for row in rows:
        node = by_node[row.extra["node"]]
        assert row.extra["bytes_stored"] == sum(a.nbytes for i in node.input[1:] for a in stored_inputs(out, i))
        if node.input[1] in inits:
            book = inits[node.input[1]]
            if node.op_type != "TernaryMatMul" and np.abs(book).max() < 1e4:
                assert book.dtype == np.float16, (node.name, book.dtype)
        else:  # int8 entries and float16 row scales (auto, k-means codebooks of several rows)
            assert spec.startswith("kmeans")
            assert sorted(str(a.dtype) for a in stored_inputs(out, node.input[1])) == ["float16", "int8"]
    assert report.passes[0].counters["bytes_stored"] == sum(r.extra["bytes_stored"] for r in rows)
    ops.validate_model(out)


def test_error_reported_is_that_of_the_float16_values():
    """A per-channel 2-bit codebook: the decoded weights the error is reported on are the float16 values."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, [("x", ["N", 40])], [("y", ["N", 30])]
    )
    out, report = optimize(model, "kmeans(bits=2,group_size=1,codebook_dtype=float16)")
    (node,) = custom_nodes(out)
    book = next(t for t in out.graph.initializer if t.name == node.input[1])
    assert book.data_type == TensorProto.FLOAT16
    w_hat = decoded_weights(out)[node.output[0]]
    err = float(np.linalg.norm(w.astype(np.float64) - w_hat) / np.linalg.norm(w.astype(np.float64)))
    (row,) = report.passes[0].layers
    assert row.error == pytest.approx(err, rel=1e-6)
    x = {"x": rng.standard_normal((3, 40)).astype(np.float32)}
    np.testing.assert_array_equal(run(out, x)[0], run(ops.decode_model(out), x)[0])


@settings(max_examples=200, deadline=None)
@given(_tables(1e4), st.integers(-30, 10))
def test_int8_rows_are_row_scales_times_int8_entries_within_half_a_step(table, exponent):
    table = (table * 2.0**exponent).astype(np.float32).astype(np.float64)  # codebooks are float32
    rows = int8_rows(table)
    assert rows is not None
    assert rows.q.dtype == np.int8 and np.abs(rows.q.astype(np.int32)).max(initial=0) <= 127
    # the values the model's Mul computes, in float32
    np.testing.assert_array_equal(rows.values, rows.scales[:, None] * rows.q.astype(np.float32))
    if rows.scale_dtype == "float16":
        np.testing.assert_array_equal(rows.scales, rows.scales.astype(np.float16).astype(np.float32))
    m = np.abs(table).max(axis=1)
    # each entry within half a step (plus the scale's own rounding: float16, 2^-11 relative) of its value
    err = np.abs(rows.values.astype(np.float64) - table).max(axis=1, initial=0)
    assert (err <= 0.5 * rows.scales * (1 + 2.0**-8) + 127 * rows.scales * 2.0**-10).all()
    assert (rows.scales <= np.where(m > 0, m, 127.0) / 127 * (1 + 2.0**-10)).all()
    assert int8_rows(np.array([[np.inf, 1.0]])) is None


def _per_channel_net(rng, outlier=False):
    w = rng.standard_normal((96, 40)).astype(np.float32)
    if outlier:  # one weight per channel 1000x the rest: int8 steps (max / 127) swallow the small entries
        w[0, :] = 1000.0
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    return make_model(nodes, {"w": w}, [("x", ["N", 96])], [("y", ["N", 40])])


def test_auto_stores_int8_entries_where_they_add_little_error():
    model = _per_channel_net(np.random.default_rng(11))
    _, rep16 = optimize(model, "kmeans(bits=4,group_size=1,codebook_dtype=float16)")
    out, rep = optimize(model, "kmeans(bits=4,group_size=1)")
    (node,) = custom_nodes(out)
    parts = stored_inputs(out, node.input[1])
    assert sorted(str(a.dtype) for a in parts) == ["float16", "int8"]
    (row,), (row16,) = rep.passes[0].layers, rep16.passes[0].layers
    # 40 codebooks of 16 entries: 40 * (16 + 2) bytes instead of 40 * 32
    assert row16.extra["bytes_stored"] - row.extra["bytes_stored"] == 40 * (32 - 18)
    assert row.error**2 <= (1 + INT8_MAX_ADDED) * row16.error**2
    x = {"x": np.random.default_rng(1).standard_normal((3, 96)).astype(np.float32)}
    np.testing.assert_array_equal(run(out, x)[0], run(ops.decode_model(out), x)[0])


def test_auto_keeps_float_entries_where_int8_would_lose():
    out, _ = optimize(_per_channel_net(np.random.default_rng(12), outlier=True), "kmeans(bits=4,group_size=1)")
    (node,) = custom_nodes(out)
    assert [str(a.dtype) for a in stored_inputs(out, node.input[1])] == ["float16"]
    # asked for, int8 is written there; one codebook per layer and binary's per-channel +-a keep float entries
    net = _per_channel_net(np.random.default_rng(12), outlier=True)
    out, _ = optimize(net, "kmeans(bits=4,group_size=1,codebook_dtype=int8)")
    assert TensorProto.INT8 in {t.data_type for t in out.graph.initializer}
    out, _ = optimize(net, "kmeans(bits=4,group_size=0,codebook_dtype=int8)")
    assert TensorProto.INT8 not in {t.data_type for t in out.graph.initializer}
    out, _ = optimize(_per_channel_net(np.random.default_rng(12)), "binary(codebook_dtype=int8)")
    assert TensorProto.INT8 not in {t.data_type for t in out.graph.initializer}


@pytest.mark.parametrize("spec", ["kmeans(bits=4,group_size=1)", "kmeans(bits=4,group_size=scaled)"])
def test_optimizing_a_compressed_model_again_keeps_its_stored_codebooks(spec, tmp_path):
    """The Cast and Mul computing an int8 or scaled codebook are its stored form: folding constants (on load,
    and the fold-constants pass) leaves them, so the file does not grow."""
    out, _ = optimize(_per_channel_net(np.random.default_rng(13)), spec)
    again, _ = optimize(out, "fold-constants,eliminate")
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in out.graph.node]
    assert sum(t.ByteSize() for t in again.graph.initializer) == sum(t.ByteSize() for t in out.graph.initializer)
    x = {"x": np.random.default_rng(2).standard_normal((3, 96)).astype(np.float32)}
    np.testing.assert_array_equal(run(again, x)[0], run(out, x)[0])


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(2, 16)), elements=st.floats(-8, 8, width=32)),
    st.integers(0, 2**32 - 1),
)
def test_int8_rounding_keeps_each_rows_weight_sum(table, seed):
    """With the entries' weight counts, each row's rounding errors cancel over its weights (sum n_i (T_i - c_i)
    no larger than nearest rounding leaves it, nor than one step of its most used entry), each entry within one
    step of its value."""
    counts = np.random.default_rng(seed).integers(0, 50, size=table.shape)
    c = table.astype(np.float64)
    near, balanced = int8_rows(table), int8_rows(table, counts)
    assert near is not None and balanced is not None
    np.testing.assert_array_equal(near.scales, balanced.scales)
    s = balanced.scales.astype(np.float64)

    def drift(rows):
        return np.abs((counts * (rows.values.astype(np.float64) - c)).sum(axis=1))

    assert (drift(balanced) <= drift(near) + 1e-9).all()
    assert (drift(balanced) <= s * np.maximum(counts.max(axis=1), 1) * (1 + 1e-6)).all()
    assert (np.abs(balanced.values - c) <= s[:, None] * (1 + 2.0**-8)).all()
    assert np.abs(balanced.q.astype(np.int32)).max() <= 127
