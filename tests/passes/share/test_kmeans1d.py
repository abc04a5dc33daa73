"""The fast weighted 1-D k-means: at least as good as scikit-learn's Lloyd from the same initialization."""

from __future__ import annotations

import numpy as np
import pytest
from onnxcomp.passes.share import init_centroids, kmeans_1d
from sklearn.cluster import KMeans


def _sk_inertia(v, k, init, weights=None):
    km = KMeans(n_clusters=k, init=init[:, None], n_init=1, algorithm="lloyd", max_iter=300)
    km.fit(v[:, None].astype(np.float64), sample_weight=weights)
    return km.inertia_


@pytest.mark.parametrize(
    "dist,k,weighted",
    [
        ("normal", 16, False),
        ("normal", 4, True),
        ("laplace", 8, False),
        ("laplace", 32, True),
        ("bimodal", 15, False),
        ("uniform", 2, True),
        ("normal", 256, False),
    ],
)
def test_inertia_not_worse_than_sklearn(dist, k, weighted):
    rng = np.random.default_rng(k)
    n = 4000
    if dist == "normal":
        v = rng.standard_normal(n)
    elif dist == "laplace":
        v = rng.laplace(size=n)
    elif dist == "bimodal":  # pruned weights: a gap around zero
        v = rng.standard_normal(n)
        v = v[np.abs(v) > 1.0]
    else:
        v = rng.random(n)
    v = v.astype(np.float32)
    w = rng.random(v.size) + 0.1 if weighted else None
    init = init_centroids(v, k, "linear")
    ours = kmeans_1d(v, k, weights=w, init=init)
    theirs = _sk_inertia(v, k, init, w)
    assert ours.inertia <= theirs * (1 + 1e-9) + 1e-12
    # the reported inertia is the real one, and every value sits at its nearest centroid
    c = ours.centroids
    wt = np.ones_like(v, dtype=np.float64) if w is None else w
    assert ours.inertia == pytest.approx(float((wt * (v - c[ours.labels]) ** 2).sum()), rel=1e-9, abs=1e-9)
    nearest = np.abs(v[:, None].astype(np.float64) - c[None, :]).min(1)
    np.testing.assert_allclose(np.abs(v - c[ours.labels]), nearest, rtol=0, atol=1e-12)


def test_few_distinct_values_are_exact():
    v = np.array([3.0, -1.0, 3.0, 0.5, -1.0], np.float32)
    km = kmeans_1d(v, 4)
    np.testing.assert_array_equal(km.centroids[km.labels], v)
    assert km.inertia == 0.0


def test_linear_init_spans_range_and_density_init_follows_weights():
    v = np.linspace(-2, 6, 101)
    np.testing.assert_allclose(init_centroids(v, 5, "linear"), [-2, 0, 2, 4, 6])
    w = np.where(v > 4, 100.0, 1.0)
    assert np.median(init_centroids(v, 9, "density", w)) > 4


def test_empty_clusters_are_relocated():
    # two tight clusters far apart; linear init puts most centroids in the empty middle
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-10, 0.1, 500), rng.normal(10, 0.1, 500)])
    km = kmeans_1d(v, 6)
    assert len(np.unique(km.labels)) == 6
    assert km.inertia <= _sk_inertia(v, 6, init_centroids(v, 6, "linear"))
