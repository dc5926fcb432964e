"""FID, KID, the Inception Score and precision/recall from feature vectors, written from their definitions.

**FID** (Heusel et al. 2017): fit a Gaussian to each feature set and take the Fréchet (2-Wasserstein)
distance between them,

    FID = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

``tr((S_1 S_2)^{1/2})`` equals the trace of the symmetric form used here; it is computed with two
symmetric eigen-decompositions in float64 (``S_1^{1/2}``, then the eigenvalues of
``S_1^{1/2} S_2 S_1^{1/2}``), so there are no imaginary parts to discard and rank-deficient
covariances (fewer images than features) are fine: eigenvalues that rounding makes slightly
negative are clipped to 0.

**KID** (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic polynomial
kernel ``k(x, y) = (x . y / D + 1)^3``, averaged over random subsets of ``m`` images per side,

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2.

Being unbiased, it can be slightly negative when the two sets are alike (and clearly negative for a
set against itself at small ``m``: every subset pair then shares images).

**Few images.** With ``N <= D`` images per side the covariances have rank below ``N``, and the
trace term has an exact low-rank form: for centred features ``A_k`` (``N_k x D``) and
``S_k = A_k^T A_k / (N_k - 1)``, the non-zero eigenvalues of ``S_1^{1/2} S_2 S_1^{1/2}`` are the squared
singular values of ``M = A_1 A_2^T / sqrt((N_1 - 1)(N_2 - 1))``, so
``tr((S_1 S_2)^{1/2}) = ||M||_*`` (nuclear norm). :func:`fid_from_stats` uses it then: an
``N_1 x N_2`` SVD instead of ``D x D`` eigen-decompositions (seconds instead of tens of seconds
for ``D = 2048`` on a small CPU).

**Inception Score** (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` of the class
probabilities ``p(y|x) = softmax(logits)``, with ``p(y)`` their mean, computed on each of ``splits``
consecutive parts of the images (part ``i`` is rows ``[i N / splits, (i + 1) N / splits)``, as
torch-fidelity cuts them; ADM's evaluator cuts 5000-image parts, the same 10 for 50,000 images) and
reported as the mean and standard deviation over the parts. The parts are taken in order (as ADM,
unlike torch-fidelity's default shuffle), so the images should not be sorted by class.

**Precision and recall** (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
around its feature vectors, each reaching its ``k``-th nearest neighbour in the set (``k = 3``).
Precision is the share of generated samples inside the reference manifold; recall the share of
reference samples inside the generated one (a distance equal to the radius counts as inside, as in
ADM's evaluator and torch-fidelity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "FeatureStats",
    "InceptionScore",
    "KIDResult",
    "PrecisionRecall",
    "fid_from_stats",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
]


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian fit of a feature set, with the features kept for KID.

    Attributes:
        mu: ``(D,)`` float64 mean.
        sigma: ``(D, D)`` float64 covariance (unbiased, ``N - 1`` in the denominator).
        features: ``(N, D)`` float32 features (networks compute in float32, so nothing is lost).
        extractor: name of the feature extractor that produced them.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    extractor: str = ""

    @property
    def n(self) -> int:
        """``N``, the number of images."""
        return int(self.features.shape[0])

    @classmethod
    def from_features(cls, features: np.ndarray, extractor: str = "") -> FeatureStats:
        """Fit ``mu`` and ``sigma`` to ``features``.

        Args:
            features: ``(N, D)`` with ``N >= 2``.
            extractor: name of the extractor (recorded, not checked).

        Returns:
            The statistics.

        Raises:
            ValueError: if ``features`` is not 2-d with at least 2 rows, or is not finite.
        """
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                f"need a (N, D) feature array with N >= 2 images to fit a covariance, got shape {features.shape}; "
                "evaluate more images"
            )
        features = features.astype(np.float32)
        if not np.isfinite(features).all():
            raise ValueError("the features contain NaN or inf; check the images and the feature network")
        f64 = features.astype(np.float64)
        return cls(mu=f64.mean(0), sigma=np.cov(f64, rowvar=False).reshape(f64.shape[1], f64.shape[1]),
                   features=features, extractor=extractor)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (the FID formula).

    Args:
        mu1: ``(D,)`` mean of the first Gaussian.
        sigma1: ``(D, D)`` its covariance (symmetric positive semi-definite).
        mu2: ``(D,)`` mean of the second.
        sigma2: ``(D, D)`` its covariance.

    Returns:
        ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1^{1/2} sigma2 sigma1^{1/2})^{1/2})``, >= 0
        (a rounding-level negative result is returned as 0).

    Raises:
        ValueError: on mismatched or non-square shapes, or non-finite values.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}; "
            "both sides need (D,) means and (D, D) covariances from the same feature extractor"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("the means or covariances contain NaN or inf")
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    fid = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    return max(fid, 0.0)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """The FID formula for the Gaussian fits of two feature sets, via the low-rank form.

    Equal to ``frechet_distance`` of the sets' means and unbiased covariances (see the module
    docstring); costs an ``N_1 x N_2`` SVD, so use it when ``N_k <= D``.

    Args:
        features1: ``(N1, D)``, ``N1 >= 2``.
        features2: ``(N2, D)``, ``N2 >= 2``.

    Returns:
        The Fréchet distance, >= 0 (a rounding-level negative result is returned as 0).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError(f"need two (N, D) feature arrays with the same D and N >= 2, got {f1.shape} and {f2.shape}")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = f1.shape[0] - 1, f2.shape[0] - 1
    nuclear = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()) / np.sqrt(c1 * c2)
    diff = mu1 - mu2
    fid = float(diff @ diff + (a1 * a1).sum() / c1 + (a2 * a2).sum() / c2 - 2 * nuclear)
    return max(fid, 0.0)


