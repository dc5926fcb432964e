"""A DataLoader that shards across ranks, is deterministic per ``(seed, epoch)`` and resumes exactly.

Order: epoch ``e`` visits the items in ``randperm(N)`` seeded by ``(seed, e)`` (or in order when not
shuffling). Global batch ``b`` of the epoch is positions ``[b * B * R, (b + 1) * B * R)`` of that
order (``B`` the per-rank batch size, ``R`` the world size) and rank ``r`` takes every ``R``-th
position from ``r``, like ``DistributedSampler``. With ``drop_last`` the epoch is cut to whole
global batches (no item is seen twice); without it, the order is padded by wrapping around to a
multiple of ``R`` so every rank gets the same number of batches (the last may be short).

Randomness inside items: for datasets that understand draw keys (the built-in ones and
:class:`~hourglass.data.augment.Augmented`) the sampler yields ``(index, draw)`` keys with
``draw = mix_seed(seed, epoch, position)``, so random crops, flips and augmentations are a pure
function of ``(seed, epoch, position)``, whatever ``num_workers`` is. Other datasets get plain
indices; their workers are seeded from ``(seed, epoch, rank, start)`` through the loader's
``generator``, which is reproducible only without persistent workers.

Resuming exactly: the trainer stores its global step ``n`` (batches consumed per rank) and, after
a restart, calls ``loader.set_step(n)`` (or iterates ``loader.iterate(start_step=n)``): that is
epoch ``n // batches_per_epoch`` from batch ``n % batches_per_epoch``, the very batches an
uninterrupted run would have drawn next. Because global batches are cut before sharding, the same
global batch (``B * R``) sees the same items in the same steps even if the world size changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hourglass.data._base import mix_seed

__all__ = ["ResumableDataLoader", "ShardedBatchSampler", "check_loader_args", "create_dataloader"]


def check_loader_args(batch_size: int, rank: int, world_size: int, num_workers: int = 0) -> None:
    """The checks every loader makes of its arguments.

    Raises:
        ValueError: ``batch_size < 1``, ``world_size < 1``, ``rank`` outside ``[0, world_size)`` or
            ``num_workers < 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}) for world_size={world_size}, got {rank}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")


