"""The data position a training checkpoint stores, and restoring a streamed loader's from it.

Map-style data resumes from the step alone (:meth:`~hourglass.data.loader.ResumableDataLoader.set_step`);
the stored ``consumed_batches``, ``epoch``, ``batch_in_epoch`` are for reading. A streamed sharded
dataset (:class:`~hourglass.data.stream.StreamLoader`) also stores where each of its slots is
(``stream_positions``: ``(ranks, workers, 2)`` int64 of ``[epoch, records read]``, gathered from every
rank) and the batches taken (``stream_consumed``), which makes its resume exact even after skipped records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hourglass.data.stream import StreamLoader

if TYPE_CHECKING:
    from hourglass.train.trainer import Trainer

__all__ = ["data_state", "restore_data_state"]


def data_state(trainer: Trainer, *, gather: bool = True) -> dict[str, Tensor]:
    """The ``data.*`` tensors of a checkpoint of ``trainer`` at its current step.

    Args:
        trainer: the trainer.
        gather: collect a stream's positions from every rank (a collective: every rank must call it
            then); False under torchrun leaves them out (a checkpoint that is not resumed from).

    Returns:
        ``consumed_batches``, ``epoch``, ``batch_in_epoch``, ``global_micro_batch``, ``seed`` (``()`` int64),
        plus ``stream_positions`` and ``stream_consumed`` for a streamed dataset.
    """
    consumed = trainer.step * trainer.recipe.train.grad_accum
    per_epoch = trainer.loader.batches_per_epoch
    data = {
        "consumed_batches": torch.tensor(consumed, dtype=torch.int64),
        "epoch": torch.tensor(consumed // per_epoch, dtype=torch.int64),
        "batch_in_epoch": torch.tensor(consumed % per_epoch, dtype=torch.int64),
        "global_micro_batch": torch.tensor(trainer.micro_batch * trainer.dist.world_size, dtype=torch.int64),
        "seed": torch.tensor(trainer.recipe.train.seed, dtype=torch.int64),
    }
    loader = trainer.loader
    if not isinstance(loader, StreamLoader) or (trainer.dist.enabled and not gather):
        return data
    state = loader.state_dict()
    positions = state["stream_positions"]
    if trainer.dist.enabled:
        import torch.distributed as dist

        parts: list[Tensor | None] = [None] * trainer.dist.world_size
        dist.all_gather_object(parts, positions)
        positions = torch.stack([p for p in parts if p is not None])
    else:
        positions = positions[None]
    return {**data, "stream_positions": positions, "stream_consumed": state["stream_consumed"]}


def restore_data_state(trainer: Trainer, data: dict[str, Tensor]) -> None:
    """Give a streamed loader the positions of ``data`` (a checkpoint's); other loaders resume from the step.

    A checkpoint of another rank or worker count (or without positions) leaves the stream to derive
    its positions from the step, with a note: exact only if no record was skipped.
    """
    loader = trainer.loader
    if not isinstance(loader, StreamLoader):
        return
    positions = data.get("stream_positions")
    layout = (trainer.dist.world_size, loader.workers)
    if positions is None or tuple(positions.shape[:2]) != layout:
        saved = "no stream position" if positions is None else f"{tuple(positions.shape[:2])} ranks x workers"
        trainer.say(
            f"note: the checkpoint holds {saved}, this run {layout}: the stream continues from positions "
            "derived from the step (exact unless records were skipped)"
        )
        return
    loader.load_state_dict(
        {"stream_positions": positions[trainer.dist.rank], "stream_consumed": data["stream_consumed"]}
    )
