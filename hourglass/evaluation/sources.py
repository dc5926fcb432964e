"""Where evaluated images come from: a folder of image files, an ``.npz`` or a dataset, as 8-bit RGB batches.

Both kinds yield ``uint8 (B, 3, H, W)`` batches in a fixed order and describe themselves with a
JSON-able ``fingerprint`` (used to key cached reference statistics):

- :class:`FolderImages`: every image file under a folder, recursively, sorted by relative path
  (names starting with ``.`` and, by default, the ``grid.png`` that ``hourglass sample`` writes
  are skipped); grey images are replicated to RGB, transparency is dropped (as the common FID
  tools do). The fingerprint lists each file's relative path, size and modification time.
- :class:`NpzImages`: the ``arr_0`` array of an ``.npz``, ``uint8 (N, H, W, C)`` with ``C`` in
  {1, 3}: what ``hourglass sample --npz`` and guided-diffusion's / DiT's ``sample_ddp.py`` write,
  and the ADM evaluator's reference batches (their other arrays, ``mu`` / ``sigma`` included, are
  not read). It is read a batch at a time, never whole. The fingerprint names the file, its size
  and modification time.
- :class:`DatasetImages`: the first ``n`` items of a dataset (items ``{"image": (C, H, W) in
  [-1, 1], ...}``) quantised exactly as generated images are saved,
  ``round((clip(x, -1, 1) + 1) * 127.5)``; one channel is replicated to three.
"""

from __future__ import annotations

import abc
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hourglass.data._walk import walk_files
from hourglass.evaluation._errors import EvaluationError
from hourglass.evaluation.features import FeatureExtractor

