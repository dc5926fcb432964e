"""The resumable loader of streamed shards: shards split over ranks x workers, exact resume from a state dict.

Order: epoch ``e`` orders the shards by ``randperm`` seeded by ``(seed, e)``; with ``R`` ranks and
``W`` workers per rank there are ``S = R * W`` *slots*, and slot ``s = r * W + w`` reads every
``S``-th shard of that order (disjoint shards, together the whole epoch), each shard's records in
the order ``randperm`` seeded by ``(seed, e, shard)``. A slot streams endlessly: after its last
shard of epoch ``e`` it goes on with its shards of ``e + 1``, and it cuts batches of ``B`` decoded
items out of that stream (a batch may straddle two epochs). Records that do not decode are skipped
and counted. Every random choice inside an item comes from ``mix_seed(seed, e, shard, j)`` (``j``
the record's number in its shard), whatever the worker count.

Batches: the loader's workers take turns (batch ``n`` of a rank comes from its slot ``n mod W``),
as ``torch.utils.data.DataLoader`` does with an iterable dataset; without workers one slot per rank.

Resuming: each batch carries the position its slot reached (``epoch``, records read in that
epoch); the loader keeps the position of each of its slots as the training loop *consumes* batches
(not as workers prefetch them). :meth:`StreamLoader.state_dict` is that state, a checkpoint stores
it, and :meth:`StreamLoader.load_state_dict` then :meth:`StreamLoader.iterate` continue with the very
batch an uninterrupted run would have drawn next. Without a state (``iterate(start_step=n)`` alone)
positions are derived from ``n``, which is exact only when no record was skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from hourglass.data._shards import ShardedImageDataset
from hourglass.data.augment import Augmented
from hourglass.data.loader import check_loader_args

__all__ = ["StreamLoader", "is_streamed"]


def is_streamed(dataset: Any) -> bool:
    """Whether ``dataset`` (or the dataset an ``Augmented`` wraps) is a sharded dataset asked to stream."""
    base = dataset.dataset if isinstance(dataset, Augmented) else dataset
    return isinstance(base, ShardedImageDataset) and base.streams


class _Slots(IterableDataset):
    """What each loader worker runs: the batches of one slot, from its saved position on."""

    def __init__(self, loader: StreamLoader, positions: list[tuple[int, int]], consumed: int) -> None:
        self.loader, self.positions, self.consumed = loader, positions, consumed

    def __iter__(self) -> Iterator[tuple[dict[str, Tensor], int, int, int, int]]:
        info = get_worker_info()
        workers = self.loader.workers
        local = (self.consumed + (info.id if info is not None else 0)) % workers  # batch n comes from slot n mod W
        epoch, read = self.positions[local]
        return self.loader.slot_batches(local, epoch, read)


class StreamLoader:
    """Batches of a streamed sharded dataset for one rank; deterministic per seed, resumable exactly.

    Args:
        dataset: a :class:`~hourglass.data._shards.ShardedImageDataset` with ``streams`` set, or an
            :class:`~hourglass.data.augment.Augmented` wrapping one.
        batch_size: items per batch on this rank ``B``.
        shuffle: shuffle the shard order and the records in each shard every epoch.
        seed: seed of the orders and of every random choice inside items.
        num_workers: loader worker processes (each reads its own shards); 0 reads in this process.
        rank: this rank, in ``[0, world_size)``.
        world_size: number of ranks ``R``.
        pin_memory: passed to ``DataLoader``.
        prefetch_factor: passed to ``DataLoader`` when ``num_workers > 0``.

    Raises:
        ValueError: on a bad batch size, rank or worker count, or fewer shards than ``R`` x workers.

    Attributes:
        batches_per_epoch: ``len(dataset) // (B * R)`` (at least 1): the epoch as the trainer logs it.
        consumed: batches this rank's training loop took so far.
        positions: ``(epoch, records read in it)`` of each of this rank's slots, as consumed.
        load_failures: records skipped (not decodable) by the current :meth:`iterate`'s readers so far.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
    ) -> None:
        self.augmented = dataset if isinstance(dataset, Augmented) else None
        self.base: ShardedImageDataset = dataset.dataset if self.augmented is not None else dataset
        check_loader_args(batch_size, rank, world_size, num_workers)
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.rank, self.world_size, self.num_workers = int(rank), int(world_size), int(num_workers)
        self.workers = max(1, self.num_workers)
        self.slots = self.world_size * self.workers
        shards = len(self.base.shard_sizes)
        if shards < self.slots:
            raise ValueError(
                f"{self.base.kind}: {shards} shard(s) cannot be split over {self.world_size} rank(s) x "
                f"{self.workers} worker(s); write at least {self.slots} shards (hourglass data shards "
                "--samples-per-shard N) or lower data.num_workers"
            )
        self.pin_memory, self.prefetch_factor = bool(pin_memory), prefetch_factor
        self.batches_per_epoch = max(1, len(self.base) // (self.batch_size * self.world_size))
        self.consumed = 0
        self.positions: list[tuple[int, int]] = [(0, 0)] * self.workers
        self.load_failures = 0

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """``{"stream_positions": (W, 2) int64 [epoch, records read], "stream_consumed": () int64}``."""
        return {
            "stream_positions": torch.tensor(self.positions, dtype=torch.int64).reshape(self.workers, 2),
            "stream_consumed": torch.tensor(self.consumed, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue from a :meth:`state_dict` of a loader with the same worker count.

        Raises:
            ValueError: when the state holds another number of slots than this loader's workers.
        """
        positions = state["stream_positions"].reshape(-1, 2)
        if positions.shape[0] != self.workers:
            raise ValueError(
                f"the saved stream state has {positions.shape[0]} worker slot(s), this loader {self.workers}; "
                "resume with the same data.num_workers"
            )
        self.positions = [(int(e), int(k)) for e, k in positions.tolist()]
        self.consumed = int(state["stream_consumed"])

    def positions_after(self, batches: int) -> list[tuple[int, int]]:
        """The slot positions after ``batches`` batches of this rank when no record was skipped."""
        out = []
        for local in range(self.workers):
            taken = (batches - local + self.workers - 1) // self.workers  # batches that came from this slot
            left, epoch, slot = taken * self.batch_size, 0, self.rank * self.workers + local
            while True:
                size = sum(self.base.shard_sizes[s] for s in self._shards(slot, epoch))
                if left < size or (size == 0 and not self.shuffle):  # unshuffled empty shards never advance
                    break
                left, epoch = left - size, epoch + 1
            out.append((epoch, left))
        return out

    # -- reading -----------------------------------------------------------------------------------
    def _shards(self, slot: int, epoch: int) -> list[int]:
        return self.base.slot_shards(self.seed, epoch, slot, self.slots, self.shuffle)

    def slot_records(self, local: int, epoch: int, read: int) -> Iterator[tuple[int, int, int, Any]]:
        """``(epoch, records read after this one, draw, record)`` of local slot ``local`` from ``(epoch, read)`` on."""
        base, slot = self.base, self.rank * self.workers + local
        empty = 0  # epochs in a row in which no record could be read
        while True:
            start, got = 0, False
            for shard in self._shards(slot, epoch):
                size = base.shard_sizes[shard]
                if read < start + size:
                    position = read - start
                    try:
                        for j, record in base.shard_records(shard, self.seed, epoch, position, self.shuffle):
                            position += 1
                            got = True
                            yield epoch, start + position, base.draw_of(self.seed, epoch, shard, j), record
                    except Exception as exc:  # a damaged shard: its remaining records are skipped
                        base.failed(f"the rest of shard {base.shard_names[shard]} after record {position}", exc)
                    read = start + size
                start += size
            empty = 0 if got else empty + 1
            if empty > 1:
                raise RuntimeError(
                    f"{base.kind}: no record of the shards of slot {slot} could be read; check the shards"
                )
            epoch, read = epoch + 1, 0

    def slot_batches(
        self, local: int, start_epoch: int, start_read: int
    ) -> Iterator[tuple[dict[str, Tensor], int, int, int, int]]:
        """Collated batches of local slot ``local`` from ``(start_epoch, start_read)`` on, each with ``(local, epoch, read)``
        and the records skipped so far by the process that reads the slot."""
        items: list[dict[str, Tensor]] = []
        idle = 0  # records in a row that did not decode
        for epoch, read, draw, record in self.slot_records(local, start_epoch, start_read):
            try:
                pixels, label = self.base.decode(record)
            except Exception as exc:
                self.base.failed(f"a record of epoch {epoch}", exc)
                idle += 1
                if idle > len(self.base):
                    raise RuntimeError(
                        f"{self.base.kind}: none of its records could be decoded; check the shards"
                    ) from exc
                continue
            idle = 0
            if self.augmented is not None:
                item = self.base.item_from(pixels, label, self.augmented.inner_draw(draw))
                item = self.augmented.augment(item, draw)
            else:
                item = self.base.item_from(pixels, label, draw)
            items.append(item)
            if len(items) == self.batch_size:
                yield default_collate(items), local, epoch, read, self.base.load_failures
                items = []

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, Tensor]]:
        """Endless batches of this rank from batch ``start_step`` on.

        Continues from the state of :meth:`load_state_dict` when it was saved at ``start_step``
        batches; otherwise from :meth:`positions_after` ``(start_step)``.

        Yields:
            ``{"image": (B, C, H, W), "class_cond": (B,), "aug_cond": (B, 9)}``.
        """
        if start_step != self.consumed:
            self.positions, self.consumed = self.positions_after(start_step), int(start_step)
        extra: dict[str, Any] = {}
        if self.num_workers > 0 and self.prefetch_factor is not None:
            extra["prefetch_factor"] = self.prefetch_factor
        loader = DataLoader(
            _Slots(self, list(self.positions), self.consumed),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            **extra,
        )
        failures = [0] * self.workers
        for batch, local, epoch, read, failed in loader:
            self.positions[local] = (int(epoch), int(read))
            failures[local] = int(failed)
            self.load_failures = sum(failures)
            self.consumed += 1
            yield batch
