"""The training loop of HDiT: AdamW, EMA with warm-up, class dropout, checkpoints.

The setup is that of HDiT (Crowson et al. 2024, arXiv 2401.11605), Sec. 5.1 and Table 7.

Reproducibility: every random number of optimizer step ``s`` comes from seeds derived from
``(train.seed, s, rank, micro-batch)``: the noise levels, the noise and the class dropout from a
generator seeded with ``mix_seed(seed, s, rank, micro)``, the model's dropout from torch's global
generator re-seeded with ``mix_seed(seed, s, rank, micro, 1)``, and the data from the loader's
position ``s * grad_accum`` (order and augmentation are pure functions of it), and a VAE that samples
its posterior (``[vae] latents = "sample"``) from ``mix_seed(seed, s, rank, micro, 2)``. A run resumed from
the checkpoint of step ``N`` therefore draws exactly what an uninterrupted run would, and on the
CPU ends with bitwise-identical weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hourglass.data import create_dataloader, mix_seed
from hourglass.devices import device_rng_states, resolve_dtype
from hourglass.diffusion.conditioning import conditioned
from hourglass.recipe import (
    Recipe,
    availability_problems,
    build_model,
    dump_recipe,
    plain_data,
)
from hourglass.recipe.conditioning import cond_image_channels
from hourglass.registry import DATASET, DENOISER, SIGMA_DENSITY, WEIGHTING
from hourglass.spec import as_pair
from hourglass.trackers import open_trackers
from hourglass.train import checkpoint as ckpt
from hourglass.train._data_state import data_state
from hourglass.train._inputs import batch_conditions, build_vae, grid_conditions
from hourglass.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from hourglass.train.ema import EMA
from hourglass.train.evaluate import Evaluator
from hourglass.train.images import save_grid
from hourglass.train.metrics import read_metrics
from hourglass.train.optim import create_optimizer, lr_factor, set_lr
from hourglass.train.sampling import autocast_context, class_labels, generate_images

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "TrainConfigError", "train", "progress_enabled", "step_name"]

class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) was NaN/inf for ``max_bad_steps`` consecutive steps."""


class TrainConfigError(ValueError):
    """The recipe cannot be trained as given (batch split, class count, run directory, ...)."""


@dataclass
class TrainResult:
    """What a call to :meth:`Trainer.fit` did.

    Attributes:
        step: optimizer steps taken in total (including earlier runs of the same directory).
        loss: mean loss over the last logging interval: the last ``loss`` of ``metrics.jsonl``, and the
            last value the progress bar showed (None if no step ran and nothing was logged before).
        run_dir: the run directory.
        checkpoint: the last checkpoint written (None if none was).
        grid: the last sample grid written (None if none was).
        interrupted: the signal name when stopped by SIGINT/SIGTERM, else None.
        bad_steps: skipped (non-finite) steps in total.
        wall_time: seconds spent in this call.
        already_finished: the run directory was already at ``train.steps`` (or past it): nothing was
            trained; ``loss`` is then the last loss in ``metrics.jsonl`` and ``grid`` the existing
            ``samples/final.png`` (drawn now only if it was missing).
    """

    step: int
    loss: float | None
    run_dir: Path
    checkpoint: Path | None
    grid: Path | None
    interrupted: str | None
    bad_steps: int
    wall_time: float
    already_finished: bool = False


def step_name(step: int) -> str:
    """The name of step ``step``'s files: ``step_00001000``, as checkpoints, training grids
    (``samples/step_00001000.png``) and ``hourglass sample``'s folders are named."""
    return ckpt.checkpoint_path(".", step).stem


