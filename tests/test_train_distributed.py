"""Two CPU processes with the gloo backend: DDP keeps the ranks' weights identical; each rank draws its own noise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file, save_file

from hourglass.spec import Spec
from hourglass.trackers import Tracker
from hourglass.train import Trainer, list_checkpoints, read_checkpoint, read_metrics
from hourglass.train import trainer as trainer_module
from hourglass.train.distributed import DistInfo
from tests.test_train_loop import REPO, TINY_RECIPE, one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ProbeSpec(Spec):
    type: Literal["rank_probe"] = "rank_probe"


class _RankProbe(Tracker):
    """Writes the steps it is asked to log to ``run_dir/probe.rank<RANK>`` (which ranks log)."""

    Spec = _ProbeSpec

    def start(self, run_dir, recipe_data, resumed_step):
        self.path = run_dir / f"probe.rank{os.environ['RANK']}"

    def log(self, step, metrics):
        with open(self.path, "a") as f:
            f.write(f"{step}\n")

    def log_image(self, step, name, path):
        pass

    def finish(self):
        pass


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HOURGLASS_NO_PROGRESS="1",
    )
    torch.set_num_threads(1)
    from hourglass.recipe import loads_recipe
    from hourglass.registry import TRACKER
    from hourglass.train import Trainer

    TRACKER.add("rank_probe", _RankProbe)  # a tracker like a plugin's: which ranks log
    recipe = loads_recipe(TINY_RECIPE, ["train.steps=3", "train.checkpoint_every=3", "model.levels[1].dropout=0.1",
                                        'train.trackers=["jsonl", "rank_probe"]'])
    trainer = Trainer(recipe, run_dir, report=lambda m: None)
    try:
        first_keys = trainer.loader.batch_sampler.keys(0, 0)
        assert trainer.dist.backend == "gloo" and trainer.micro_batch == 4
        trainer.fit()
        tensors = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in trainer.ema.model.state_dict().items()})
        tensors["first_batch"] = torch.tensor([i for i, _ in first_keys])
        save_file(tensors, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        trainer.close()


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir), str(out_dir)), nprocs=2, join=True)
    r0, r1 = (load_file(str(out_dir / f"rank{r}.safetensors")) for r in (0, 1))
    assert not torch.equal(r0.pop("first_batch"), r1.pop("first_batch"))  # each rank reads its own shard
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # only rank 0 wrote files, and its checkpoint holds those weights
    (step, path), = list_checkpoints(run_dir)
    saved = read_checkpoint(path)
    assert step == 3 and saved.extra["world_size"] == 2
    assert all(torch.equal(saved.model[k[len("model."):]], v) for k, v in r0.items() if k.startswith("model."))
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert sorted(p.name for p in run_dir.glob("probe.rank*")) == ["probe.rank0"]  # only rank 0 logs
    assert (run_dir / "probe.rank0").read_text().split() == ["1", "2", "3"]


class _Recording(Trainer):
    """A trainer that records what each micro-step draws: sigmas, noise and the model-dropout RNG state."""

    def _compute_loss(self, x0, noise, sigma, cond):
        self.drawn.append((sigma.clone(), noise.clone(), torch.get_rng_state()))
        return super()._compute_loss(x0, noise, sigma, cond)


def test_ranks_draw_different_noise_and_sigmas_reproducibly(tmp_path, monkeypatch):
    """Rank 0 and rank 1 of 2 draw different training noise, sigmas and model-dropout seeds (the same draws
    on every rank would waste the extra ranks), and a rank's draws replay exactly."""
    recipe = tiny_recipe("model.levels[1].dropout=0.1")
    draws, batch = {}, None
    for rank in (0, 1):  # no process group: only the rank the trainer sees changes
        monkeypatch.setattr(trainer_module, "init_distributed", lambda device, r=rank: DistInfo(rank=r, world_size=2))
        trainer = _Recording(recipe, tmp_path / f"rank{rank}", report=quiet)
        trainer.drawn = []
        assert trainer.dist.rank == rank and trainer.micro_batch == 4
        if batch is None:
            batch = next(trainer.loader.iterate())  # the same images on both ranks
        for micro in (0, 1, 0):
            trainer._micro_step(batch, micro, last=True)
        draws[rank] = trainer.drawn
    for rank, (first, other_micro, again) in draws.items():
        for a, b in zip(first, again, strict=True):
            assert torch.equal(a, b), f"rank {rank} does not replay its draws"
        assert not torch.equal(first[0], other_micro[0]), "micro-batches share their sigmas"
    (sigma0, noise0, rng0), (sigma1, noise1, rng1) = draws[0][0], draws[1][0]
    assert not torch.equal(sigma0, sigma1), "ranks 0 and 1 draw the same sigmas"
    assert not torch.equal(noise0, noise1), "ranks 0 and 1 draw the same noise"
    assert not torch.equal(rng0, rng1), "ranks 0 and 1 seed the model dropout alike"


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "hourglass", "train", str(recipe), "--run-dir", str(run_dir), "--set", "train.steps=2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done: step 2") == 1  # rank 0 only
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    assert (run_dir / "samples" / "final.png").is_file()