__all__ = [
    "DatasetImages",
    "FolderImages",
    "ImageSource",
    "NpzImages",
    "extract_features",
    "extract_outputs",
    "image_source",
    "list_image_files",
    "to_uint8_rgb",
]

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def to_uint8_rgb(images: Tensor) -> Tensor:
    """``[-1, 1]`` float images to 8-bit RGB, quantised as ``hourglass sample`` saves PNGs.

    Args:
        images: ``(B, C, H, W)`` float with ``C`` in {1, 3}; values outside [-1, 1] are clipped.

    Returns:
        ``uint8 (B, 3, H, W)``.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, C, H, W) images with C in {{1, 3}}, got shape {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def list_image_files(root: str | os.PathLike, exclude: Sequence[str] = ("grid.png",)) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path.

    Args:
        root: the folder.
        exclude: file names to skip (default: the ``grid.png`` written by ``hourglass sample``).

    Returns:
        The files (may be empty).

    Raises:
        EvaluationError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise EvaluationError(f"folder {root} does not exist; pass a folder of images (png, jpg, ...)")
    if not root.is_dir():
        raise EvaluationError(f"{root} is a file, not a folder; pass the folder that holds the images")
    skip = set(exclude)
    return [path for path in walk_files(root, _EXTENSIONS) if path.name not in skip]


class ImageSource(abc.ABC):
    """A fixed, ordered set of images to evaluate.

    Attributes:
        label: a short human-readable description.
    """

    label: str = ""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able data that changes whenever the images may have changed (cache key)."""

    @abc.abstractmethod
    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Yield the images in order as ``uint8 (b, 3, H, W)`` batches of at most ``batch_size``
        (a batch holds images of one size only)."""


def _same_size_runs(images: list[Tensor]) -> Iterator[Tensor]:
    start = 0
    for i in range(1, len(images) + 1):
        if i == len(images) or images[i].shape != images[start].shape:
            yield torch.stack(images[start:i])
            start = i


class FolderImages(ImageSource):
    """The image files under a folder (see the module docstring for the rules).

    Args:
        root: the folder.
        n: use only the first ``n`` files (in sorted order); None: all.
        exclude: file names to skip.
        what: how messages name this folder (e.g. ``"generated"``).

    Raises:
        EvaluationError: missing folder, no image files, or fewer than ``n``.
    """

    def __init__(
        self, root: str | os.PathLike, n: int | None = None, exclude: Sequence[str] = ("grid.png",), what: str = "image"
    ) -> None:
        self.root = Path(root)
        files = list_image_files(self.root, exclude)
        if not files:
            raise EvaluationError(
                f"{what} folder {self.root} holds no image files ({', '.join(e[1:] for e in _EXTENSIONS)}); "
                "point to the folder the images were written to"
            )
        if n is not None:
            if n < 1:
                raise EvaluationError(f"the number of images must be positive, got {n}")
            if n > len(files):
                raise EvaluationError(
                    f"{what} folder {self.root} holds {len(files)} images but {n} were asked for; "
                    "lower the count or add images"
                )
            files = files[:n]
        self.files = files
        self.label = f"{self.root} ({len(files)} images)"

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> dict[str, Any]:
        entries = []
        for f in self.files:
            st = f.stat()
            entries.append([f.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns])
        return {"kind": "folder", "root": str(self.root.resolve()), "files": entries}

    def _load(self, path: Path) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise EvaluationError(f"cannot read image {path}: {exc}; delete or replace the file") from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        for start in range(0, len(self.files), batch_size):
            yield from _same_size_runs([self._load(p) for p in self.files[start : start + batch_size]])


class NpzImages(ImageSource):
    """The images of an ``.npz``'s ``arr_0``: ``uint8 (N, H, W, C)``, C = 1 (replicated to RGB) or 3.

    Args:
        path: the ``.npz`` file.
        n: use only the first ``n`` images; None: all.
        what: how messages name this file (e.g. ``"generated"``).

    Raises:
        EvaluationError: not a readable ``.npz``, no ``arr_0``, an array of another layout, or fewer than ``n``.
    """

    def __init__(self, path: str | os.PathLike, n: int | None = None, what: str = "image") -> None:
        self.path = Path(path)
        self.shape, self._offset = self._header(what)
        size = self.shape[0]
        if n is not None and not 1 <= n <= size:
            raise EvaluationError(f"{what} file {self.path} holds {size} images but {n} were asked for; "
                                  f"use a count from 1 to {size}")
        self.n = size if n is None else n
        self.label = f"{self.path} ({self.n} images)"

    def _header(self, what: str) -> tuple[tuple[int, ...], int]:
        """``arr_0``'s shape, and where its data start in the member."""
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                offset = f.tell()
        except KeyError:
            raise EvaluationError(f"{what} file {self.path} has no arr_0 array; give an .npz written by `hourglass "
                                  "sample --npz` or sample_ddp.py (images in arr_0)") from None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise EvaluationError(f"cannot read {what} file {self.path}: {exc}; give an .npz file of images") from None
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3) or fortran or shape[0] == 0:
            raise EvaluationError(
                f"{what} file {self.path}: arr_0 is {dtype} of shape {shape}; it must hold uint8 images "
                "(N, H, W, C) with C = 1 or 3 (channels last, as sample_ddp.py writes them)")
        return tuple(int(v) for v in shape), offset

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"kind": "npz", "path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "n": self.n}

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        per_image = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
            f.read(self._offset)
            for start in range(0, self.n, batch_size):
                b = min(batch_size, self.n - start)
                data = f.read(b * per_image)
                if len(data) != b * per_image:
                    raise EvaluationError(f"{self.path} ends inside image {start + len(data) // per_image}; "
                                          "the file is cut short: write it again")
                x = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(b, *self.shape[1:]).copy())
                x = x.permute(0, 3, 1, 2)
                yield (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()


def image_source(path: str | os.PathLike, n: int | None = None, what: str = "image") -> ImageSource:
    """:class:`NpzImages` for a file ending in ``.npz``, else :class:`FolderImages` (first ``n`` images)."""
    if str(path).lower().endswith(".npz") and not Path(path).is_dir():
        if not Path(path).is_file():
            raise EvaluationError(f"{what} file {path} does not exist; give the .npz that was written")
        return NpzImages(path, n=n, what=what)
    return FolderImages(path, n=n, what=what)


class DatasetImages(ImageSource):
    """The first ``n`` items of a dataset whose items are dicts with an ``"image"`` in [-1, 1].

    Items are read with keys ``(i, draw)`` (draw seed from ``seed``) when the dataset takes them
    (``uses_draw_keys``), so random crops and flips are the same on every run.

    Args:
        dataset: the dataset (``len`` and ``dataset[key]``).
        n: number of items; None: all of them.
        seed: seed of the per-item draws.
        fingerprint: JSON-able description of the dataset (spec, resolution, split) for the cache
            key; None: this source is never cached.
        label: the human-readable description.

    Raises:
        EvaluationError: the dataset is empty or shorter than ``n``.
    """

    def __init__(
        self, dataset: Any, n: int | None = None, seed: int = 0, fingerprint: dict[str, Any] | None = None,
        label: str = "dataset",
    ) -> None:
        size = len(dataset)
        if size == 0:
            raise EvaluationError(f"{label} is empty; choose a dataset with images")
        if n is not None and not 1 <= n <= size:
            raise EvaluationError(f"{label} has {size} items but {n} were asked for; use a count from 1 to {size}")
        self.dataset, self.n, self.seed = dataset, size if n is None else n, seed
        self._fingerprint = fingerprint
        self.label = f"{label} ({self.n} images)"

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            raise EvaluationError("this dataset source has no fingerprint, so its statistics cannot be cached")
        return {"kind": "dataset", "n": self.n, "seed": self.seed, **self._fingerprint}

    @property
    def cacheable(self) -> bool:
        """Whether a fingerprint was given."""
        return self._fingerprint is not None

    def _key(self, i: int) -> Any:
        if getattr(self.dataset, "uses_draw_keys", False):
            from hourglass.data import mix_seed

            return (i, mix_seed(self.seed, i))
        return i

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        for start in range(0, self.n, batch_size):
            images = []
            for i in range(start, min(start + batch_size, self.n)):
                item = self.dataset[self._key(i)]
                image = item["image"] if isinstance(item, dict) else item
                if not isinstance(image, Tensor) or image.ndim != 3:
                    raise EvaluationError(
                        f"dataset item {i} has no (C, H, W) tensor image (got {type(image).__name__}); items must be "
                        "dicts with an 'image' in [-1, 1]"
                    )
                images.append(to_uint8_rgb(image[None])[0])
            yield from _same_size_runs(images)


def extract_outputs(
    source: ImageSource,
    extractor: FeatureExtractor,
    outputs: Sequence[str] = ("features",),
    *,
    batch_size: int = 50,
    progress: bool | Callable[[int], None] = False,
    desc: str = "features",
) -> dict[str, np.ndarray]:
    """Run ``extractor`` over every image of ``source``, keeping several outputs of each forward.

    Args:
        source: the images.
        extractor: the feature network.
        outputs: names from ``extractor.outputs``: ``"features"`` and/or ``"logits"``.
        batch_size: images per forward.
        progress: True for a tqdm bar on stderr, or a callable receiving the images done per batch.
        desc: the bar's label.

    Returns:
        ``{name: (N, ...) float32 array}``, rows in ``source`` order.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch size must be positive, got {batch_size}")
    outputs = tuple(outputs)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(source), desc=desc, unit="img", dynamic_ncols=True)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    try:
        for batch in source.batches(batch_size):
            for name, value in extractor.extract(batch, outputs).items():
                chunks[name].append(value.astype(np.float32))
            if bar is not None:
                bar.update(batch.shape[0])
            elif callable(progress):
                progress(batch.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return {name: np.concatenate(parts, axis=0) for name, parts in chunks.items()}


def extract_features(
    source: ImageSource,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 50,
    progress: bool | Callable[[int], None] = False,
    desc: str = "features",
) -> np.ndarray:
    """Run ``extractor`` over every image of ``source``.

    Args:
        source: the images.
        extractor: the feature network.
        batch_size: images per forward.
        progress: True for a tqdm bar on stderr, or a callable receiving the images done per batch.
        desc: the bar's label.

    Returns:
        ``(N, D)`` float32 features, in ``source`` order.
    """
    return extract_outputs(source, extractor, ("features",), batch_size=batch_size, progress=progress,
                           desc=desc)["features"]