def progress_enabled() -> bool:
    """Progress bars show only on a terminal and when ``HOURGLASS_NO_PROGRESS`` is unset/0."""
    flag = os.environ.get("HOURGLASS_NO_PROGRESS", "").strip().lower()
    if flag not in ("", "0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


class Trainer:
    """Train the recipe's model in ``run_dir``, resuming from its newest valid checkpoint.

    Under ``torchrun`` every process builds a Trainer; the model is wrapped in DDP, each rank
    reads its shard of every batch, and only rank 0 logs and writes files.

    With a ``[vae]`` in the recipe (latent diffusion) the images are loaded at the size the model's
    latent grid decodes to (``model.input_size`` times the VAE's factor), each batch is encoded by
    the frozen VAE (without gradients) before the noise is added, and the sample grids are decoded.
    The VAE's weights are not part of the checkpoints: the recipe names them.

    Args:
        recipe: a validated :class:`hourglass.recipe.Recipe`.
        run_dir: where ``recipe.toml``, ``classes.json`` (the data's class names, if it names them),
            ``metrics.jsonl``, ``checkpoints/`` and ``samples/`` go.
        max_bad_steps: consecutive non-finite steps before giving up (default: ``train.max_bad_steps``).
        report: prints a message (rank 0 only); default ``print`` (through tqdm when a bar shows).
        progress: show a tqdm bar (default: :func:`progress_enabled`).

    Raises:
        TrainConfigError: when the batch does not split over the ranks and accumulation steps, the
            data's classes do not match the model's, the VAE cannot be loaded or its channels do not
            match the model's or the data's, or the run directory holds another model.
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | os.PathLike,
        *,
        max_bad_steps: int | None = None,
        report: Callable[[str], None] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.max_bad_steps = int(max_bad_steps or recipe.train.max_bad_steps)
        self._report = report
        self._progress_on = progress_enabled() if progress is None else progress
        self._bar: Any = None
        self.dist: DistInfo = init_distributed(recipe.runtime.device)
        self.device = self.dist.device
        try:
            self._setup()
        except BaseException:
            cleanup_distributed(self.dist)  # leave the process group of a trainer that never ran
            raise

    def _setup(self) -> None:
        recipe, t = self.recipe, self.recipe.train
        missing = availability_problems(recipe.data, vae=recipe.vae, trackers=t.trackers)  # before anything is built
        if missing:
            raise TrainConfigError("; ".join(str(p) for p in missing))
        self.amp_dtype = getattr(torch, resolve_dtype(recipe.runtime.dtype, self.device.type))

        # Model, EMA and optimizer: initialised on the CPU from the seed, identical on every rank.
        torch.manual_seed(t.seed)
        self.model = build_model(recipe, device="cpu").to(self.device)
        if t.gradient_checkpointing:
            self.model.set_gradient_checkpointing(True)
        self.model.train()
        self.ema = EMA(self.model, power=t.ema.power, decay_max=t.ema.decay_max)
        self.optimizer = create_optimizer(
            self.model, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
            mapping_lr_scale=t.mapping_lr_scale,
        )
        net: Any = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids)
        self._ddp = net if self.dist.enabled else None
        if recipe.runtime.compile:
            net = torch.compile(net)
        self.denoiser = DENOISER.build(recipe.diffusion.denoiser, model=conditioned(net, recipe.conditioning))
        self.ema_denoiser = DENOISER.build(recipe.diffusion.denoiser, model=conditioned(self.ema.model,
                                                                                          recipe.conditioning))
        self.weighting = WEIGHTING.build(recipe.diffusion.weighting)
        self.sigma_data = float(self.denoiser.sigma_data)
        spec = self.model.spec
        #: the model's input size (with a VAE: the latent grid) and channels
        self.image_size = as_pair(spec.input_size)
        self.channels = spec.in_channels - cond_image_channels(recipe.conditioning)  # the image's, not the condition's
        self.num_classes = spec.num_classes
        #: the recipe's frozen VAE (None: the model works on pixels); batches are encoded with it
        self.vae = build_vae(self)
        #: whether batches are images that the VAE encodes (False without a VAE, or for precomputed latents)
        self.encodes = self.vae is not None and not DATASET.get(recipe.data.dataset.type).holds_latents
        #: the size the data is loaded at: the model's, or with a VAE the size its latent grid decodes to
        self.data_resolution = self.vae.image_size(self.image_size) if self.encodes else self.image_size
        density_context: dict[str, Any] = {"sigma_data": self.sigma_data, "image_size": self.image_size}
        if SIGMA_DENSITY.get(recipe.diffusion.sigma_density.type).draws_timesteps:  # e.g. ddpm_timesteps
            density_context["denoiser"] = self.denoiser
        self.density = SIGMA_DENSITY.build(recipe.diffusion.sigma_density, **density_context)

        # Data: each rank reads micro-batches of batch_size / (world_size * grad_accum) images.
        per_step = self.dist.world_size * t.grad_accum
        if recipe.data.batch_size % per_step:
            raise TrainConfigError(
                f"data.batch_size {recipe.data.batch_size} does not split over {self.dist.world_size} process(es) x "
                f"train.grad_accum {t.grad_accum}; use a multiple of {per_step}"
            )
        self.micro_batch = recipe.data.batch_size // per_step
        self.dataset = self._build_dataset()
        self._grid_cond: dict[int, dict[str, Tensor] | None] = {}  # grid size -> its conditions, read once
        self.loader = create_dataloader(
            self.dataset, self.micro_batch, seed=t.seed, num_workers=recipe.data.num_workers,
            rank=self.dist.rank, world_size=self.dist.world_size, drop_last=True,
            pin_memory=self.device.type == "cuda", persistent_workers=recipe.data.num_workers > 0,
        )

        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self._stop_signal: str | None = None
        self.resumed_from: Path | None = None
        self.init_report: Any = None
        self._resume()
        self.evaluator = Evaluator.for_trainer(self)  # the recipe's [eval] (None without one)

    # -- set-up ------------------------------------------------------------------------------
    def _build_dataset(self) -> Any:
        from hourglass.train._inputs import build_dataset

        #: one name per class id (saved as classes.json and in every checkpoint), None if the data has none
        self.class_names: list[str] | None
        dataset, self.class_names = build_dataset(self)
        return dataset

    def say(self, message: str) -> None:
        """Print ``message`` on rank 0 (through tqdm while a progress bar is shown)."""
        if not self.dist.is_main:
            return
        if self._report is not None:
            self._report(message)
        elif self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def _resume(self) -> None:
        """Resume from the run directory's newest valid checkpoint, else start from ``train.init_from`` (if set)."""
        from hourglass.train._resume import resume_or_warm_start

        resume_or_warm_start(self)

    # -- one optimizer step ------------------------------------------------------------------
    def _compute_loss(self, x0: Tensor, noise: Tensor, sigma: Tensor, cond: dict[str, Tensor]) -> Tensor:
        """Mean weighted denoising loss of one micro-batch (a scalar)."""
        return self.denoiser.loss(x0, noise, sigma, self.weighting, **cond).mean()

    def _micro_step(self, batch: dict[str, Tensor], micro: int, last: bool) -> Tensor:
        t, dev = self.recipe.train, self.device
        x0 = batch["image"].to(dev, non_blocking=True)
        if self.encodes:  # latent diffusion on images: the frozen VAE encodes the batch (no gradients)
            vae_gen = torch.Generator(device=dev).manual_seed(mix_seed(t.seed, self.step, self.dist.rank, micro, 2))
            x0 = self.vae.encode(x0, generator=vae_gen)
        n = x0.shape[0]
        gen = torch.Generator(device=dev).manual_seed(mix_seed(t.seed, self.step, self.dist.rank, micro))
        sigma = self.density.sample(n, generator=gen, device=dev)
        noise = torch.randn(x0.shape, generator=gen, device=dev, dtype=x0.dtype)
        cond = batch_conditions(self, batch, gen)  # CFG dropout of class and vectors, noised condition image
        torch.manual_seed(mix_seed(t.seed, self.step, self.dist.rank, micro, 1))  # model dropout
        sync = self._ddp.no_sync() if (self._ddp is not None and not last) else contextlib.nullcontext()
        with sync:
            with autocast_context(dev, self.amp_dtype):
                loss = self._compute_loss(x0, noise, sigma, cond) / t.grad_accum
            loss.backward()
        return loss.detach().float()

    def train_step(self, batches: list[dict[str, Tensor]]) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches (non-finite results skip the update).

        Args:
            batches: ``grad_accum`` collated batches, each ``{"image": (b, C, H, W), "class_cond": (b,),
                "aug_cond": (b, 9)}`` with ``b`` the micro-batch size of this rank.

        Returns:
            ``{"loss", "grad_norm", "lr", "ok", "stop"}`` (loss and grad norm averaged over ranks).

        Raises:
            TrainingDiverged: after ``max_bad_steps`` consecutive non-finite steps.
        """
        t = self.recipe.train
        lr = set_lr(self.optimizer, lr_factor(self.step, t.lr_schedule, t.warmup_steps, t.steps))
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro, batch in enumerate(batches):
            total = total + self._micro_step(batch, micro, last=micro == len(batches) - 1)
        max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).float()
        stats = torch.stack([total, grad_norm, torch.tensor(float(self._stop_signal is not None), device=self.device)])
        if self.dist.enabled:
            torch.distributed.all_reduce(stats)
            stats = stats / self.dist.world_size
        loss, norm, stop = (float(v) for v in stats.cpu())
        ok = math.isfinite(loss) and math.isfinite(norm)
        if ok:
            self.optimizer.step()
            self.ema.update(self.model, self.step)
            self.consecutive_bad = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.consecutive_bad += 1
            self.say(
                f"step {self.step + 1}: loss {loss} / grad norm {norm} is not finite; skipped the update "
                f"({self.consecutive_bad} in a row, {self.bad_steps} in total; the run stops after {self.max_bad_steps} in a row)"
            )
        self.step += 1
        if self.consecutive_bad >= self.max_bad_steps:
            last = ckpt.list_checkpoints(self.run_dir)
            where = f"the last good checkpoint is {last[-1][1]}" if last else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"training diverged: the loss was NaN/inf for {self.consecutive_bad} consecutive steps "
                f"(up to step {self.step}); {where}. Lower train.lr, add train.warmup_steps or check the data"
            )
        return {"loss": loss, "grad_norm": norm, "lr": lr, "ok": ok, "stop": stop > 0}

    # -- files ---------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.safetensors`` (or ``path``: nothing pruned) on rank 0, prune old ones.

        Returns:
            The path written (None on other ranks).
        """
        data = data_state(self, gather=path is None)  # every rank: a stream's positions are gathered
        if not self.dist.is_main:
            return None
        rng = {"torch_cpu": torch.get_rng_state(), **device_rng_states()}
        extra = {"bad_steps": self.bad_steps, "world_size": self.dist.world_size,
                 **(self.evaluator.state() if self.evaluator is not None else {})}
        written = ckpt.save_checkpoint(
            path or ckpt.checkpoint_path(self.run_dir, self.step), step=self.step, model=self.model.state_dict(),
            ema=self.ema.model.state_dict(), optimizer=self.optimizer.state_dict(), rng=rng, data=data,
            recipe_toml=dump_recipe(self.recipe), model_spec=plain_data(self.model.spec.model_dump()), extra=extra,
            class_names=self.class_names,
        )
        if path is None:
            ckpt.prune_checkpoints(self.run_dir, self.recipe.train.keep_last)
        return written

    def _grid_conditions(self, n: int) -> dict[str, Tensor] | None:
        """The first ``n`` training items' conditions for a sample grid (loaded once per ``n``)."""
        if n not in self._grid_cond:
            self._grid_cond[n] = grid_conditions(self, n)
        return self._grid_cond[n]

    def sample_grid(self, name: str) -> Path | None:
        """Sample a grid from the EMA weights with the recipe's ``[sample]`` settings.

        ``min(sample.n, 64)`` images with seeds ``sample.seed + i`` (the same every time, so grids
        of successive steps are comparable); class ids cycle ``0, 1, ...`` so that with up to 16
        classes each column of the grid is one class. With a VAE the latents drawn are decoded. With progress bars on, a bar of its own
        (``grid NAME``, removed when done) counts the sampler steps.

        Args:
            name: file stem under ``run_dir/samples`` (:func:`step_name` of the step, or ``final``).

        Returns:
            The PNG path (None on other ranks).
        """
        if not self.dist.is_main:
            return None
        s = self.recipe.sample
        n = min(s.n, 64)
        labels = class_labels(n, self.num_classes)
        bar = None
        if self._progress_on:
            from tqdm.auto import tqdm

            bar = tqdm(total=s.steps * math.ceil(n / s.batch_size), desc=f"grid {name}", unit="step", leave=False,
                       dynamic_ncols=True)
        try:
            images = generate_images(
                self.ema_denoiser, n=n, shape=(self.channels, *self.image_size), sampler=s.sampler,
                schedule=s.schedule, steps=s.steps, seed=s.seed, labels=labels, cfg_scale=s.cfg_scale,
                uncond_class=self.num_classes, batch_size=s.batch_size, device=self.device, dtype=self.amp_dtype,
                cond=self._grid_conditions(n), conditioning=self.recipe.conditioning,
                on_step=None if bar is None else bar.update, decode=None if self.vae is None else self.vae.decode,
            )
        finally:
            if bar is not None:
                bar.close()
        nrow = self.num_classes if 0 < self.num_classes <= n and self.num_classes <= 16 else None
        return save_grid(images, self.run_dir / "samples" / f"{name}.png", nrow=nrow)

    def _final_grid(self) -> Path | None:
        """Draw ``samples/final.png``, saying so first (the training bar is closed by then)."""
        if not self.dist.is_main:
            return None
        s = self.recipe.sample
        self.say(f"sampling the final grid: {min(s.n, 64)} images, {s.steps} steps "
                 f"-> {self.run_dir / 'samples' / 'final.png'}")
        return self.sample_grid("final")

    def _last_logged_loss(self) -> float | None:
        """The last ``loss`` of ``metrics.jsonl`` at or before the current step (None if there is none)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return None
        for record in reversed(read_metrics(path)):
            if int(record.get("step", 0)) <= self.step and "loss" in record:
                try:
                    return float(record["loss"])
                except (TypeError, ValueError):
                    continue
        return None

    def _finished(self, start_time: float) -> TrainResult:
        """What :meth:`fit` does on a run already at ``train.steps``: report where its grid is, train nothing.

        Only a missing ``samples/final.png`` (a run stopped while drawing it) is drawn; no other file
        is touched.
        """
        t = self.recipe.train
        final = self.run_dir / "samples" / "final.png"
        grid: Path | None = final if final.is_file() else None
        if self.dist.is_main:
            where = f"step {self.step} of" if self.step == t.steps else f"step {self.step}, past"
            self.say(f"{self.run_dir} is already trained ({where} train.steps {t.steps}); nothing to train. "
                     "To train longer, raise train.steps (--set train.steps=N)")
            if grid is None:
                self.say(f"{final} is missing (the run stopped before drawing it); drawing it now")
                grid = self._final_grid()
            else:
                self.say(f"its final grid is {final}")
        barrier(self.dist)
        return TrainResult(
            step=self.step, loss=self._last_logged_loss(), run_dir=self.run_dir, checkpoint=None, grid=grid,
            interrupted=None, bad_steps=self.bad_steps, wall_time=time.perf_counter() - start_time,
            already_finished=True,
        )

    def _write_recipe(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = dump_recipe(self.recipe, header="resolved recipe of this run (written by hourglass train)")
            tmp = self.run_dir / ".recipe.toml.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.run_dir / "recipe.toml")
            if self.class_names is not None:  # what `hourglass sample --class NAME` and `hourglass show` read
                tmp = self.run_dir / f".{ckpt.CLASSES_FILE}.tmp"
                tmp.write_text(json.dumps(self.class_names, ensure_ascii=False) + "\n", encoding="utf-8")
                os.replace(tmp, self.run_dir / ckpt.CLASSES_FILE)

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = name
        self.say(f"received {name}: finishing step {self.step + 1}, then writing a checkpoint (Ctrl-C again aborts)")

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``train.steps`` (or a signal), writing metrics, checkpoints and grids.

        The progress bar (and, without one, each log line) shows the loss as the mean over the
        steps since the last log line; it is logged to the trackers (``metrics.jsonl``) every ``train.log_every``
        steps and at the last step, so the bar's last value, the last record and
        :attr:`TrainResult.loss` are one number. The bar is closed when the last step is done,
        before ``samples/final.png`` is drawn (with its own status line and bar).

        A run directory already at ``train.steps`` is reported (where its final grid is) and left
        as it is: see :attr:`TrainResult.already_finished`.

        Returns:
            A :class:`TrainResult`.

        Raises:
            TrainingDiverged: after ``max_bad_steps`` consecutive non-finite steps (no checkpoint is
                written then, so the last good one stays the newest).
        """
        t = self.recipe.train
        start_time = time.perf_counter()
        if self.step >= t.steps:
            return self._finished(start_time)
        self._write_recipe()
        metrics = open_trackers(t.trackers, self.run_dir, self.recipe.to_data(), enabled=self.dist.is_main,
                                resumed_step=self.step if self.resumed_from else None)  # only rank 0 logs
        last_ckpt: Path | None = None
        grid: Path | None = None
        loss_mean: float | None = None
        if self.dist.is_main and self._progress_on:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=t.steps, initial=self.step, desc="train", dynamic_ncols=True)
        window_losses: list[float] = []
        window_images, window_start = 0, time.perf_counter()
        images_per_step = self.micro_batch * t.grad_accum * self.dist.world_size
        try:
            with self._signals():
                data = self.loader.iterate(start_step=self.step * t.grad_accum)
                while self.step < t.steps:
                    try:
                        out = self.train_step([next(data) for _ in range(t.grad_accum)])
                    except TrainingDiverged as exc:
                        metrics.log(self.step, loss=math.nan, bad_steps=self.bad_steps, event="diverged", message=str(exc))
                        raise
                    window_images += images_per_step
                    if out["ok"]:
                        window_losses.append(out["loss"])
                    # the loss shown and logged: mean over the (finite) steps since the last log line
                    window_mean = sum(window_losses) / len(window_losses) if window_losses else float("nan")
                    elapsed = time.perf_counter() - window_start
                    speed = window_images / elapsed if elapsed > 0 else 0.0
                    if self._bar is not None:
                        self._bar.update(1)
                        self._bar.set_postfix(loss=f"{window_mean:.4f}", img_s=f"{speed:.1f}", refresh=False)
                    if self.step % t.log_every == 0 or self.step == t.steps or out["stop"]:
                        loss_mean = window_mean
                        metrics.log(
                            self.step, loss=loss_mean, lr=out["lr"], grad_norm=out["grad_norm"],
                            images_per_sec=speed, ema_decay=self.ema.decay(self.step - 1), bad_steps=self.bad_steps,
                            epoch=self.step * t.grad_accum // self.loader.batches_per_epoch,
                        )
                        if self._bar is None:
                            self.say(f"step {self.step}/{t.steps}  loss {loss_mean:.4f}  lr {out['lr']:.2e}  "
                                     f"grad_norm {out['grad_norm']:.3f}  {speed:.1f} img/s")
                        window_losses, window_images = [], 0
                        window_start = time.perf_counter()
                    paused = time.perf_counter()
                    if self.evaluator is not None:  # before the step's checkpoint, which stores the best so far
                        self.evaluator.after_step(metrics)
                    # no periodic checkpoint inside a run of NaN steps: the newest stays the last good one
                    due = (self.step % t.checkpoint_every == 0 or self.step == t.steps) and not self.consecutive_bad
                    if due or out["stop"]:
                        last_ckpt = self.save_checkpoint() or last_ckpt
                    if t.sample_every and self.step % t.sample_every == 0 and self.step < t.steps:
                        grid = metrics.log_image(self.step, "samples", self.sample_grid(step_name(self.step))) or grid
                    window_start += time.perf_counter() - paused  # files do not count against img/s
                    if out["stop"]:
                        self._stop_signal = self._stop_signal or "signal"
                        break
            interrupted = self._stop_signal
            if self._bar is not None:  # training is over: the bar does not sit at 100% through the grid
                self._bar.close()
                self._bar = None
            if interrupted is None and self.step >= t.steps:
                grid = metrics.log_image(self.step, "samples", self._final_grid()) or grid
        finally:
            metrics.close()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        barrier(self.dist)
        if interrupted is not None and last_ckpt is not None:
            self.say(f"stopped by {interrupted} after step {self.step}; checkpoint {last_ckpt}. "
                     f"Run the same command again to resume")
        return TrainResult(
            step=self.step, loss=loss_mean, run_dir=self.run_dir, checkpoint=last_ckpt, grid=grid,
            interrupted=interrupted, bad_steps=self.bad_steps, wall_time=time.perf_counter() - start_time,
        )

    def close(self) -> None:
        """Leave the process group (when one was joined)."""
        cleanup_distributed(self.dist)


def train(recipe: Recipe, run_dir: str | os.PathLike, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` (``kwargs`` go to it), run :meth:`Trainer.fit` and clean up.

    Returns:
        The :class:`TrainResult`.
    """
    trainer = Trainer(recipe, run_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
