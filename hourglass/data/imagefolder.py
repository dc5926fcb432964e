"""``imagefolder``: every image under a folder, recursively, optionally labelled by subfolder.

Files: extensions ``.png .jpg .jpeg .webp .bmp .gif .tif .tiff`` (any case), found recursively
(following symbolic links once), sorted by relative path; names and folders starting with ``.``
are ignored. A GIF gives its first frame.

Classes: ``classes="none"`` is unconditional; ``classes="subfolders"`` labels each image by the
top-level folder under ``root`` that holds it (nested folders below it belong to it), class ids
following the sorted folder names of the folders that hold at least one image file (before
verification, so a corrupt file never shifts the ids). Files lying directly in ``root`` are then
ignored with a warning.

Pixels, converted to float in [0, 1] before anything else:
* 8-bit grey/RGB/palette/CMYK/YCbCr as usual; 16-bit grey (``I;16*``, and ``I``) divided by 65535,
  so a 16-bit PNG keeps its full precision; float (``F``) clipped to [0, 1].
* transparency (RGBA, LA, PA, palette or grey with a transparent colour) is composited over a
  white background by default (``alpha="black"`` over black, ``alpha="drop"`` discards alpha).
* EXIF orientation is applied.
* 3 channels: grey is replicated; 1 channel: ITU-R 601 luma of RGB.

Geometry: the image is scaled (bicubic, antialiased when shrinking) so its shorter side matches
the target (images smaller than the target are upscaled; set ``min_size`` to skip them instead),
then centre-cropped (``crop="random"``: a random window), then flipped horizontally with probability
``hflip``. This flip is not reported in ``aug_cond``; for Karras non-leaking augmentation wrap the
dataset in :class:`hourglass.data.augment.Augmented`.

Unreadable files: at construction each file is opened and checked with PIL ``verify`` (header and,
for PNG, chunk checksums, without decoding); failures are skipped and reported in ONE warning that
counts them and names the first few. Some damage (a truncated JPEG) only shows when decoding: such
an item is then replaced by the next readable image (with that image's label), the failure is
counted in ``load_failures`` and warned about once per process.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import Field
from torch import Tensor

from hourglass.data._base import ImageDataset, check_split, parse_resolution, resize_cover, to_channels
from hourglass.data._walk import label_by_subfolder, walk_files
from hourglass.registry import DATASET
from hourglass.spec import Problem, Spec

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageFolderDatasetSpec", "ImageOptions", "finish_image",
    "pil_to_tensor", "read_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_LISTED_IN_WARNING = 5


class ImageOptions(Spec):
    """How image files become training images: channels, crop, flip, transparency (shared by the
    datasets that decode image files: ``imagefolder``, ``webdataset``, ``hf_datasets``)."""

    channels: Literal[1, 3] = Field(3, description="3: RGB (grey replicated); 1: grey (luma of RGB)")
    crop: Literal["center", "random"] = Field(
        "center", description="after scaling the shorter side to the target: crop the centre or a random window"
    )
    hflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a horizontal flip (not reported in aug_cond)")
    alpha: Literal["white", "black", "drop"] = Field(
        "white", description="transparent images: composite over white or black, or drop the alpha channel"
    )


class ImageFolderDatasetSpec(ImageOptions):
    """Spec of :class:`ImageFolderDataset`."""

    type: Literal["imagefolder"] = "imagefolder"
    root: str = Field(description="folder searched recursively for images; '~' is expanded, relative to the cwd")
    classes: Literal["none", "subfolders"] = Field(
        "none", description="none: unconditional; subfolders: class ids by sorted top-level folder name"
    )
    min_size: int = Field(
        0, ge=0, description="skip images whose shorter side is below this many px (0: keep all, upscale small ones)"
    )
    verify: bool = Field(True, description="check every file with PIL verify when indexing (skips corrupt files)")


def read_image(source: Any, resolution: tuple[int, int], options: ImageOptions) -> Tensor:
    """Decode an image file at full size (a JPEG at the smallest scale that still covers ``resolution``).

    Args:
        source: a path or a binary file object (e.g. ``io.BytesIO`` of a file's bytes).
        resolution: the target ``(H, W)`` the image will be cropped to.
        options: channels and transparency handling.

    Returns:
        ``(C, h, w)`` float32 in [0, 1], EXIF orientation applied.

    Raises:
        OSError: (or another PIL error) when the data cannot be decoded.
    """
    height, width = resolution
    with Image.open(source) as image:
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            w, h = image.size  # decode at a reduced scale that still covers the target
            s = max(height, width) / min(h, w)
            image.draft(image.mode, (math.ceil(w * s), math.ceil(h * s)))
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        image.load()
        return pil_to_tensor(image, options.channels, options.alpha)


def finish_image(pixels: Tensor, resolution: tuple[int, int], options: ImageOptions,
                 generator: torch.Generator | None) -> Tensor:
    """Scale to cover ``resolution``, crop (centre or random), flip with probability ``options.hflip``.

    Args:
        pixels: ``(C, h, w)`` in [0, 1].
        resolution: ``(H, W)``.
        options: crop and flip settings.
        generator: RNG of the random crop and the flip (None: torch's global RNG).

    Returns:
        ``(C, H, W)`` float32 in [-1, 1].
    """
    image = resize_cover(pixels, resolution, random_crop=options.crop == "random", generator=generator)
    if torch.rand((), generator=generator) < options.hflip:
        image = image.flip(-1)
    return image.clamp(0.0, 1.0) * 2 - 1


def pil_to_tensor(image: Image.Image, channels: int = 3, alpha: str = "white") -> Tensor:
    """Convert a PIL image of any common mode to float ``(channels, h, w)`` in [0, 1].

    Args:
        image: a PIL image (8- or 16-bit grey, float, RGB, RGBA, LA, palette, CMYK, ...).
        channels: 1 or 3.
        alpha: ``"white"`` / ``"black"``: composite transparency over that colour; ``"drop"``: ignore it.

    Returns:
        ``(channels, h, w)`` float32 in [0, 1].
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        array = np.asarray(image).astype(np.float32)[..., None] / 65535.0
    elif mode == "F":
        array = np.asarray(image, dtype=np.float32)[..., None]
    else:
        transparent = mode in _ALPHA_MODES or "transparency" in image.info
        grey = mode in ("1", "L", "LA", "La") or (mode == "P" and _palette_is_grey(image))
        if transparent:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            array = rgba[..., :3]
            if alpha != "drop":
                a = rgba[..., 3:]
                array = array * a + (1.0 if alpha == "white" else 0.0) * (1.0 - a)
            if grey:
                array = array[..., :1]
        elif grey:
            array = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
        else:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).clamp(0.0, 1.0)
    return to_channels(tensor, channels)


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3) if len(palette) % 3 == 0 else None
    return rgb is not None and len(rgb) > 0 and bool((rgb == rgb[:, :1]).all())


