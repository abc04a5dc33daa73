"""Data-free sum-keeping codes (kmeans ``sum-keeping``): codes into a codebook shared by several output channels
moved to a neighbouring entry so that each channel's weights keep their sum, kept where that adds at most 1% to the
layer's squared weight error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper
from onnxcomp.passes.share import keep_row_sums

from onnxcomp.api import optimize
from tests.support.compressed import decoded_weights, make_model, run


def _nearest(w: np.ndarray, tables: np.ndarray) -> np.ndarray:
    return np.abs(w[:, :, None] - tables[:, None, :]).argmin(axis=2)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=st.floats(-4, 4)),
    st.integers(2, 9),
    st.integers(0, 2**31 - 1),
)
def test_moves_are_to_a_neighbour_and_never_grow_a_row_drift(w, levels, seed):
    rng = np.random.default_rng(seed)
    rows = w.shape[0]
    tables = rng.uniform(-4, 4, (rows, levels))  # entries in any order
    codes = _nearest(w, tables)
    moved = keep_row_sums(w, tables, codes)
    q0, q1 = np.take_along_axis(tables, codes, 1), np.take_along_axis(tables, moved, 1)
    d0, d1 = np.abs((q0 - w).sum(1)), np.abs((q1 - w).sum(1))
    assert (d1 <= d0 + 1e-9).all()
    # a moved weight takes the next entry in value order, towards the side that shrinks its row's drift
    rank = np.argsort(np.argsort(tables, axis=1, kind="stable"), axis=1, kind="stable")
    r0, r1 = np.take_along_axis(rank, codes, 1), np.take_along_axis(rank, moved, 1)
    changed = r0 != r1
    assert (np.abs(r1 - r0)[changed] == 1).all()
    side = np.sign((q0 - w).sum(1))[:, None] * np.ones_like(w)
    assert (np.sign(q1 - q0)[changed] == -side[changed]).all()
    # the same tables in another entry order give the same values
    perm = rng.permutation(levels)
    shuffled = tables[:, perm]
    inverse = np.argsort(perm)
    again = keep_row_sums(w, shuffled, inverse[codes])
    assert np.array_equal(np.take_along_axis(shuffled, again, 1), q1)


def test_a_long_row_keeps_its_sum_within_one_step():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 512))
    table = np.sort(rng.standard_normal(16))
    tables = np.broadcast_to(table, (8, 16))
    codes = _nearest(w, tables)
    moved = keep_row_sums(w, tables, codes)
    drift = np.abs((np.take_along_axis(tables, moved, 1) - w).sum(1))
    assert (drift <= np.diff(table).max()).all()
    assert drift.mean() < 0.2 * np.abs((np.take_along_axis(tables, codes, 1) - w).sum(1)).mean()


def _matmul(w: np.ndarray):
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    return make_model([node], {"w": w}, [("x", ["b", w.shape[0]])], [("y", ["b", w.shape[1]])], opset=17)


def _kmeans(model, spec, **kw):
    out, report = optimize(model, spec, **kw)
    (layer,) = report.passes[0].layers
    return out, layer, report.passes[0].counters


def test_data_free_shared_codebooks_keep_each_output_sum():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((256, 32)).astype(np.float32)  # MatMul [K, N]: output j sums column j
    model = _matmul(w)
    kept, layer, counters = _kmeans(model, "kmeans(bits=4,group-size=0)")
    plain, layer0, counters0 = _kmeans(model, "kmeans(bits=4,group-size=0,sum-keeping=false)")
    assert "sum-keeping codes" in layer.decision and counters["layers_sum_keeping"] == 1
    assert "sum-keeping" not in layer0.decision and "layers_sum_keeping" not in counters0
    q1, q0 = next(iter(decoded_weights(kept).values())), next(iter(decoded_weights(plain).values()))
    d1, d0 = np.abs((q1 - w).sum(0)), np.abs((q0 - w).sum(0))
    assert d1.mean() < 0.2 * d0.mean()
    assert ((q1 - w) ** 2).sum() <= 1.01 * ((q0 - w) ** 2).sum()  # the cap on the added squared error
    assert layer.extra["bytes_packed"] == layer0.extra["bytes_packed"]  # the same codebook, other codes
    # inputs with a common mean (as after a ReLU): the outputs' mean error shrinks with the drift
    x = np.abs(rng.standard_normal((64, 256))).astype(np.float32)
    (y,), (y1,), (y0,) = run(model, {"x": x}), run(kept, {"x": x}), run(plain, {"x": x})
    assert np.abs((y1 - y).mean(0)).mean() < 0.5 * np.abs((y0 - y).mean(0)).mean()
    np.testing.assert_allclose(y1, x @ q1, rtol=1e-4, atol=1e-4)  # the model decodes the moved codes


def test_not_where_it_costs_more_than_one_percent_or_rows_keep_their_sums_anyway():
    rng = np.random.default_rng(4)
    # two inputs per output: moving a code to cancel a row's drift costs a large share of its error
    narrow = _matmul(rng.standard_normal((2, 64)).astype(np.float32))
    _, layer, counters = _kmeans(narrow, "kmeans(bits=2,group-size=0)")
    assert "sum-keeping" not in layer.decision and "layers_sum_keeping" not in counters
    # one codebook per channel: Lloyd's centroids are their weights' means, nothing to move
    _, layer, _ = _kmeans(_matmul(rng.standard_normal((128, 8)).astype(np.float32)), "kmeans(bits=4,group-size=1)")
    assert "sum-keeping" not in layer.decision
    # one codebook at each channel's scale: left as it is (it cost the text detector at 4 bits)
    wide = _matmul(rng.standard_normal((256, 32)).astype(np.float32))
    _, layer, counters = _kmeans(wide, "kmeans(bits=4,group-size=scaled)")
    assert "sum-keeping" not in layer.decision and "layers_sum_keeping" not in counters


@pytest.mark.parametrize("compensate", [True, False])
def test_not_with_calibration_data(compensate):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((256, 32)).astype(np.float32)
    calib = {"x": np.abs(rng.standard_normal((64, 256))).astype(np.float32)}
    spec = f"kmeans(bits=4,group-size=0,compensate={str(compensate).lower()})"
    _, layer, counters = _kmeans(_matmul(w), spec, calib=calib)
    assert "sum-keeping" not in layer.decision and "layers_sum_keeping" not in counters