def fid_from_stats(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """FID between two fitted feature sets, by the cheaper exact route.

    Uses :func:`frechet_distance_from_features` when both sets have at most ``D`` images, else
    :func:`frechet_distance` on the means and covariances.

    Args:
        stats1: one set.
        stats2: the other (same extractor).

    Returns:
        The FID.
    """
    d = stats1.mu.shape[0]
    if max(stats1.n, stats2.n) <= d:
        return frechet_distance_from_features(stats1.features, stats2.features)
    return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``k(x, y) = (x . y / D + coef0)^degree`` for all pairs.

    Args:
        x: ``(n, D)``.
        y: ``(m, D)``.
        degree: the power (3 for KID).
        coef0: the constant (1 for KID).

    Returns:
        ``(n, m)`` kernel matrix (float64).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased squared MMD between two samples with the polynomial kernel.

    Args:
        x: ``(m, D)`` first sample, ``m >= 2``.
        y: ``(n, D)`` second sample, ``n >= 2``.
        degree: kernel power.
        coef0: kernel constant.

    Returns:
        ``mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)``.
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per side, got {m} and {n}")
    kxx = polynomial_kernel(x, x, degree, coef0)
    kyy = polynomial_kernel(y, y, degree, coef0)
    kxy = polynomial_kernel(x, y, degree, coef0)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


