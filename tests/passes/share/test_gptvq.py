"""Error-compensated codebook quantization (passes/share/_gptvq.py): the batched weighted 1-D k-means
against scikit-learn, and the GPTQ-ordered codebook quantization against plain nearest-centroid k-means."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from onnxcomp.passes.share import compensated_quantize, inverse_factors, output_error, row_kmeans
from onnxcomp.passes.share import kmeans as kmeans_mod
from sklearn.cluster import KMeans

from onnxcomp.analysis import weights
from onnxcomp.graph import import_model
from tests.support.compressed import make_model


def _rows(dist: str, r: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dist == "laplace":
        return rng.laplace(size=(r, n))
    if dist == "t3":  # heavy tails: outlier weights
        return rng.standard_t(3, (r, n))
    return rng.standard_normal((r, n))


@pytest.mark.parametrize("dist,k", [("normal", 16), ("laplace", 16), ("t3", 8), ("laplace", 4)])
def test_row_kmeans_not_worse_than_sklearn_with_sample_weight(dist, k):
    v = _rows(dist, 6, 1200, k)
    w = np.random.default_rng(1).random(v.shape) + 0.1
    ours = row_kmeans(v, k, w)
    for i in range(v.shape[0]):
        sk = KMeans(n_clusters=k, random_state=i).fit(v[i][:, None], sample_weight=w[i])
        assert ours.inertia[i] <= sk.inertia_ * (1 + 5e-3)
        # the reported inertia is the real one, and every value sits at its nearest centroid
        c = ours.centroids[i]
        assert ours.inertia[i] == pytest.approx(float((w[i] * (v[i] - c[ours.labels[i]]) ** 2).sum()), rel=1e-9)
        nearest = np.abs(v[i][:, None] - c[None, :]).min(1)
        np.testing.assert_allclose(np.abs(v[i] - c[ours.labels[i]]), nearest, atol=1e-12)


def test_row_kmeans_from_an_init_not_worse_than_sklearn_lloyd_from_it():
    v = _rows("normal", 4, 2000, 3)
    w = np.random.default_rng(2).random(v.shape) + 0.1
    init = np.linspace(-2.5, 2.5, 16)
    ours = row_kmeans(v, 16, w, starts=(init,), swaps=0, max_iter=1000)
    for i in range(v.shape[0]):
        sk = KMeans(16, init=init[:, None], n_init=1, algorithm="lloyd", max_iter=1000, tol=0)
        sk.fit(v[i][:, None], sample_weight=w[i])
        assert ours.inertia[i] <= sk.inertia_ * (1 + 1e-9)


def test_row_kmeans_escapes_a_bad_start():
    # linear init on heavy tails leaves most centroids in the sparse tails; the swaps move them back
    v = _rows("t3", 8, 1000, 5)
    stuck = row_kmeans(v, 16, starts=("linear",), swaps=0)
    swapped = row_kmeans(v, 16, starts=("linear",))
    assert np.all(swapped.inertia <= stuck.inertia)
    assert swapped.inertia.sum() < 0.9 * stuck.inertia.sum()


def _layer(seed: int, r: int, n: int, m: int, correlated: bool):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((n, n)) * (rng.random(n) ** 2)[None, :] if correlated else np.eye(n)
    x = rng.standard_normal((m, n)) @ mix + 0.05 * rng.standard_normal((m, n))
    w = rng.standard_normal((r, n)) * rng.random((r, 1))
    return x, w


def _x_error(x: np.ndarray, w: np.ndarray, q: np.ndarray) -> float:
    """Output error on the calibration rows themselves: ||X W^T - X Q^T||^2 / ||X W^T||^2."""
    return float(np.sum((x @ (w - q).T) ** 2) / np.sum((x @ w.T) ** 2))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    r=st.integers(1, 24),
    n=st.integers(2, 40),
    bits=st.integers(1, 5),
    group=st.sampled_from([1, 2, 5, 1000]),
    correlated=st.booleans(),
)
def test_compensation_never_raises_the_calibration_error(seed, r, n, bits, group, correlated):
    x, w = _layer(seed, r, n, 3 * n + 7, correlated)
    h = x.T @ x / x.shape[0]
    res = compensated_quantize(w, [h], bits, group)
    q = res.decoded(min(group, r))
    assert res.codes.shape == w.shape and res.codes.min() >= 0 and res.codes.max() < 1 << bits
    assert res.codebook.shape == (-(-r // min(group, r)), 1 << bits)
    # the error the function reports is the calibration error, measured here on X directly
    assert res.error == pytest.approx(_x_error(x, w, q), rel=1e-6, abs=1e-12)
    # plain nearest-centroid quantization with the same codebook, computed here
    book = np.repeat(res.codebook, min(group, r), axis=0)[:r]
    plain = np.take_along_axis(book, np.abs(w[:, :, None] - book[:, None, :]).argmin(2), axis=1)
    assert res.error <= _x_error(x, w, plain) * (1 + 1e-9) + 1e-12


def test_compensation_helps_on_correlated_inputs():
    gains = []
    for seed in range(4):
        x, w = _layer(seed, 64, 96, 2000, correlated=True)
        h = x.T @ x / x.shape[0]
        res = compensated_quantize(w, [h], 3, 1)
        assert res.compensated
        gains.append(res.error / res.error_plain)
    assert max(gains) < 0.8  # measured 0.3-0.6: GPTQ's compensation must actually do something


def test_conv_groups_use_their_own_hessian():
    # two conv groups with very different input statistics: each group's rows use its H
    x1, w1 = _layer(1, 8, 12, 400, True)
    x2, w2 = _layer(2, 8, 12, 400, True)
    hs = [x1.T @ x1 / 400, x2.T @ x2 / 400]
    res = compensated_quantize(np.concatenate([w1, w2]), hs, 3, 1)
    q = res.decoded(1)
    alone1 = compensated_quantize(w1, hs[:1], 3, 1)
    np.testing.assert_allclose(q[:8], alone1.decoded(1), rtol=1e-9)
    # the reported error comes from float32 products (exact only where plain and GPTQ nearly tie)
    assert res.error == pytest.approx(output_error(np.concatenate([w1, w2]), q, hs), rel=1e-6)


def test_pruned_weights_stay_exactly_zero():
    x, w = _layer(7, 16, 32, 500, True)
    w[np.abs(w) < 0.5 * np.abs(w).mean()] = 0
    res = compensated_quantize(w, [x.T @ x / 500], 3, 4, zero_code=True)
    q = res.decoded(4)
    assert np.all(q[w == 0] == 0) and np.all(res.codes[w == 0] == 0)
    assert np.all(res.codebook[:, 0] == 0) and np.all(res.codes[w != 0] > 0)


@pytest.mark.parametrize("n", [1, 9, 70])
def test_inverse_factors_are_the_upper_cholesky_factors_of_the_damped_inverse_in_act_order(n):
    rng = np.random.default_rng(n)
    hs = []
    for g in range(3):
        x = rng.standard_normal((2 * n + 3, n)) * rng.random(n)
        if n > 1 and g == 1:
            x[:, 0] = 0  # a dead input: H_ii = 0 becomes 1 (GPTQ's rule)
        hs.append(x.T @ x)
    perm, u = inverse_factors(hs, 0.01)
    for g, h in enumerate(hs):
        h = h.copy()
        d = np.diag(h).copy()
        h[np.diag_indices(n)] = np.where(d <= 0, 1.0, d)
        h /= np.diag(h).mean()
        np.testing.assert_array_equal(perm[g], np.argsort(-np.diag(h), kind="stable"))
        hp = h[np.ix_(perm[g], perm[g])] + 0.01 * np.eye(n)
        assert np.allclose(u[g], np.triu(u[g])) and (np.diag(u[g]) > 0).all()
        np.testing.assert_allclose(u[g].T @ u[g], np.linalg.inv(hp), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("group_size", "zero_code"), [(6, False), (2, True), (1, False)])
def test_refined_codebook_solves_the_normal_equations_of_each_codebook_group(group_size, zero_code):
    # a grouped conv (2 groups, each its own H): the codebook values minimizing
    # sum_j (O_j c_g(j) - w_j)^T H_j (O_j c_g(j) - w_j), built here from explicit one-hot matrices
    rng = np.random.default_rng(group_size)
    w = rng.standard_normal((6, 2, 2, 2)).astype(np.float32)  # [out, in/group, kh, kw], group = 2
    if zero_code:
        w[rng.random(w.shape) < 0.3] = 0
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=2, pads=[1, 1, 1, 1])
    graph = import_model(make_model([node], {"w": w}, [("x", [1, 4, 5, 5])], [("y", [1, 6, 5, 5])]))
    t = weights.TARGETS["Conv"](graph, graph.nodes[0])
    e = kmeans_mod.kmeans_encode(t.w2, 2, group_size, t.out_axis)
    assert e.zero_code == zero_code
    hs = []
    for _ in range(2):
        x = rng.standard_normal((40, 8))
        hs.append(x.T @ x / 40)
    table = kmeans_mod.refine_codebook(t, e, None, rng, damp=1e-10, grams=(hs, None))
    levels, first = e.table.shape[1], int(zero_code)
    for g in range(e.table.shape[0]):
        a, b = np.zeros((levels, levels)), np.zeros(levels)
        for j in range(g * e.group_size, min((g + 1) * e.group_size, 6)):
            o, h = np.eye(levels)[e.codes[j]], hs[j // 3]
            a += o.T @ h @ o
            b += o.T @ h @ t.w2[j].astype(np.float64)
        idx = [i for i in range(first, levels) if a[i, i] > 0]  # codes in use
        expected = np.linalg.solve(a[np.ix_(idx, idx)], b[idx])
        np.testing.assert_allclose(table[g, idx], expected, rtol=1e-4, atol=1e-5)
        if zero_code:
            assert table[g, 0] == 0.0
