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
from passes.share._emit import FP16_ROW_TOLERANCE, codebook_dtype
from tests.support.compressed import custom_nodes, decoded_weights, make_model, run


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


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=16),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    ),
    st.integers(-40, 20),
)
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
        assert row.extra["bytes_stored"] == sum(inits[i].nbytes for i in node.input[1:])
        book = inits[node.input[1]]
        if node.op_type != "TernaryMatMul" and np.abs(book).max() < 1e4:
            assert book.dtype == np.float16, (node.name, book.dtype)
    assert report.passes[0].counters["bytes_stored"] == sum(r.extra["bytes_stored"] for r in rows)
    ops.validate_model(out)


def test_error_reported_is_that_of_the_float16_values():
    """A per-channel 2-bit codebook: the decoded weights the error is reported on are the float16 values."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 30)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, [("x", ["N", 40])], [("y", ["N", 30])]
    )
    out, report = optimize(model, "kmeans(bits=2,group_size=1)")
    (node,) = custom_nodes(out)
    book = next(t for t in out.graph.initializer if t.name == node.input[1])
    assert book.data_type == TensorProto.FLOAT16
    w_hat = decoded_weights(out)[node.output[0]]
    err = float(np.linalg.norm(w.astype(np.float64) - w_hat) / np.linalg.norm(w.astype(np.float64)))
    (row,) = report.passes[0].layers
    assert row.error == pytest.approx(err, rel=1e-6)
    x = {"x": rng.standard_normal((3, 40)).astype(np.float32)}
    np.testing.assert_array_equal(run(out, x)[0], run(ops.decode_model(out), x)[0])
