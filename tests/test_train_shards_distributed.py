"""Two gloo processes training on streamed WebDataset shards: each rank's stream position is checkpointed, and a
run resumed from the middle ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from hourglass.train import list_checkpoints, read_checkpoint
from tests._shards import image_folder, webdataset_shards
from tests.test_train_distributed import _free_port
from tests.test_train_loop import TINY_RECIPE

pytest.importorskip("webdataset")


def _worker(rank: int, world: int, port: int, run_dir: str, shards: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        HOURGLASS_NO_PROGRESS="1",
    )
    torch.set_num_threads(1)
    from hourglass.recipe import loads_recipe
    from hourglass.train import Trainer

    data = f'data.dataset={{type = "webdataset", root = "{shards}", classes = "cls", crop = "random", hflip = 0.5}}'
    recipe = loads_recipe(
        TINY_RECIPE, [data, "model.num_classes=2", "train.steps=4", "train.checkpoint_every=2", "train.keep_last=0"]
    )
    trainer = Trainer(recipe, run_dir, report=lambda m: None)
    try:
        trainer.fit()
    finally:
        trainer.close()


@pytest.mark.slow
def test_two_ranks_stream_disjoint_shards_and_resume_exactly(tmp_path):
    import torch.multiprocessing as mp

    folder = image_folder(tmp_path / "images", n=16)
    (folder / "cats" / "004.png").write_bytes(b"not a png")  # a skipped record: positions must come from the state
    shards = webdataset_shards(folder, tmp_path / "tars", per_shard=2)
    run = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(run), str(shards)), nprocs=2, join=True)
    (_, middle), (_, final) = list_checkpoints(run)
    saved = read_checkpoint(middle).data
    positions = saved["stream_positions"]
    assert tuple(positions.shape) == (2, 1, 2) and int(saved["stream_consumed"]) == 2
    # each rank read at least its 2 micro-batches of 4 (its 8 records of epoch 0, or on into epoch 1)
    assert all(epoch > 0 or read >= 8 for epoch, read in positions[:, 0].tolist())
    reference = read_checkpoint(final)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run / "checkpoints", resumed / "checkpoints")
    (resumed / "checkpoints" / final.name).unlink()  # as if killed after step 2
    mp.spawn(_worker, args=(2, _free_port(), str(resumed), str(shards)), nprocs=2, join=True)
    again = read_checkpoint(list_checkpoints(resumed)[-1][1])
    assert all(torch.equal(reference.model[k], again.model[k]) for k in reference.model)
    assert all(torch.equal(reference.ema[k], again.ema[k]) for k in reference.ema)
