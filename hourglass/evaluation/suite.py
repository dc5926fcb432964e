"""Several metrics of one set of generated images in one pass: FID, KID, FD_DINOv2, IS, precision/recall.

:func:`compute_metrics` runs each feature network once per image set and derives every requested
metric from those features:

- ``fid``, ``kid``: Inception pool features (or the chosen extractor's), as :func:`compute_fid_kid`;
- ``fd_dinov2``: the Fréchet distance of DINOv2 ViT-L/14 features (:mod:`hourglass.evaluation.dinov2`);
- ``is``: the Inception Score of the generated images' class logits (no reference needed);
- ``pr``: improved precision and recall (k-NN manifolds, ``k = 3``) of the same features as FID,
  Inception pool features as in ADM's evaluator.

The reference side's statistics are cached per feature network (``<cache dir>/ref-<key>.npz``, see
:mod:`hourglass.evaluation.fid`): the Inception and the DINOv2 statistics of one reference are two
files, each reused by every later evaluation against that reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hourglass.evaluation._errors import EvaluationError
from hourglass.evaluation.features import FeatureExtractor, resolve_feature_extractor
from hourglass.evaluation.metrics import (
    FeatureStats,
    fid_from_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from hourglass.evaluation.sources import ImageSource, extract_outputs

__all__ = ["DEFAULT_METRICS", "METRIC_NAMES", "MetricsResult", "compute_metrics", "parse_metrics"]

#: every metric :func:`compute_metrics` knows, in report order
METRIC_NAMES: tuple[str, ...] = ("fid", "kid", "fd_dinov2", "is", "pr")
#: what ``hourglass eval`` computes unless ``--metrics`` says otherwise
DEFAULT_METRICS: tuple[str, ...] = ("fid", "kid")

_MAIN = frozenset({"fid", "kid", "is", "pr"})  # metrics of the Inception (main) extractor
_NEED_REFERENCE = frozenset({"fid", "kid", "fd_dinov2", "pr"})


def parse_metrics(value: str | Sequence[str]) -> tuple[str, ...]:
    """Metric names from ``"fid,kid,is"`` (or a list), checked and put in :data:`METRIC_NAMES` order.

    ``all`` stands for every metric; names are case-insensitive, blanks and repeats are ignored.

    Raises:
        EvaluationError: an unknown name, or none at all.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip().lower() for item in items} - {""}
    if "all" in names:
        names = (names - {"all"}) | set(METRIC_NAMES)
    unknown = sorted(names - set(METRIC_NAMES))
    if unknown:
        raise EvaluationError(f"unknown metric {', '.join(map(repr, unknown))}; choose from {', '.join(METRIC_NAMES)} "
                              "(comma-separated) or all")
    if not names:
        raise EvaluationError(f"no metric given; choose from {', '.join(METRIC_NAMES)} (comma-separated) or all")
    return tuple(m for m in METRIC_NAMES if m in names)


