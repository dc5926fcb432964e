"""FID and KID of generated images against a reference, with cached reference statistics.

(:func:`compute_fid_kid` is :func:`~hourglass.evaluation.compute_metrics` with ``metrics=("fid", "kid")``;
that function adds FD_DINOv2, the Inception Score and precision/recall.)

The reference side (a folder or a dataset) is usually evaluated many times against new samples, so
its statistics are cached: ``<cache dir>/ref-<key>.npz`` holds ``mu``, ``sigma`` and the features
(float32, for KID), where ``key`` hashes the source's fingerprint (for a folder: every file's
relative path, size and modification time; for a dataset: its spec, resolution, split and count)
and the feature extractor's name. The default cache dir is ``$XDG_CACHE_HOME/hourglass/fid``
(``~/.cache/hourglass/fid``). Generated images are never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hourglass.evaluation._errors import EvaluationError
from hourglass.evaluation.features import FeatureExtractor
from hourglass.evaluation.metrics import FeatureStats
from hourglass.evaluation.sources import FolderImages, ImageSource, extract_features

__all__ = ["FIDResult", "compute_fid_kid", "default_cache_dir", "reference_cache_path", "reference_statistics"]

_CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hourglass/fid``, or ``~/.cache/hourglass/fid``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hourglass" / "fid"


def _cache_key(source: ImageSource, extractor: FeatureExtractor) -> str:
    blob = json.dumps({"format": _CACHE_FORMAT, "source": source.fingerprint(), "extractor": extractor.name},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def reference_cache_path(source: ImageSource, extractor: FeatureExtractor, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the statistics of ``source`` under ``extractor`` are (or would be) cached.

    Args:
        source: the reference images (must have a fingerprint).
        extractor: the feature network.
        cache_dir: the cache folder (default :func:`default_cache_dir`).

    Returns:
        ``<cache_dir>/ref-<first 24 hex digits of the key>.npz``.
    """
    return _path_for(_cache_key(source, extractor), cache_dir)


def _path_for(key: str, cache_dir: str | os.PathLike | None) -> Path:
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"ref-{key[:24]}.npz"


def _read_cache(path: Path, key: str, extractor: str) -> FeatureStats | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return FeatureStats(mu=data["mu"], sigma=data["sigma"], features=data["features"], extractor=extractor)
    except (OSError, KeyError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable FID cache file {path} ({exc}); recomputing", stacklevel=3)
        return None


def _write_cache(path: Path, key: str, stats: FeatureStats, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), mu=stats.mu, sigma=stats.sigma, features=stats.features,
                     extractor=np.array(stats.extractor), label=np.array(label))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_statistics(
    source: ImageSource,
    extractor: FeatureExtractor,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 50,
    progress: bool = False,
) -> tuple[FeatureStats, bool]:
    """Statistics of the reference images, read from the cache when present.

    Args:
        source: the reference images.
        extractor: the feature network.
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        use_cache: False: always compute, never write the cache. A dataset source without a
            fingerprint is never cached.
        batch_size: images per forward.
        progress: show a progress bar.

    Returns:
        ``(stats, cache_hit)``.
    """
    cacheable = use_cache and getattr(source, "cacheable", True)
    if cacheable:
        key = _cache_key(source, extractor)
        path = _path_for(key, cache_dir)
        if path.is_file():
            stats = _read_cache(path, key, extractor.name)
            if stats is not None and stats.n == len(source):
                return stats, True
    features = extract_features(source, extractor, batch_size=batch_size, progress=progress, desc="reference")
    stats = FeatureStats.from_features(features, extractor.name)
    if cacheable:
        try:
            _write_cache(path, key, stats, source.label)
        except OSError as exc:  # a read-only cache is not fatal
            warnings.warn(f"could not write the FID cache {path}: {exc}", stacklevel=2)
    return stats, False


@dataclass(frozen=True)
class FIDResult:
    """FID and KID of one generated set against one reference.

    Attributes:
        fid: the Fréchet Inception Distance.
        kid: KID mean over subsets.
        kid_std: KID standard deviation over subsets.
        kid_subsets: number of KID subsets.
        kid_subset_size: images per side per subset.
        n_generated: generated images evaluated.
        n_reference: reference images.
        extractor: the feature network's name.
        feature_dim: ``D``.
        generated: description of the generated images.
        reference: description of the reference.
        reference_cached: the reference statistics came from the cache.
        cache_file: the reference cache file (None when not cached).
    """

    fid: float
    kid: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int
    n_generated: int
    n_reference: int
    extractor: str
    feature_dim: int
    generated: str
    reference: str
    reference_cached: bool
    cache_file: str | None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)


def _as_source(value: Any, what: str, n: int | None) -> ImageSource:
    if isinstance(value, ImageSource):
        return value
    if isinstance(value, (str, os.PathLike)):
        return FolderImages(value, n=n, what=what)
    raise EvaluationError(f"{what} must be a folder path or an ImageSource, got {type(value).__name__}")


def compute_fid_kid(
    generated: str | os.PathLike | ImageSource,
    reference: str | os.PathLike | ImageSource,
    *,
    extractor: FeatureExtractor | None = None,
    n: int | None = None,
    n_reference: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_seed: int = 0,
    batch_size: int = 50,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: str = "cpu",
    progress: bool = False,
) -> FIDResult:
    """FID and KID of ``generated`` against ``reference``.

    Args:
        generated: a folder of images or an :class:`ImageSource`.
        reference: a folder, or an :class:`ImageSource` (e.g. :class:`DatasetImages`).
        extractor: the feature network; None: :func:`resolve_feature_extractor` (``auto``).
        n: use the first ``n`` generated images (folders only); None: all.
        n_reference: use the first ``n_reference`` reference images (folders only); None: all.
        kid_subsets: KID subsets.
        kid_subset_size: images per side per KID subset (clipped to the smaller set).
        kid_seed: seed of the KID subsets.
        batch_size: images per forward of the feature network.
        cache_dir: reference cache folder (default :func:`default_cache_dir`).
        use_cache: read/write the reference cache.
        device: where the default extractor runs.
        progress: show progress bars.

    Returns:
        :class:`FIDResult`.

    Raises:
        EvaluationError: missing/empty folders, fewer than 2 images on a side.
        FeatureNetworkUnavailable: no feature network (when ``extractor`` is None).
    """
    from hourglass.evaluation.suite import compute_metrics

    result = compute_metrics(
        generated, reference, metrics=("fid", "kid"), extractor=extractor, n=n, n_reference=n_reference,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, kid_seed=kid_seed, batch_size=batch_size,
        cache_dir=cache_dir, use_cache=use_cache, device=device, progress=progress,
    )
    return FIDResult(**{k: v for k, v in result.to_dict().items() if k != "metrics"})
