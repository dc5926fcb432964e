"""Datasets (procedural, bundled and image folders), Karras augmentation and the resumable loader.

Importing this package registers the built-in datasets in :data:`hourglass.registry.DATASET`:
``shapes``, ``digits``, ``lfw``, ``imagefolder``, ``latents`` (precomputed latents, whose values are
not confined to [-1, 1]), the sharded ``webdataset`` and ``hf_datasets`` (streamed by
:class:`~hourglass.data.stream.StreamLoader`), and the conditioning wrappers ``superres``,
``paired`` and ``vectors`` (:mod:`hourglass.data.conditioned`). Build one with
``DATASET.build(spec, resolution=32, split="train")``; every item is
``{"image": (C, H, W) in [-1, 1], "class_cond": () int64, "aug_cond": (9,) float32}``, plus
``"mapping_cond": (D,)`` and ``"cond_image": (C', H', W')`` where the dataset gives conditions.
"""

from hourglass.data import augment, bundled, conditioned, hf, imagefolder, latents, loader, shapes, stream, webdataset
from hourglass.data._base import DatasetComponent, ImageDataset, mix_seed
from hourglass.data.augment import (
    Augmented,
    AugmentParams,
    KarrasAugmentSpec,
    apply_augment,
    augment_matrix,
    karras_augment,
    sample_augment_params,
)
from hourglass.data.bundled import DigitsDataset, DigitsDatasetSpec, LFWDataset, LFWDatasetSpec
from hourglass.data.conditioned import (
    PairedFolderDataset,
    PairedFolderDatasetSpec,
    SuperResDataset,
    SuperResDatasetSpec,
    VectorsDataset,
    VectorsDatasetSpec,
)
from hourglass.data.hf import HFDataset, HFDatasetSpec
from hourglass.data.imagefolder import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageFolderDatasetSpec,
    pil_to_tensor,
)
from hourglass.data.latents import LatentsDataset, LatentsDatasetSpec
from hourglass.data.loader import ResumableDataLoader, ShardedBatchSampler, create_dataloader
from hourglass.data.shapes import SHAPE_NAMES, ShapesDataset, ShapesDatasetSpec, render_shape
from hourglass.data.stream import StreamLoader
from hourglass.data.webdataset import WebDataset, WebDatasetSpec

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPE_NAMES",
    "AugmentParams",
    "Augmented",
    "DatasetComponent",
    "DigitsDataset",
    "DigitsDatasetSpec",
    "HFDataset",
    "HFDatasetSpec",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageFolderDatasetSpec",
    "KarrasAugmentSpec",
    "LFWDataset",
    "LFWDatasetSpec",
    "LatentsDataset",
    "LatentsDatasetSpec",
    "PairedFolderDataset",
    "PairedFolderDatasetSpec",
    "ResumableDataLoader",
    "ShapesDataset",
    "ShapesDatasetSpec",
    "ShardedBatchSampler",
    "StreamLoader",
    "SuperResDataset",
    "SuperResDatasetSpec",
    "VectorsDataset",
    "VectorsDatasetSpec",
    "WebDataset",
    "WebDatasetSpec",
    "apply_augment",
    "augment",
    "augment_matrix",
    "bundled",
    "conditioned",
    "create_dataloader",
    "hf",
    "imagefolder",
    "karras_augment",
    "latents",
    "loader",
    "mix_seed",
    "pil_to_tensor",
    "render_shape",
    "sample_augment_params",
    "shapes",
    "stream",
    "webdataset",
]