@dataclass(frozen=True)
class MetricsResult:
    """The requested metrics of one generated set (fields of metrics not requested are None).

    Attributes:
        metrics: the metrics computed, in :data:`METRIC_NAMES` order.
        n_generated: generated images evaluated.
        generated: description of the generated images.
        n_reference: reference images (None without a reference: IS only).
        reference: description of the reference.
        fid: the Fréchet Inception Distance.
        kid, kid_std, kid_subsets, kid_subset_size: KID mean and std over subsets, and their number and size.
        fd_dinov2: the Fréchet distance of DINOv2 ViT-L/14 features.
        inception_score, inception_score_std, is_splits: IS mean and std over the splits, and their number.
        precision, recall, pr_k: improved precision and recall, and the neighbourhood size.
        extractor, feature_dim: the Inception-side network (FID, KID, IS, precision/recall) and ``D``.
        reference_cached, cache_file: whether its reference statistics came from the cache, and the file.
        dinov2_extractor, dinov2_feature_dim, dinov2_reference_cached, dinov2_cache_file: the same
            for FD_DINOv2's network.
    """

    metrics: tuple[str, ...]
    n_generated: int
    generated: str
    n_reference: int | None = None
    reference: str | None = None
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    kid_subsets: int | None = None
    kid_subset_size: int | None = None
    fd_dinov2: float | None = None
    inception_score: float | None = None
    inception_score_std: float | None = None
    is_splits: int | None = None
    precision: float | None = None
    recall: float | None = None
    pr_k: int | None = None
    extractor: str | None = None
    feature_dim: int | None = None
    reference_cached: bool | None = None
    cache_file: str | None = None
    dinov2_extractor: str | None = None
    dinov2_feature_dim: int | None = None
    dinov2_reference_cached: bool | None = None
    dinov2_cache_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The requested metrics and their details as a JSON-able dict (no keys of other metrics).

        For ``fid,kid`` the keys are those of :meth:`FIDResult.to_dict
        <hourglass.evaluation.FIDResult.to_dict>` plus ``metrics``.
        """
        keys: list[str] = []
        per_metric = {
            "fid": ("fid",),
            "kid": ("kid", "kid_std", "kid_subsets", "kid_subset_size"),
            "fd_dinov2": ("fd_dinov2",),
            "is": ("inception_score", "inception_score_std", "is_splits"),
            "pr": ("precision", "recall", "pr_k"),
        }
        for metric in self.metrics:
            keys += per_metric[metric]
        keys += ["n_generated", "n_reference"]
        if _MAIN & set(self.metrics):
            keys += ["extractor", "feature_dim"]
        keys += ["generated", "reference"]
        if _MAIN & set(self.metrics):
            keys += ["reference_cached", "cache_file"]
        if "fd_dinov2" in self.metrics:
            keys += ["dinov2_extractor", "dinov2_feature_dim", "dinov2_reference_cached", "dinov2_cache_file"]
        return {"metrics": list(self.metrics), **{k: getattr(self, k) for k in keys}}


def _check_counts(metrics: tuple[str, ...], gen: ImageSource, ref: ImageSource | None, is_splits: int,
                  pr_k: int) -> None:
    sides = [(gen, "generated")] + ([(ref, "reference")] if ref is not None else [])
    if {"fid", "kid", "fd_dinov2"} & set(metrics):
        for source, what in sides:
            if len(source) < 2:
                raise EvaluationError(f"FID needs at least 2 {what} images, got {len(source)}; add images")
    if "pr" in metrics:
        if pr_k < 1:
            raise EvaluationError(f"the precision/recall neighbourhood k must be positive, got {pr_k}")
        for source, what in sides:
            if len(source) <= pr_k:
                raise EvaluationError(f"precision/recall with k={pr_k} needs more than {pr_k} {what} images, got "
                                      f"{len(source)}; add images or lower k")
    if "is" in metrics:
        if is_splits < 1:
            raise EvaluationError(f"the Inception Score needs at least 1 split, got {is_splits}")
        if len(gen) < is_splits:
            raise EvaluationError(f"the Inception Score with {is_splits} splits needs at least {is_splits} generated "
                                  f"images, got {len(gen)}; add images or lower the splits")


def compute_metrics(
    generated: str | os.PathLike | ImageSource,
    reference: str | os.PathLike | ImageSource | None = None,
    *,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    extractor: FeatureExtractor | None = None,
    dinov2: FeatureExtractor | None = None,
    n: int | None = None,
    n_reference: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_seed: int = 0,
    is_splits: int = 10,
    pr_k: int = 3,
    batch_size: int = 50,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: str = "cpu",
    progress: bool = False,
) -> MetricsResult:
    """The requested ``metrics`` of ``generated`` (against ``reference``).

    Args:
        generated: a folder of images or an :class:`ImageSource`.
        reference: a folder or an :class:`ImageSource`; needed by every metric but ``is``.
        metrics: names from :data:`METRIC_NAMES` (a list or ``"fid,kid,fd_dinov2,is,pr"``; ``all``).
        extractor: the Inception-side network (FID, KID, IS, precision/recall); None:
            :func:`resolve_feature_extractor` (``auto``; with logits when ``is`` is asked for).
        dinov2: FD_DINOv2's network; None: :func:`~hourglass.evaluation.dinov2.load_dinov2`
            (local file / Hugging Face cache).
        n: use the first ``n`` generated images (folders only); None: all.
        n_reference: use the first ``n_reference`` reference images (folders only); None: all.
        kid_subsets: KID subsets.
        kid_subset_size: images per side per KID subset (clipped to the smaller set).
        kid_seed: seed of the KID subsets.
        is_splits: Inception Score splits (10).
        pr_k: precision/recall neighbourhood size (3).
        batch_size: images per forward of the feature networks.
        cache_dir: reference cache folder (default :func:`~hourglass.evaluation.default_cache_dir`).
        use_cache: read/write the reference cache.
        device: where default networks run (and the precision/recall distances).
        progress: show progress bars.

    Returns:
        :class:`MetricsResult`.

    Raises:
        EvaluationError: unknown metrics, no reference where one is needed, too few images.
        FeatureNetworkUnavailable: a needed network (or its logits) is not available here.
    """
    from hourglass.evaluation.fid import _as_source, reference_cache_path, reference_statistics

    metrics = parse_metrics(metrics)
    wanted = set(metrics)
    gen_source = _as_source(generated, "generated", n)
    ref_source = None
    if reference is not None:
        ref_source = _as_source(reference, "reference", n_reference)
    elif wanted & _NEED_REFERENCE:
        needing = ", ".join(m for m in metrics if m in _NEED_REFERENCE)
        raise EvaluationError(f"{needing} compare against reference images; give a reference (only 'is' needs none)")
    _check_counts(metrics, gen_source, ref_source if wanted & _NEED_REFERENCE else None, is_splits, pr_k)
    # Load every network first, so a missing one fails before any long feature pass.
    if wanted & _MAIN and extractor is None:
        extractor = resolve_feature_extractor(device=device, need_logits="is" in wanted)
    if "is" in wanted and "logits" not in extractor.outputs:
        from hourglass.evaluation.features import _without_logits

        raise _without_logits(extractor)
    if "fd_dinov2" in wanted and dinov2 is None:
        from hourglass.evaluation.dinov2 import load_dinov2

        dinov2 = load_dinov2(device=device)
    cacheable = use_cache and ref_source is not None and getattr(ref_source, "cacheable", True)
    out: dict[str, Any] = {"metrics": metrics, "n_generated": len(gen_source), "generated": gen_source.label}
    if ref_source is not None and wanted & _NEED_REFERENCE:
        out.update(n_reference=len(ref_source), reference=ref_source.label)
    kw = {"batch_size": batch_size, "progress": progress}

    if wanted & _MAIN:
        outputs = ("features", "logits") if "is" in wanted else ("features",)
        ref_stats = None
        if wanted & {"fid", "kid", "pr"}:
            ref_stats, hit = reference_statistics(ref_source, extractor, cache_dir=cache_dir, use_cache=use_cache, **kw)
            out.update(reference_cached=hit, cache_file=str(reference_cache_path(ref_source, extractor, cache_dir))
                       if cacheable else None)
        gen = extract_outputs(gen_source, extractor, outputs, desc="generated", **kw)
        features = gen["features"]
        out.update(extractor=extractor.name, feature_dim=int(features.shape[1]))
        if ref_stats is not None and features.shape[1] != ref_stats.features.shape[1]:
            raise EvaluationError(f"feature sizes differ ({features.shape[1]} vs {ref_stats.features.shape[1]})")
        if wanted & {"fid", "kid"}:
            gen_stats = FeatureStats.from_features(features, extractor.name)
            if "fid" in wanted:
                out["fid"] = fid_from_stats(gen_stats, ref_stats)
            if "kid" in wanted:
                kid = kernel_inception_distance(gen_stats.features, ref_stats.features, subsets=kid_subsets,
                                                subset_size=kid_subset_size, seed=kid_seed)
                out.update(kid=kid.mean, kid_std=kid.std, kid_subsets=kid.subsets, kid_subset_size=kid.subset_size)
        if "pr" in wanted:
            pr = precision_recall(ref_stats.features, features, k=pr_k, device=extractor.device)
            out.update(precision=pr.precision, recall=pr.recall, pr_k=pr.k)
        if "is" in wanted:
            score = inception_score(gen["logits"], splits=is_splits)
            out.update(inception_score=score.mean, inception_score_std=score.std, is_splits=score.splits)

    if "fd_dinov2" in wanted:
        ref_stats, hit = reference_statistics(ref_source, dinov2, cache_dir=cache_dir, use_cache=use_cache, **kw)
        gen_features = extract_outputs(gen_source, dinov2, ("features",), desc="generated (DINOv2)", **kw)["features"]
        if gen_features.shape[1] != ref_stats.features.shape[1]:
            raise EvaluationError(f"DINOv2 feature sizes differ ({gen_features.shape[1]} vs "
                                  f"{ref_stats.features.shape[1]})")
        out.update(
            fd_dinov2=fid_from_stats(FeatureStats.from_features(gen_features, dinov2.name), ref_stats),
            dinov2_extractor=dinov2.name, dinov2_feature_dim=int(gen_features.shape[1]), dinov2_reference_cached=hit,
            dinov2_cache_file=str(reference_cache_path(ref_source, dinov2, cache_dir)) if cacheable else None,
        )
    return MetricsResult(**out)
