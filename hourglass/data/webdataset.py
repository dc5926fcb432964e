"""``webdataset``: images in WebDataset tar shards (``hourglass data shards`` writes them), streamed or indexed.

Layout: ``root`` holds ``*.tar`` shards (sorted by name). A sample is the tar members sharing a key
(``000042.png``, ``000042.cls``): one image file (any extension ``imagefolder`` reads) and, with
``classes = "cls"``, its class id as decimal text in ``.cls``. A ``shards.json`` next to the shards
(written by ``hourglass data shards``) gives the samples per shard and the class names; without it
the shards are scanned once (tar headers only, plus the ``.cls`` members) when the dataset is built.

Reading: ``streaming = true`` (the default) lets the loader read whole shards in sequence, split over
ranks and workers (:mod:`hourglass.data.stream`); the tar stream is parsed by the ``webdataset``
library. ``streaming = false`` indexes every member's offset once and reads samples by random access
(map-style, shuffled globally). Either way the item is made as ``imagefolder`` makes it, and corrupt
samples are skipped and counted (``load_failures``).
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor

from hourglass.data._base import check_split, parse_resolution
from hourglass.data._shards import ShardedImageDataset
from hourglass.data.imagefolder import IMAGE_EXTENSIONS, ImageOptions, read_image
from hourglass.registry import DATASET
from hourglass.spec import Problem

__all__ = ["SHARDS_FILE", "WebDataset", "WebDatasetSpec"]

#: the file next to the shards that lists them with their sample counts and the class names
SHARDS_FILE = "shards.json"
_WRITE_HINT = "write shards with `hourglass data shards IMAGE_FOLDER OUT` and set data.dataset.root to OUT"


class WebDatasetSpec(ImageOptions):
    """Spec of :class:`WebDataset`."""

    type: Literal["webdataset"] = "webdataset"
    root: str = Field(description="folder of the .tar shards; '~' is expanded, relative to the cwd")
    classes: Literal["none", "cls"] = Field(
        "none", description="none: unconditional; cls: the class id in each sample's .cls member"
    )
    streaming: bool = Field(
        True, description="read whole shards in sequence, split over ranks and workers (false: random access)"
    )


def _split_key(name: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(name)


def _scan(path: Path) -> list[dict[str, tuple[int, int]]]:
    """Each sample of a tar shard as ``{extension: (data offset, size)}``, in stored order."""
    samples: list[dict[str, tuple[int, int]]] = []
    keys: list[str] = []
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, ext = _split_key(member.name)
            if key is None or ext is None:
                continue
            if not keys or keys[-1] != key:
                keys.append(key)
                samples.append({})
            samples[-1][ext.lower()] = (member.offset_data, member.size)
    return samples


@DATASET.register("webdataset")
class WebDataset(ShardedImageDataset):
    """The samples of the WebDataset tar shards in ``spec.root`` (see the module docstring).

    Built as ``DATASET.build({"type": "webdataset", "root": "shards/ffhq"}, resolution=256,
    split="train")``. Items: ``image (C, H, W)`` in [-1, 1], ``class_cond ()``, ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`WebDatasetSpec`.
        resolution: an int or ``(H, W)``.
        split: only ``"train"``; point ``root`` at another folder of shards for another split.

    Raises:
        FileNotFoundError: when ``root`` is missing or holds no shard (or ``shards.json`` names a
            missing one).
        ValueError: when ``shards.json`` is unreadable, or ``classes = "cls"`` finds no class id.
    """

    Spec = WebDatasetSpec
    kind = "webdataset"

    @classmethod
    def classes_of(cls, spec: WebDatasetSpec) -> int | None:
        """0 for ``classes = "none"``; with ``cls``, known once the shards are read (``None``)."""
        return 0 if spec.classes == "none" else None

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    @classmethod
    def availability_problems(cls, spec: WebDatasetSpec) -> list[Problem]:
        """``root`` must be a folder holding ``.tar`` shards (all those its ``shards.json`` names)."""
        root = Path(spec.root).expanduser()
        where = "" if root.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else f"does not exist{where}"
            return [Problem("root", f"shard folder '{root}' {what}", _WRITE_HINT, spec.root)]
        listed = root / SHARDS_FILE
        if listed.is_file():
            try:
                names = [s["name"] for s in json.loads(listed.read_text())["shards"]]
            except (ValueError, KeyError, TypeError) as exc:
                return [
                    Problem(
                        "root",
                        f"'{listed}' is not a shard list ({exc})",
                        f"delete it (the shards are then scanned) or {_WRITE_HINT}",
                        spec.root,
                    )
                ]
            missing = [n for n in names if not (root / n).is_file()]
            if missing:
                return [
                    Problem(
                        "root",
                        f"shard '{root / missing[0]}' listed in {SHARDS_FILE} is missing "
                        f"({len(missing)} of {len(names)} missing)",
                        "copy the missing shards there, or write the shards again",
                        spec.root,
                    )
                ]
            return []
        if not any(root.glob("*.tar")):
            return [Problem("root", f"folder '{root}' holds no .tar shard", _WRITE_HINT, spec.root)]
        return []

    def __init__(self, spec: WebDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        self.spec = self.options = spec = WebDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, what="webdataset dataset")
        self.split = check_split(
            split, ("train",), "the webdataset dataset", "point 'root' at the shards of that split instead"
        )
        self.channels, self.streams = spec.channels, spec.streaming
        self.root = root = Path(spec.root).expanduser()
        problems = self.availability_problems(spec)
        if problems:
            raise FileNotFoundError(f"{problems[0].message}; {problems[0].hint}")
        self._index: list[list[dict[str, tuple[int, int]]]] | None = None
        listed = root / SHARDS_FILE
        names_by_id: list[str] = []
        if listed.is_file():
            meta = json.loads(listed.read_text())
            self.shard_names = [str(s["name"]) for s in meta["shards"]]
            self.shard_sizes = [int(s["samples"]) for s in meta["shards"]]
            names_by_id = [str(n) for n in meta.get("classes") or []]
        else:
            self.shard_names = sorted(p.name for p in root.glob("*.tar"))
            self._index = [_scan(root / n) for n in self.shard_names]
            self.shard_sizes = [len(samples) for samples in self._index]
        self._starts = list(itertools.accumulate(self.shard_sizes, initial=0))
        if not self.streams and self._index is None:  # random access: index every shard now, once
            self._index = [_scan(root / n) for n in self.shard_names]
        if spec.classes == "cls":
            if not names_by_id:
                found = (
                    self.read_member(i, "cls").decode(errors="replace").strip()
                    for i in range(len(self))
                    if "cls" in self._sample(i)
                )
                ids = [int(text) for text in found if text.isdigit()]
                if not ids:
                    raise ValueError(f"no sample in '{root}' has a .cls member; set classes = \"none\"")
                names_by_id = [str(i) for i in range(max(ids) + 1)]
            self.class_names = names_by_id
        else:
            self.class_names = []
        self.num_classes = len(self.class_names)
        if len(self) == 0:
            raise FileNotFoundError(f"the shards in '{root}' hold no sample; {_WRITE_HINT}")
        self.load_failures = 0

    # -- random access ------------------------------------------------------------------------------
    def _locate(self, index: int) -> tuple[int, int]:
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def _sample(self, index: int) -> dict[str, tuple[int, int]]:
        if self._index is None:  # a streamed dataset indexes its shards only when asked for one item
            self._index = [_scan(self.root / n) for n in self.shard_names]
        shard, j = self._locate(index)
        return self._index[shard][j]

    def read_member(self, index: int, ext: str) -> bytes:
        """The bytes of member ``ext`` (e.g. ``"png"``, ``"cls"``) of sample ``index`` (random access)."""
        offset, size = self._sample(index)[ext]
        with open(self.root / self.shard_names[self._locate(index)[0]], "rb") as f:
            f.seek(offset)
            return f.read(size)

    def record_at(self, index: int) -> dict[str, bytes]:
        """Sample ``index`` as ``{extension: bytes}`` (the shard opened once)."""
        out = {}
        with open(self.root / self.shard_names[self._locate(index)[0]], "rb") as f:
            for ext, (offset, size) in self._sample(index).items():
                f.seek(offset)
                out[ext] = f.read(size)
        return out

    # -- streaming -----------------------------------------------------------------------------------
    def records(self, shard: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """The samples of ``shard`` (``{"__key__", extension: bytes, ...}``) parsed by ``webdataset``."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        path = self.root / self.shard_names[shard]
        with open(path, "rb") as f:
            members = tar_file_expander([{"url": str(path), "stream": f}], eof_value=None)
            yield from itertools.islice(group_by_keys(members), skip, None)

    def decode(self, record: dict[str, Any]) -> tuple[Tensor, int]:
        """Pixels of the sample's image member and its class id (0 when unconditional).

        Raises:
            ValueError: when the sample has no image member or its class id is not one of the classes.
        """
        image = next((k for k in record if "." + k.lower() in IMAGE_EXTENSIONS), None)
        if image is None:
            raise ValueError(f"sample {record.get('__key__', '')!r} has no image member (members {sorted(record)})")
        label = 0
        if self.num_classes:
            label = int(bytes(record["cls"]).decode().strip())
            if not 0 <= label < self.num_classes:
                raise ValueError(f"class id {label} is not in [0, {self.num_classes})")
        return read_image(io.BytesIO(record[image]), self.resolution, self.options), label