def _listing(items: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name} ({why})" for name, why in items[:_LISTED_IN_WARNING])
    more = len(items) - _LISTED_IN_WARNING
    return shown + (f", and {more} more" if more > 0 else "")


@DATASET.register("imagefolder")
class ImageFolderDataset(ImageDataset):
    """Every image under ``spec.root`` (see the module docstring for the exact rules).

    Built as ``DATASET.build({"type": "imagefolder", "root": "data/ffhq"}, resolution=256,
    split="train")``. Items: ``image (C, H, W)`` in [-1, 1], ``class_cond ()`` the class id (0 when
    unconditional), ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`ImageFolderDatasetSpec`.
        resolution: an int or ``(H, W)``.
        split: only ``"train"``; point ``root`` at another folder for another split.

    Raises:
        FileNotFoundError: when ``root`` is missing or holds no (readable) image, naming the path
            and the extensions looked for.

    Attributes:
        files: relative paths (posix) of the images kept, in index order.
        labels: class id of each kept image.
        skipped: ``(relative path, reason)`` of every file skipped at construction.
        load_failures: number of items this process had to replace while loading.
    """

    Spec = ImageFolderDatasetSpec

    @classmethod
    def classes_of(cls, spec: ImageFolderDatasetSpec) -> int | None:
        """0 for ``classes = "none"``; with subfolders, known only once the files are listed (``None``)."""
        return 0 if spec.classes == "none" else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    @classmethod
    def availability_problems(cls, spec: ImageFolderDatasetSpec) -> list[Problem]:
        """``root`` must be a readable folder holding at least one image file (inside a class
        subfolder with ``classes = "subfolders"``); stops at the first image found."""
        root = Path(spec.root).expanduser()
        where = "" if root.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        looked_for = " ".join(IMAGE_EXTENSIONS)
        fix = "set data.dataset.root to the folder of your images (e.g. --set data.dataset.root=/data/ffhq)"
        if not root.exists():
            return [Problem("root", f"folder '{root}' does not exist{where}", fix, spec.root)]
        if not root.is_dir():
            return [Problem("root", f"'{root}' is a file, not a folder", fix, spec.root)]
        if not os.access(root, os.R_OK | os.X_OK):
            return [Problem("root", f"folder '{root}' cannot be read (permission denied)",
                            "make it readable by this user, or point root at a copy", spec.root)]
        if walk_files(root, IMAGE_EXTENSIONS, first=True, in_subfolders=spec.classes == "subfolders"):
            return []
        if spec.classes == "subfolders":
            loose = next(iter(walk_files(root, IMAGE_EXTENSIONS, first=True)), None)
            hint = ("its images lie directly in it: move them into one subfolder per class, or set "
                    "data.dataset.classes = \"none\"" if loose is not None else fix)
            return [Problem("root", f"folder '{root}' holds no image inside a class subfolder "
                            f"(classes = \"subfolders\"; looked for {looked_for})", hint, spec.root)]
        return [Problem("root", f"folder '{root}' holds no image file (looked recursively for {looked_for})",
                        "put the images there, or point data.dataset.root at the folder that holds them", spec.root)]

    def __init__(
        self, spec: ImageFolderDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train"
    ) -> None:
        self.spec = spec = ImageFolderDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, what="imagefolder dataset")
        self.split = check_split(
            split, ("train",), "the imagefolder dataset", "point 'root' at the folder of that split instead"
        )
        self.channels = spec.channels
        self.root = root = Path(spec.root).expanduser()
        looked_for = " ".join(IMAGE_EXTENSIONS)
        if not root.exists():
            raise FileNotFoundError(f"image folder '{root}' does not exist (looked for {looked_for} files); fix 'root'")
        if not root.is_dir():
            raise NotADirectoryError(f"image folder '{root}' is a file, not a folder; set 'root' to a folder")
        paths = walk_files(root, IMAGE_EXTENSIONS)
        if spec.classes == "subfolders":
            paths, self.class_names, labels = label_by_subfolder(root, paths, "image(s)")
            candidates = list(zip(paths, labels, strict=True))
        else:
            self.class_names = []
            candidates = [(p, 0) for p in paths]
        self.num_classes = len(self.class_names)
        if not candidates:
            raise FileNotFoundError(
                f"no images found in '{root}' (looked recursively for {looked_for}"
                + (" inside class subfolders" if spec.classes == "subfolders" else "")
                + "); check 'root'"
            )

        self.skipped: list[tuple[str, str]] = []
        small: list[tuple[str, str]] = []
        self.files: list[str] = []
        labels: list[int] = []
        for path, label in candidates:
            rel = path.relative_to(root).as_posix()
            try:
                with Image.open(path) as image:
                    size = image.size
                    if spec.verify:
                        image.verify()
            except Exception as exc:  # any failure to parse means unusable
                self.skipped.append((rel, f"{type(exc).__name__}: {exc}".strip()))
                continue
            if min(size) < spec.min_size:
                small.append((rel, f"{size[0]}x{size[1]}"))
                continue
            self.files.append(rel)
            labels.append(label)
        self.labels = np.asarray(labels, dtype=np.int64)
        total = len(candidates)
        if not self.files:  # one error naming the reasons, no warnings before it
            reasons = _listing(self.skipped + [(rel, f"smaller than min_size={spec.min_size} px: {why}")
                                               for rel, why in small])
            raise FileNotFoundError(
                f"none of the {total} image files in '{root}' is usable (unreadable or below min_size): {reasons}"
            )
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} of {total} images under '{root}' that could not be read: "
                + _listing(self.skipped),
                UserWarning,
                stacklevel=2,
            )
        if small:
            warnings.warn(
                f"skipped {len(small)} of {total} images under '{root}' smaller than min_size={spec.min_size} px: "
                + _listing(small),
                UserWarning,
                stacklevel=2,
            )
            self.skipped.extend((rel, f"smaller than min_size: {why}") for rel, why in small)
        self.load_failures = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> Tensor:
        """Decode image ``index`` at full size (no resizing).

        Returns:
            ``(C, h, w)`` float32 in [0, 1].

        Raises:
            OSError: (or another PIL error) when the file cannot be decoded.
        """
        return read_image(self.root / self.files[index], self.resolution, self.spec)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """Item ``index`` resized, cropped and flipped; the next readable image if it fails to decode."""
        n = len(self.files)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                pixels = self.read(i)
            except Exception as exc:
                self._bad.add(i)
                self.load_failures += 1
                if self.load_failures == 1:
                    warnings.warn(
                        f"could not decode '{self.root / self.files[i]}' ({type(exc).__name__}: {exc}); "
                        "using the next readable image instead. Later failures in this process are only "
                        "counted (dataset.load_failures)",
                        UserWarning,
                        stacklevel=3,
                    )
                continue
            return finish_image(pixels, self.resolution, self.spec, generator), int(self.labels[i])
        raise RuntimeError(f"none of the {n} images under '{self.root}' could be decoded; check the files")
