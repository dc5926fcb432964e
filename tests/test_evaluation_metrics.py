"""FID / KID maths against closed forms and independent computations; the TF1 resize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from hourglass.evaluation import (
    FeatureStats,
    fid_from_stats,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    mmd2_unbiased,
    polynomial_kernel,
    resize_bilinear_tf1,
)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _closed_form_2d(mu1, s1, mu2, s2) -> float:
    # For 2x2 PSD P with eigenvalues l1, l2: (sqrt l1 + sqrt l2)^2 = tr P + 2 sqrt(det P); P = S1 S2 here.
    p = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.1])
def test_frechet_distance_matches_the_2x2_closed_form(theta):
    mu1, mu2 = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    s1 = np.diag([4.0, 0.5])
    r = _rotation(theta)
    s2 = r @ np.diag([1.0, 3.0]) @ r.T  # does not commute with s1 unless theta = 0
    expected = _closed_form_2d(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if theta == 0.0:  # commuting: sum (sqrt a - sqrt b)^2 plus the mean term
        diag = (2 - 1) ** 2 + (math.sqrt(0.5) - math.sqrt(3)) ** 2
        assert expected == pytest.approx(1.5**2 + 1.25**2 + diag)


def test_frechet_distance_is_symmetric_and_zero_on_itself():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6))
    s = a @ a.T
    mu = rng.standard_normal(6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-9)
    b = rng.standard_normal((6, 6))
    s2 = b @ b.T + np.eye(6)
    assert frechet_distance(mu, s, mu + 1, s2) == pytest.approx(frechet_distance(mu + 1, s2, mu, s), rel=1e-9)


def test_frechet_distance_agrees_with_scipy_sqrtm():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # the classic formula, as an independent oracle
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_sampled_gaussians_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -0.5])
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = _rotation(0.7) @ np.diag([0.5, 2.5]) @ _rotation(0.7).T
    x = rng.multivariate_normal(mu1, s1, size=40_000)
    y = rng.multivariate_normal(mu2, s2, size=40_000)
    fid = fid_from_stats(FeatureStats.from_features(x), FeatureStats.from_features(y))
    assert fid == pytest.approx(_closed_form_2d(mu1, s1, mu2, s2), rel=0.03)


@pytest.mark.parametrize("n1,n2,d", [(5, 7, 64), (30, 20, 16), (12, 12, 12)])
def test_low_rank_fid_equals_the_covariance_route(n1, n2, d):
    rng = np.random.default_rng(n1 + d)
    f1 = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d))
    f2 = rng.standard_normal((n2, d)) + 0.5
    a, b = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
    full = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert frechet_distance_from_features(a.features, b.features) == pytest.approx(full, rel=1e-6)
    assert fid_from_stats(a, b) == pytest.approx(full, rel=1e-6)
    assert frechet_distance_from_features(a.features, a.features) < 1e-8 * full


def test_feature_stats_fit_and_errors():
    f = np.arange(12, dtype=np.float64).reshape(4, 3) ** 1.5
    stats = FeatureStats.from_features(f, "x")
    assert stats.n == 4 and stats.features.dtype == np.float32
    assert np.allclose(stats.mu, f.mean(0)) and np.allclose(stats.sigma, np.cov(f, rowvar=False), rtol=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        FeatureStats.from_features(f[:1])
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats.from_features(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_mmd2_unbiased_matches_a_brute_force_loop():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((6, 3)) + 0.3

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (5, 6)


def _normal_moments(mean: float, std: float) -> tuple[float, float, float]:
    return mean, mean**2 + std**2, mean**3 + 3 * mean * std**2


def test_mmd2_is_unbiased_for_1d_gaussians():
    # 1-D, kernel (xy + 1)^3 = x^3 y^3 + 3 x^2 y^2 + 3 x y + 1: its mean over independent x, y is a
    # sum of products of moments, which gives MMD^2 exactly. Averaged over many small samples
    # (m = 10), the unbiased estimate must hit it; the biased (V-statistic) one is ~2.2x too large here.
    def expected_k(p, q):
        return p[2] * q[2] + 3 * p[1] * q[1] + 3 * p[0] * q[0] + 1

    px, py = _normal_moments(0.2, 1.0), _normal_moments(-0.3, 0.7)
    mmd2 = expected_k(px, px) + expected_k(py, py) - 2 * expected_k(px, py)
    rng = np.random.default_rng(5)
    x = rng.normal(0.2, 1.0, size=(3000, 10, 1))
    y = rng.normal(-0.3, 0.7, size=(3000, 10, 1))
    estimate = np.mean([mmd2_unbiased(a, b) for a, b in zip(x, y, strict=True)])
    assert estimate == pytest.approx(mmd2, rel=0.1)
    same = np.mean([mmd2_unbiased(a, b) for a, b in zip(x[:1500], x[1500:], strict=True)])
    assert abs(same) < 0.05 * mmd2


def test_kid_averages_mmd2_over_seeded_subsets():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.5
    kid = kernel_inception_distance(x, y, subsets=4, subset_size=10, seed=3)
    draws = np.random.default_rng(3)
    values = []
    for _ in range(4):
        i, j = draws.choice(40, 10, replace=False), draws.choice(30, 10, replace=False)
        values.append(mmd2_unbiased(x[i], y[j]))
    assert kid.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert kid.std == pytest.approx(np.std(values), rel=1e-12)


def test_kid_is_seeded_and_checks_its_input():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((60, 4))
    a = kernel_inception_distance(x, y, subsets=5, subset_size=20, seed=1)
    assert a == kernel_inception_distance(x, y, subsets=5, subset_size=20, seed=1)
    assert a != kernel_inception_distance(x, y, subsets=5, subset_size=20, seed=2)
    assert kernel_inception_distance(x, y, subsets=2, subset_size=1000).subset_size == 50
    with pytest.raises(ValueError, match="same D"):
        kernel_inception_distance(x, y[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(x[:1], y)


@pytest.mark.parametrize("size", [(299, 299), (7, 13), (32, 32)])
def test_resize_bilinear_tf1_matches_a_grid_sample_formulation(size):
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64) * 255
    out = resize_bilinear_tf1(x, size)
    # Oracle: grid_sample at pixel positions j * in / out, written as normalised coordinates.
    h, w = x.shape[-2:]
    ys = torch.arange(size[0], dtype=torch.float64) * h / size[0]
    xs = torch.arange(size[1], dtype=torch.float64) * w / size[1]
    gy, gx = torch.meshgrid((2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(2, -1, -1, -1)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert out.shape == (2, 3, *size)
    assert torch.allclose(out, ref, atol=1e-9)
    assert torch.equal(resize_bilinear_tf1(x, (32, 24)), x)


# -- FID and KID against torch-fidelity on the same features --------------------------------------
_TORCH_FIDELITY = "torch-fidelity is the oracle here; it is in the dev and metrics extras: pip install -e '.[dev]'"


def _feature_sets(n1: int, n2: int, d: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    f1 = rng.normal(size=(n1, d)) @ mix
    f2 = (rng.normal(size=(n2, d)) * np.linspace(0.5, 1.5, d) + 0.3) @ mix
    return f1, f2


@pytest.mark.parametrize(("n1", "n2"), [(400, 400), (300, 500)])
def test_fid_matches_torch_fidelity(n1, n2):
    pytest.importorskip("torch_fidelity", reason=_TORCH_FIDELITY)
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    f1, f2 = _feature_sets(n1, n2)
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(f1)),
                                      fid_features_to_statistics(torch.from_numpy(f2)), False)
    ours = fid_from_stats(FeatureStats.from_features(f1), FeatureStats.from_features(f2))
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)


def test_kid_matches_torch_fidelity_when_every_subset_is_the_whole_set():
    pytest.importorskip("torch_fidelity", reason=_TORCH_FIDELITY)
    from torch_fidelity.metric_kid import kid_features_to_metric

    f1, f2 = _feature_sets(200, 200)  # subsets of all 200 rows: the unbiased MMD^2 ignores the draw order
    theirs = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=3, kid_subset_size=200,
                                    verbose=False, rng_seed=0)
    ours = kernel_inception_distance(f1, f2, subsets=3, subset_size=200, seed=5)
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours.mean > 0.01  # the sets differ: a real distance, not the trivial zero
