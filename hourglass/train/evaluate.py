"""Evaluation during training (the recipe's ``[eval]``): metrics of EMA samples, and the best checkpoint.

Every ``eval.every`` steps and at the last step, rank 0 draws ``eval.n`` images from the EMA weights
(image ``i`` from seed ``eval.seed + i``: the same noise every time, so the numbers of successive
steps differ only by the weights), computes the metrics (any of ``fid, kid, fd_dinov2, is, pr``) with
:func:`hourglass.evaluation.compute_metrics` against the reference's cached statistics, and logs
``{"step": s, "fid": ..., "kid": ...}`` (``pr`` as ``precision`` and ``recall``) through the trainer's
trackers. The other ranks wait at a barrier.

Exact resume is kept: the evaluation runs inside :func:`torch.random.fork_rng` (the global generators
are restored afterwards), draws its noise from its own seeded generators, reads the reference from a
dataset of its own (never the training loader), and runs before the step's checkpoint is written, so
the best value so far, stored in every checkpoint's ``extra["eval_best"]``, is that of the step.

With ``eval.best`` set, a better value than any before (lower; higher for ``is``, ``precision`` and
``recall``) writes ``checkpoints/best.safetensors``: a full
checkpoint of that step (atomically: temp file, fsync, rename) whose ``extra["eval_best"]`` holds the
metric, its value and the step. Its name does not match ``step_*.safetensors``, so resuming,
``hourglass.load(run_dir)`` and ``hourglass sample RUN_DIR`` keep using the newest step; pass the file
itself to use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hourglass.evaluation import EvaluationError, ImageSource, to_uint8_rgb
from hourglass.train import checkpoint as ckpt
from hourglass.train.distributed import barrier
from hourglass.train.sampling import class_labels, generate_images

if TYPE_CHECKING:
    from hourglass.trackers import TrackerSet
    from hourglass.train.trainer import Trainer

__all__ = ["BEST_FILE", "Evaluator", "GeneratedImages", "best_checkpoint_path"]

#: the best checkpoint's file name under ``run_dir/checkpoints``
BEST_FILE = "best.safetensors"


def best_checkpoint_path(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints/best.safetensors``: where ``[eval] best`` keeps the best checkpoint."""
    return Path(run_dir) / "checkpoints" / BEST_FILE