class ShardedBatchSampler(Sampler[list]):
    """Batches of keys for one rank, deterministic per ``(seed, epoch)``, startable mid-epoch.

    Args:
        size: number of items ``N`` in the dataset.
        batch_size: items per batch on this rank ``B``.
        shuffle: permute the items each epoch.
        seed: seed of the permutations and of the draw seeds.
        rank: this rank, in ``[0, world_size)``.
        world_size: number of ranks ``R``.
        drop_last: cut the epoch to whole global batches of ``B * R``; otherwise pad to a multiple
            of ``R`` and keep a short last batch.
        draw_keys: yield ``(index, draw)`` pairs instead of plain indices.

    Raises:
        ValueError: on a bad rank, batch size or world size, or an epoch with no batch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        draw_keys: bool = True,
    ) -> None:
        check_loader_args(batch_size, rank, world_size)
        if size < 1:
            raise ValueError("the dataset is empty; a loader needs at least one item")
        self.size, self.batch_size = int(size), int(batch_size)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last, self.draw_keys = bool(drop_last), bool(draw_keys)
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            self.positions_per_epoch = (self.size // global_batch) * global_batch
            if self.positions_per_epoch == 0:
                raise ValueError(
                    f"a dataset of {self.size} items has no full batch of {self.batch_size} on each of "
                    f"{self.world_size} rank(s); lower batch_size or set drop_last=False"
                )
        else:
            self.positions_per_epoch = -(-self.size // self.world_size) * self.world_size
        per_rank = self.positions_per_epoch // self.world_size
        self.batches_per_epoch = -(-per_rank // self.batch_size)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (and the batch to start from) of the next iteration.

        ``start_batch`` applies to the next ``iter()`` only; later passes start at batch 0.

        Raises:
            ValueError: when ``start_batch`` is not in ``[0, batches_per_epoch]``.
        """
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(
                f"start_batch must be in [0, {self.batches_per_epoch}] (batches per epoch), got {start_batch}"
            )
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def order(self, epoch: int) -> torch.Tensor:
        """Dataset index at every global position of ``epoch``: ``(positions_per_epoch,)`` int64."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            perm = torch.randperm(self.size, generator=generator)
        else:
            perm = torch.arange(self.size)
        if self.positions_per_epoch <= self.size:
            return perm[: self.positions_per_epoch]
        wrap = torch.arange(self.positions_per_epoch - self.size) % self.size
        return torch.cat([perm, perm[wrap]])

    def keys(self, epoch: int, batch: int) -> list[Any]:
        """Keys of this rank's batch ``batch`` of ``epoch``."""
        order = self.order(epoch)
        return self._batch_keys(order, epoch, batch)

    def _batch_keys(self, order: torch.Tensor, epoch: int, batch: int) -> list[Any]:
        start = batch * self.batch_size * self.world_size + self.rank
        stop = min((batch + 1) * self.batch_size * self.world_size, self.positions_per_epoch)
        positions = range(start, stop, self.world_size)
        indices = order[start : stop : self.world_size].tolist()
        if not self.draw_keys:
            return indices
        return [(i, mix_seed(self.seed, epoch, p)) for i, p in zip(indices, positions, strict=True)]

    def __iter__(self) -> Iterator[list[Any]]:
        epoch, start = self.epoch, self.start_batch  # read now, not at the first next()
        self.start_batch = 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[list[Any]]:
        order = self.order(epoch)
        for batch in range(start, self.batches_per_epoch):
            yield self._batch_keys(order, epoch, batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over a :class:`ShardedBatchSampler` with epoch and step control.

    Use ``set_epoch(e)`` before each pass (like ``DistributedSampler``), ``set_step(n)`` to resume
    after ``n`` batches, or ``iterate(start_step=n)`` for an endless stream across epochs.
    """

    batch_sampler: ShardedBatchSampler

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch on each rank."""
        return self.batch_sampler.batches_per_epoch

    @property
    def epoch(self) -> int:
        """The epoch the next pass will draw."""
        return self.batch_sampler.epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Draw epoch ``epoch`` on the next pass, starting at ``start_batch``."""
        self.batch_sampler.set_epoch(epoch, start_batch)

    def set_step(self, step: int) -> None:
        """Resume after ``step`` batches (per rank) since the start of training.

        Raises:
            ValueError: if ``step`` is negative.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, start = divmod(int(step), self.batches_per_epoch)
        self.set_epoch(epoch, start)

    def iterate(self, start_step: int = 0) -> Iterator[Any]:
        """Endless batches from global step ``start_step`` on, advancing epochs by itself.

        Args:
            start_step: batches already consumed (0 for a fresh run).

        Yields:
            collated batches: ``{"image": (B, C, H, W), "class_cond": (B,), "aug_cond": (B, 9)}`` for
            the built-in datasets.
        """
        self.set_step(start_step)
        epoch = self.epoch
        while True:
            yield from self
            epoch += 1
            self.set_epoch(epoch)

    def __iter__(self):
        """One pass over the current epoch (from its start batch); workers seeded from the position."""
        sampler = self.batch_sampler
        self.generator = torch.Generator().manual_seed(
            mix_seed(sampler.seed, sampler.epoch, sampler.rank, sampler.start_batch)
        )
        return super().__iter__()


def create_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> ResumableDataLoader | Any:
    """Create the sharded, deterministic, resumable loader of a training run.

    Args:
        dataset: a map-style dataset; the built-in ones (and ``Augmented``) get ``(index, draw)`` keys.
        batch_size: items per batch on this rank.
        shuffle: a new permutation each epoch, seeded by ``(seed, epoch)``.
        seed: seed of the order and of every random choice inside items.
        num_workers: loader worker processes (0: load in the main process).
        rank: this process's rank.
        world_size: number of ranks sharing the epoch.
        drop_last: keep whole global batches only (see :class:`ShardedBatchSampler`).
        pin_memory: passed to ``DataLoader``.
        persistent_workers: passed to ``DataLoader`` (needs ``num_workers > 0``).
        prefetch_factor: passed to ``DataLoader`` when ``num_workers > 0``.

    Returns:
        A :class:`ResumableDataLoader` (a :class:`~hourglass.data.stream.StreamLoader` for a sharded
        dataset set to stream: ``drop_last`` and ``persistent_workers`` do not apply to it); with the
        built-in datasets each batch is
        ``{"image": (B, C, H, W), "class_cond": (B,), "aug_cond": (B, 9)}``.

    Example:
        >>> loader = create_dataloader(ds, 64, seed=1, rank=rank, world_size=world)
        >>> for step, batch in zip(itertools.count(start), loader.iterate(start_step=start)):
        ...     ...
    """
    check_loader_args(batch_size, rank, world_size, num_workers)
    from hourglass.data.stream import StreamLoader, is_streamed

    if is_streamed(dataset):  # sharded data asked to stream: whole shards per rank and worker
        return StreamLoader(dataset, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers, rank=rank,
                            world_size=world_size, pin_memory=pin_memory, prefetch_factor=prefetch_factor)
    sampler = ShardedBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        draw_keys=bool(getattr(dataset, "uses_draw_keys", False)),
    )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
    return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory, **extra)