class KIDResult(NamedTuple):
    """KID over subsets: ``mean`` and ``std`` (population std over the subsets) of ``MMD^2_u``."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    coef0: float = 1.0,
) -> KIDResult:
    """KID: the unbiased polynomial-kernel MMD^2, averaged over random subsets.

    Each subset draws ``m = min(subset_size, N1, N2)`` rows from each side without replacement,
    from a ``numpy`` generator seeded with ``seed`` (so the result is reproducible).

    Args:
        features1: ``(N1, D)`` features of one image set.
        features2: ``(N2, D)`` features of the other.
        subsets: number of subsets.
        subset_size: rows per side per subset (clipped to the smaller set).
        seed: seed of the subset draws.
        degree: kernel power (3).
        coef0: kernel constant (1).

    Returns:
        :class:`KIDResult` ``(mean, std, subsets, subset_size)`` with the subset size used.

    Raises:
        ValueError: fewer than 2 rows on a side, mismatched ``D``, or non-positive counts.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays with the same D, got {f1.shape} and {f2.shape}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per side, got {f1.shape[0]} and {f2.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        values[s] = mmd2_unbiased(x, y, degree, coef0)
    return KIDResult(float(values.mean()), float(values.std()), subsets, m)


class InceptionScore(NamedTuple):
    """Inception Score: ``mean`` and ``std`` (population std) over ``splits`` parts."""

    mean: float
    std: float
    splits: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits: np.ndarray, splits: int = 10) -> InceptionScore:
    """The Inception Score of class logits (float64; see the module docstring).

    Args:
        logits: ``(N, C)`` pre-softmax class scores of the generated images (for the standard
            score: the 1008 logits of the TF Inception without the output bias).
        splits: number of consecutive parts (10).

    Returns:
        :class:`InceptionScore` ``(mean, std, splits)``.

    Raises:
        ValueError: not a 2-d finite array, ``splits < 1``, or fewer images than splits.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"need (N, C) logits with C >= 2 classes, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("the logits contain NaN or inf; check the images and the feature network")
    n = logits.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"the Inception Score with {splits} splits needs at least {splits} images, got {n}")
    log_p = _log_softmax(logits)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = np.log(part.mean(axis=0, keepdims=True))
        scores.append(float(np.exp((part * (log_part - log_marginal)).sum(axis=1).mean())))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)), splits)


class PrecisionRecall(NamedTuple):
    """Improved precision and recall (Kynkäänniemi et al. 2019) with ``k`` nearest neighbours."""

    precision: float
    recall: float
    k: int


def _as_tensor(features: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(features, np.float32) if not isinstance(features, torch.Tensor) else features,
                           dtype=torch.float32, device=device)


def knn_radii(features: np.ndarray | torch.Tensor, k: int = 3, *, batch_size: int = 4096,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """Distance of every feature vector to its ``k``-th nearest neighbour in the same set.

    Args:
        features: ``(N, D)``, ``N > k``.
        k: the neighbour (the vector itself, at distance 0, is not counted).
        batch_size: rows per block of the ``(rows, N)`` distance matrix.
        device: where to compute (float32 Euclidean distances, ``torch.cdist``).

    Returns:
        ``(N,)`` float32 radii on ``device``.
    """
    x = _as_tensor(features, torch.device(device))
    if x.ndim != 2 or x.shape[0] <= k or k < 1:
        raise ValueError(f"k-NN radii with k={k} need (N, D) features with N > k >= 1, got shape {tuple(x.shape)}")
    radii = [torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(batch_size)]
    return torch.cat(radii)


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    inside = [(torch.cdist(block, centres) <= radii[None]).any(dim=1) for block in points.split(batch_size)]
    return float(torch.cat(inside).double().mean())


def precision_recall(
    reference: np.ndarray | torch.Tensor,
    generated: np.ndarray | torch.Tensor,
    *,
    k: int = 3,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> PrecisionRecall:
    """Improved precision and recall of ``generated`` against ``reference`` (see the module docstring).

    The features are compared in float32 (as ADM's evaluator and torch-fidelity do), in blocks of
    ``batch_size`` rows, so memory stays at ``batch_size x max(N_ref, N_gen)`` distances.

    Args:
        reference: ``(N_ref, D)`` real-image features, ``N_ref > k``.
        generated: ``(N_gen, D)`` generated-image features, ``N_gen > k``.
        k: neighbourhood size (3).
        batch_size: rows per distance block.
        device: where to compute (a GPU makes 50,000 x 50,000 pairs quick).

    Returns:
        :class:`PrecisionRecall` ``(precision, recall, k)``.

    Raises:
        ValueError: mismatched ``D``, too few rows, or non-finite values.
    """
    device = torch.device(device)
    real, fake = _as_tensor(reference, device), _as_tensor(generated, device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays with the same D, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per side, got {real.shape[0]} "
                         f"reference and {fake.shape[0]} generated")
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise ValueError("the features contain NaN or inf; check the images and the feature network")
    real_radii = knn_radii(real, k, batch_size=batch_size, device=device)
    fake_radii = knn_radii(fake, k, batch_size=batch_size, device=device)
    precision = _share_inside(fake, real, real_radii, batch_size)
    recall = _share_inside(real, fake, fake_radii, batch_size)
    return PrecisionRecall(precision, recall, k)
