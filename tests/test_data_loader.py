"""The sharded, deterministic, resumable loader."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import Dataset

from hourglass.data import Augmented, ShardedBatchSampler, create_dataloader
from hourglass.registry import DATASET


def _flat(sampler: ShardedBatchSampler) -> list[int]:
    return [k[0] if isinstance(k, tuple) else k for batch in sampler for k in batch]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("size", [24, 25])
def test_ranks_are_disjoint_and_cover_the_epoch(world_size, size):
    kwargs = dict(shuffle=True, seed=5, world_size=world_size, drop_last=False)
    shards = [_flat(ShardedBatchSampler(size, 4, rank=r, **kwargs)) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # every rank the same number of items
    everything = [i for s in shards for i in s]
    assert set(everything) == set(range(size))
    if size % world_size == 0:
        assert len(everything) == size  # disjoint
    else:
        assert len(everything) == -(-size // world_size) * world_size  # only the wrap-around padding repeats
    dropped = [_flat(ShardedBatchSampler(size, 4, rank=r, **{**kwargs, "drop_last": True})) for r in range(world_size)]
    flat = [i for s in dropped for i in s]
    assert len(flat) == len(set(flat)) == (size // (4 * world_size)) * 4 * world_size


def test_deterministic_per_seed_and_epoch():
    a = ShardedBatchSampler(50, 5, seed=1)
    b = ShardedBatchSampler(50, 5, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second and sorted(_flat_keys(first)) == sorted(_flat_keys(second))
    c = ShardedBatchSampler(50, 5, seed=2)
    assert list(c) != first
    ordered = ShardedBatchSampler(10, 5, shuffle=False, draw_keys=False)
    assert list(ordered) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def _flat_keys(batches):
    return [k[0] for batch in batches for k in batch]


def test_draw_keys_are_unique_per_position():
    sampler = ShardedBatchSampler(20, 4, seed=0, drop_last=False, world_size=3)
    draws = [k[1] for batch in sampler for k in batch]
    assert len(draws) == len(set(draws))


def test_global_batches_do_not_depend_on_world_size():
    one = ShardedBatchSampler(64, 8, seed=3)
    two = [ShardedBatchSampler(64, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(one.batches_per_epoch):
        assert sorted(one.keys(0, step)) == sorted(two[0].keys(0, step) + two[1].keys(0, step))


def test_loader_batches_and_exact_resume():
    ds = Augmented(DATASET.build({"type": "shapes", "size": 20}, resolution=8), {"p": 0.5}, seed=1)
    loader = create_dataloader(ds, 4, seed=9)
    assert loader.batches_per_epoch == 5 and len(loader) == 5
    reference = list(itertools.islice(loader.iterate(), 13))  # crosses two epoch boundaries
    batch = reference[0]
    assert batch["image"].shape == (4, 3, 8, 8) and batch["class_cond"].shape == (4,)
    assert batch["aug_cond"].shape == (4, 9)
    resumed = create_dataloader(ds, 4, seed=9)
    tail = list(itertools.islice(resumed.iterate(start_step=7), 6))
    for want, got in zip(reference[7:], tail, strict=True):
        for key in ("image", "class_cond", "aug_cond"):
            assert torch.equal(want[key], got[key])
    resumed.set_step(11)
    assert resumed.epoch == 2 and len(resumed) == 4
    assert torch.equal(next(iter(resumed))["image"], reference[11]["image"])
    assert len(resumed) == 5  # the start offset was used by that pass only


def test_workers_give_the_same_batches():
    ds = Augmented(DATASET.build({"type": "shapes", "size": 16}, resolution=8), {"p": 1.0}, seed=0)
    serial = list(create_dataloader(ds, 4, seed=2))
    parallel = list(create_dataloader(ds, 4, seed=2, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["aug_cond"], b["aug_cond"])


class _Plain(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor(i)


def test_plain_datasets_get_int_indices():
    loader = create_dataloader(_Plain(), 5, shuffle=False)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_errors():
    with pytest.raises(ValueError, match="rank must be in \\[0, 2\\)"):
        ShardedBatchSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no full batch of 8 on each of 2 rank.*drop_last=False"):
        ShardedBatchSampler(10, 8, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        ShardedBatchSampler(10, 0)
    with pytest.raises(ValueError, match="start_batch must be in \\[0, 5\\]"):
        ShardedBatchSampler(10, 2).set_epoch(0, 9)