class GeneratedImages(ImageSource):
    """Images held in memory, as an :class:`~hourglass.evaluation.ImageSource` (never cached).

    Args:
        images: ``(N, C, H, W)`` float images in [-1, 1] with ``C`` in {1, 3}.
        label: the description shown in reports.
    """

    cacheable = False

    def __init__(self, images: Tensor, label: str = "generated") -> None:
        self.images = to_uint8_rgb(images)  # uint8 (N, 3, H, W)
        self.label = f"{label} ({self.images.shape[0]} images)"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> dict[str, Any]:
        """Never called: generated images are not cached."""
        raise EvaluationError("generated images are not cached")

    def batches(self, batch_size: int):
        """``uint8 (b, 3, H, W)`` batches of at most ``batch_size`` images, in order."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size]


class Evaluator:
    """Runs the recipe's ``[eval]`` for a :class:`~hourglass.train.Trainer` (build it with :meth:`for_trainer`).

    Attributes:
        best: ``{"metric", "value", "step"}`` of the best evaluation so far (None before the first,
            or without ``eval.best``); restored from the checkpoint the trainer resumed from.
    """

    def __init__(self, trainer: Trainer) -> None:
        from hourglass.evaluation import FeatureNetworkUnavailable, load_dinov2, resolve_feature_extractor
        from hourglass.train.trainer import TrainConfigError

        self.trainer = trainer
        self.spec = trainer.recipe.eval
        self.best: dict[str, Any] | None = None
        self.extractor: Any = None
        self.dinov2: Any = None
        self.reference: Any = None
        if not trainer.dist.is_main:
            return
        metrics = set(self.spec.metrics)
        try:  # fail at start-up, not at the first evaluation
            if metrics - {"fd_dinov2"}:
                self.extractor = resolve_feature_extractor(
                    self.spec.extractor, device=trainer.device, need_logits="is" in metrics
                )
            if "fd_dinov2" in metrics:
                self.dinov2 = load_dinov2(self.spec.dinov2, device=trainer.device)
            self.reference = self._reference()
        except (FeatureNetworkUnavailable, EvaluationError, OSError, ValueError) as exc:
            raise TrainConfigError(f"eval: {' '.join(str(exc).split())}") from None
        self._restore_best()

    @classmethod
    def for_trainer(cls, trainer: Trainer) -> Evaluator | None:
        """An evaluator when the recipe has an ``[eval]`` section, else None.

        Raises:
            TrainConfigError: the feature network cannot be loaded, or the reference cannot be read.
        """
        return cls(trainer) if trainer.recipe.eval is not None else None

    # -- set-up ------------------------------------------------------------------------------
    def _reference(self) -> ImageSource:
        """The reference images: a folder, a dataset table, or (unset) the training data unaugmented."""
        from hourglass.evaluation import DatasetImages, image_source
        from hourglass.recipe import plain_data
        from hourglass.registry import DATASET

        spec, t = self.spec, self.trainer
        if isinstance(spec.reference, str):  # a folder, or an .npz such as an ADM reference batch
            return image_source(spec.reference, n=spec.n_reference, what="eval.reference")
        dataset_spec = spec.reference if spec.reference is not None else t.recipe.data.dataset
        what = "eval.reference" if spec.reference is not None else "data.dataset"
        missing = DATASET.get(dataset_spec.type).availability_problems(dataset_spec)
        if missing:
            raise EvaluationError(f"{what}: " + "; ".join(map(str, missing)))
        hw = tuple(t.data_resolution)  # the size of the images the model's samples are (decoded) at
        dataset = DATASET.build(dataset_spec, resolution=hw, split="train")
        fingerprint = {"dataset": plain_data(dataset_spec.model_dump()), "resolution": list(hw), "split": "train"}
        label = f"{what} {dataset_spec.type} (train, {hw[0]}x{hw[1]})"
        return DatasetImages(dataset, n=spec.n_reference, seed=spec.seed, fingerprint=fingerprint, label=label)

    def _restore_best(self) -> None:
        """The best so far: from the resumed checkpoint's ``extra``; a fresh run drops a stale best file."""
        t = self.trainer
        folder = t.run_dir / "checkpoints"
        if folder.is_dir():
            for stale in folder.glob(f".{BEST_FILE}.tmp-*"):  # a save killed mid-write
                stale.unlink(missing_ok=True)
        if t.resumed_from is None:
            best_checkpoint_path(t.run_dir).unlink(missing_ok=True)  # another run's; this one starts afresh
            return
        saved = ckpt.read_checkpoint(t.resumed_from, tensors=False).extra.get("eval_best")
        if isinstance(saved, dict) and saved.get("metric") == self.spec.best and saved.get("value") is not None:
            self.best = {"metric": saved["metric"], "value": float(saved["value"]), "step": int(saved["step"])}

    def state(self) -> dict[str, Any]:
        """What every checkpoint stores (``extra`` entries): ``{"eval_best": {...}}``, or ``{}`` before one."""
        return {} if self.best is None else {"eval_best": dict(self.best)}

    # -- evaluation ----------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether step ``step`` (steps taken) is evaluated: every ``eval.every`` steps and the last."""
        return step % self.spec.every == 0 or step == self.trainer.recipe.train.steps

    def after_step(self, metrics: TrackerSet) -> dict[str, float] | None:
        """Evaluate when the trainer's current step is due (on every rank: rank 0 works, the others wait).

        Args:
            metrics: the trainer's trackers; one record ``{"step": s, <metric>: value, ...}`` is added.

        Returns:
            ``{metric: value}`` on rank 0 when evaluated, else None.
        """
        t = self.trainer
        if not self.due(t.step):
            return None
        values = self.evaluate() if t.dist.is_main else None
        if values is not None:
            metrics.log(t.step, **values)
            shown = "  ".join(f"{k} {v:.4f}" if k == "fid" else f"{k} {v:.6f}" for k, v in values.items())
            networks = ", ".join(x.name for x in (self.extractor, self.dinov2) if x is not None)
            t.say(f"eval step {t.step}: {shown}  ({self.spec.n} images, {networks})")
            self._keep_best(values)
        barrier(t.dist)
        return values

    def sample(self) -> Tensor:
        """``(n, C, H, W)`` images from the EMA weights (decoded with a VAE), image ``i`` from seed ``seed + i``.

        Class ids cycle ``0, 1, ...`` (as the training grids); sampler settings left unset in
        ``[eval]`` are ``[sample]``'s.
        """
        t, spec, s = self.trainer, self.spec, self.trainer.recipe.sample
        n = spec.n
        return generate_images(
            t.ema_denoiser, n=n, shape=(t.channels, *t.image_size), sampler=spec.sampler or s.sampler,
            schedule=spec.schedule or s.schedule, steps=spec.steps or s.steps, seed=spec.seed,
            labels=class_labels(n, t.num_classes), cfg_scale=s.cfg_scale if spec.cfg_scale is None else spec.cfg_scale,
            uncond_class=t.num_classes, batch_size=spec.batch_size, device=t.device, dtype=t.amp_dtype,
            decode=None if t.vae is None else t.vae.decode,
        )

    def evaluate(self) -> dict[str, float]:
        """Sample and score (rank 0), leaving every global random generator as it was.

        Returns:
            ``{value: number}`` for each of ``eval.logged_values()`` (``pr`` gives ``precision`` and
            ``recall``), in that order.
        """
        from hourglass.evaluation import compute_metrics

        t, spec = self.trainer, self.spec
        accelerator = t.device.type not in ("cpu", "meta")
        with torch.random.fork_rng(devices=[t.device] if accelerator else [],
                                   device_type=t.device.type if accelerator else None):
            images = self.sample()
            result = compute_metrics(
                GeneratedImages(images), self.reference, metrics=spec.metrics, extractor=self.extractor,
                dinov2=self.dinov2, kid_seed=spec.seed, pr_k=spec.pr_k, is_splits=spec.is_splits, batch_size=spec.batch_size,
                device=str(t.device),
            )
        fields = {"is": "inception_score"}
        return {v: float(getattr(result, fields.get(v, v))) for v in spec.logged_values()}

    def _keep_best(self, values: dict[str, float]) -> None:
        """Write ``best.safetensors`` when ``eval.best``'s value beats every earlier one."""
        from hourglass.recipe.eval_section import HIGHER_IS_BETTER

        metric = self.spec.best
        if metric is None or not math.isfinite(values[metric]):
            return
        sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
        if self.best is not None and not sign * values[metric] < sign * self.best["value"]:
            return
        self.best = {"metric": metric, "value": values[metric], "step": self.trainer.step}
        path = self.trainer.save_checkpoint(path=best_checkpoint_path(self.trainer.run_dir))
        self.trainer.say(f"new best {metric} {values[metric]:.4f} at step {self.trainer.step} -> {path}")
