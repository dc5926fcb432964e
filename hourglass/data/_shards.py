"""Shared machinery of the sharded datasets (``webdataset``, ``hf_datasets``): records, items, stream order.

A sharded dataset holds its samples in *shards* (tar files, Parquet files) of known sizes. Every
sample is a *record* (the encoded image and its label, as stored); decoding a record gives the
pixels and the class id, and the item is made from them exactly as ``imagefolder`` makes it (scale,
crop, flip from the key's draw seed).

Two ways to read one:

* indexed (map-style): ``dataset[(index, draw)]`` reads record ``index`` by random access; the
  loader's :class:`~hourglass.data.loader.ShardedBatchSampler` shuffles all items globally.
* streamed: the loader of :mod:`hourglass.data.stream` reads whole shards in sequence, split over
  ranks and workers; see :meth:`ShardedImageDataset.slot_shards` and
  :meth:`ShardedImageDataset.shard_records` for the order, a pure function of ``(seed, epoch)``.

Corrupt records (that do not decode, or hold no image) are skipped: indexed access takes the next
readable record instead (like ``imagefolder``), a stream moves on to the next record; both count
them in ``load_failures`` and warn once per process.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from hourglass.data._base import ImageDataset, make_item, mix_seed
from hourglass.data.imagefolder import ImageOptions, finish_image

__all__ = ["ShardedImageDataset"]


class ShardedImageDataset(ImageDataset):
    """Base of the sharded datasets: shard sizes, record decoding, the stream order, failure counting.

    Subclasses set ``shard_names``, ``shard_sizes``, ``num_classes``, ``class_names``, ``channels``,
    ``resolution``, ``options`` (an :class:`~hourglass.data.imagefolder.ImageOptions`) and
    ``streams``, and implement :meth:`records`, :meth:`record_at` and :meth:`decode`.

    Attributes:
        streams: True when the recipe asks to stream (the loader then reads whole shards in order).
        shard_names: one name per shard (file names), in the dataset's order.
        shard_sizes: records in each shard.
        load_failures: records this process skipped because they did not decode.
    """

    streams: bool = False
    #: what the dataset is called in messages
    kind: ClassVar[str] = "sharded dataset"
    shard_names: list[str]
    shard_sizes: list[int]
    options: ImageOptions
    load_failures: int = 0

    def __len__(self) -> int:
        return sum(self.shard_sizes)

    # -- what a subclass provides ----------------------------------------------------------------
    def records(self, shard: int, skip: int = 0) -> Iterator[Any]:
        """The records of ``shard`` in stored order, from record ``skip`` on."""
        raise NotImplementedError

    def record_at(self, index: int) -> Any:
        """Record ``index`` of the whole dataset (shards in order), by random access."""
        raise NotImplementedError

    def decode(self, record: Any) -> tuple[Tensor, int]:
        """Pixels ``(C, h, w)`` in [0, 1] and the class id of ``record``.

        Raises:
            Exception: any error when the record does not hold a decodable image.
        """
        raise NotImplementedError

    # -- items -------------------------------------------------------------------------------------
    def failed(self, where: str, exc: BaseException) -> None:
        """Count a record that did not decode; warn about the first one of this process."""
        self.load_failures += 1
        if self.load_failures == 1:
            warnings.warn(
                f"{self.kind}: skipped {where}, which could not be decoded ({type(exc).__name__}: {exc}); "
                "later failures in this process are only counted (dataset.load_failures)",
                UserWarning,
                stacklevel=3,
            )

    def item_from(self, pixels: Tensor, label: int, draw: int | None) -> dict[str, Tensor]:
        """The item of decoded ``pixels (C, h, w)`` with class id ``label``, random choices from ``draw``.

        Returns:
            ``{"image": (C, H, W) in [-1, 1], "class_cond": () int64, "aug_cond": (9,) zeros}``.
        """
        generator = None if draw is None else torch.Generator().manual_seed(draw)
        return make_item(finish_image(pixels, self.resolution, self.options, generator), label)

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """Record ``index`` (the next readable one if it does not decode), scaled, cropped and flipped."""
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            try:
                pixels, label = self.decode(self.record_at(i))
            except Exception as exc:
                self.failed(f"record {i}", exc)
                continue
            return finish_image(pixels, self.resolution, self.options, generator), label
        raise RuntimeError(f"{self.kind}: none of its {n} records could be decoded; check the shards")

    # -- the stream order ----------------------------------------------------------------------------
    def slot_shards(self, seed: int, epoch: int, slot: int, slots: int, shuffle: bool) -> list[int]:
        """The shards stream ``slot`` of ``slots`` reads in ``epoch``: every ``slots``-th of the epoch's order.

        The epoch's order is ``randperm(num_shards)`` seeded by ``(seed, epoch)`` (in order without
        ``shuffle``); slot ``s`` (rank ``r``, worker ``w``: ``s = r * workers + w``) takes positions
        ``s, s + slots, ...``, so the slots read disjoint shards that together cover the epoch.
        """
        n = len(self.shard_sizes)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch))).tolist()
        else:
            order = list(range(n))
        return order[slot::slots]

    def shard_records(self, shard: int, seed: int, epoch: int, skip: int, shuffle: bool) -> Iterator[tuple[int, Any]]:
        """``(j, record)`` of ``shard`` from stream position ``skip`` on, ``j`` the record's number in the shard.

        With ``shuffle`` the shard is read whole (encoded records in memory) and visited in the order
        ``randperm(size)`` seeded by ``(seed, epoch, shard)``; without, in stored order.
        """
        if not shuffle:
            yield from enumerate(self.records(shard, skip), start=skip)
            return
        stored = list(self.records(shard))
        perm = torch.randperm(len(stored), generator=torch.Generator().manual_seed(mix_seed(seed, epoch, shard)))
        for j in perm[skip:].tolist():
            yield j, stored[j]

    def draw_of(self, seed: int, epoch: int, shard: int, j: int) -> int:
        """The draw seed of record ``j`` of ``shard`` in ``epoch``: a pure function of the four."""
        return mix_seed(seed, epoch, shard, j)

    def __repr__(self) -> str:
        h, w = self.resolution
        mode = "streamed" if self.streams else "indexed"
        return (
            f"{type(self).__name__}({len(self)} records in {len(self.shard_sizes)} shards, {mode}, "
            f"{self.channels}x{h}x{w}, num_classes={self.num_classes})"
        )
