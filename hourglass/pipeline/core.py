"""The :class:`Pipeline`: a loaded model with its recipe and denoiser, ready to sample and edit.

A latent model (a recipe with a ``[vae]``) is used through the same calls: the pipeline holds the
VAE, decodes what the model draws and encodes the images it edits, so every call takes and returns
images. The VAE decodes (and encodes) one image at a time, so an image still does not depend on
``batch_size``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hourglass.pipeline._errors import PipelineError, positive_int
from hourglass.pipeline.conditions import call_conditions, conditioning_of, vector_width
from hourglass.pipeline.editing import Editing
from hourglass.pipeline.images import to_pil

__all__ = ["Pipeline"]


class Pipeline(Editing):
    """A trained model ready to sample, edit and inpaint (see the module docstring).

    Usually made by :func:`load`; a model in memory works too: ``Pipeline(model, recipe=recipe)``.

    Args:
        model: the backbone (a registered model family: its ``spec`` gives channels, size and classes).
        denoiser: its preconditioned denoiser (default: the recipe's, else ``karras``, around ``model``).
        recipe: the run's :class:`hourglass.recipe.Recipe` (its ``[sample]`` section gives the
            defaults), or None for the library defaults.
        class_names: one name per class id, or None.
        step: the training step the weights are from.
        weights: ``"ema"``, ``"raw"`` or ``"unknown"``: which weights ``model`` holds.
        source: the path it was loaded from.
        converted_from: the format the weights were converted from (``"k-diffusion"``), or ``""``.
        vae: for a latent model: an :class:`hourglass.vae.Autoencoder`, or a VAE spec (a table with a
            ``type``, or a spec) to build; default: the recipe's ``[vae]`` (loaded now), if it names one.
            With a VAE every call takes and returns images: drawn latents are decoded, and the images
            to edit are encoded first.

    Attributes:
        recipe: as given.
        model: the backbone (eval mode, no gradients).
        denoiser: the denoiser samplers call.
        class_names: as given (None when the run recorded none).
        step: as given.
        weights: as given.
        source: as given.
        converted_from: ``"k-diffusion"`` for a folder written by ``hourglass convert``, else ``""``.
        vae: the frozen VAE of a latent model (on the model's device), else None.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        denoiser: nn.Module | None = None,
        recipe: Any = None,
        class_names: Sequence[str] | None = None,
        step: int = 0,
        weights: str = "unknown",
        source: str | os.PathLike | None = None,
        converted_from: str = "",
        vae: Any = None,
    ) -> None:
        from hourglass.diffusion.conditioning import conditioned
        from hourglass.registry import DENOISER

        if not hasattr(model, "spec"):
            raise TypeError(f"model must be a registered backbone with a .spec, got {type(model).__name__}")
        self.model = model
        self.recipe = recipe
        if denoiser is None:
            denoiser = DENOISER.build(recipe.diffusion.denoiser if recipe is not None else "karras",
                                      model=conditioned(model, conditioning_of(recipe)))
        self.denoiser = denoiser
        if class_names is not None:
            class_names = [str(n) for n in class_names]
            if len(class_names) != self.num_classes:
                warnings.warn(f"ignoring {len(class_names)} class names: the model has {self.num_classes} classes",
                              stacklevel=2)
                class_names = None
        self.class_names = class_names
        self.step = int(step)
        self.weights = weights
        self.source = Path(source) if source is not None else None
        self.converted_from = converted_from
        if vae is None and recipe is not None:
            vae = getattr(recipe, "vae", None)
        self.vae = None if vae is None else self._build_vae(vae)

    def _build_vae(self, vae: Any) -> nn.Module:
        """``vae`` (a module, or a spec to load) checked against the model and moved to its device."""
        from pydantic import ValidationError

        from hourglass.recipe import vae_channel_problems
        from hourglass.registry import VAE
        from hourglass.vae import Autoencoder

        if not isinstance(vae, Autoencoder):
            try:
                spec = VAE.validate(vae)
            except (ValueError, TypeError) as exc:  # an unknown type, a bad option (pydantic's errors included)
                errors = exc.errors() if isinstance(exc, ValidationError) else None
                reason = ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) if errors
                          else " ".join(str(exc).split()))
                raise PipelineError(f"vae: {reason}") from None
            try:
                vae = VAE.build(spec)
            except (OSError, ImportError, ValueError) as exc:
                raise PipelineError(f"vae ({spec.type}): {' '.join(str(exc).split())}") from None
        name = getattr(getattr(vae, "spec", None), "type", type(vae).__name__)
        problems = vae_channel_problems(int(self.model.spec.in_channels), int(vae.latent_channels), name)
        if problems:
            raise PipelineError(str(problems[0]))
        return vae.to(self.device)

    # -- what it is ---------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes of the model (0: unconditional); class id ``num_classes`` means "no class"."""
        return int(self.model.spec.num_classes)

    @property
    def channels(self) -> int:
        """Image channels (1 grey, 3 RGB): the model's (less a ``[conditioning]`` image's), or with a VAE the
        channels of the images it decodes."""
        if self.vae is not None:
            return int(self.vae.image_channels)
        spec = conditioning_of(self.recipe)
        return int(self.model.spec.in_channels) - (spec.image_channels if spec is not None else 0)

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` the model was trained at: its input size (with a VAE, the latent grid)."""
        from hourglass.spec import as_pair

        return as_pair(self.model.spec.input_size)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images at the training size (the default size of every call); with a VAE,
        the size its latent grid decodes to."""
        return self.latent_size if self.vae is None else self.vae.image_size(self.latent_size)

    @property
    def device(self) -> torch.device:
        """Where the model is."""
        tensor = next(iter(self.model.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.model.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @property
    def defaults(self) -> Any:
        """The ``[sample]`` section the calls default to (the recipe's, else the library's)."""
        from hourglass.recipe import SampleSection

        return self.recipe.sample if self.recipe is not None else SampleSection()

    def describe_weights(self) -> str:
        """Which weights are loaded, in words (e.g. ``"EMA weights"``)."""
        if self.converted_from:
            kind = {"ema": "EMA weights", "raw": "raw (non-EMA) weights"}.get(self.weights, "weights")
            note = "" if self.weights in ("ema", "raw") else " (EMA or not: not recorded)"
            return f"{kind} converted from {self.converted_from}{note}"
        return {"ema": "EMA weights", "raw": "raw trained weights (not the EMA)"}.get(self.weights, "weights")

    def __repr__(self) -> str:
        h, w = self.image_size
        classes = f"{self.num_classes} classes" if self.num_classes else "unconditional"
        where = f" from {self.source}" if self.source is not None else ""
        if self.vae is not None:
            lh, lw = self.latent_size
            classes = f"latents {self.model.spec.in_channels}x{lh}x{lw} of a {type(self.vae).__name__}, {classes}"
        return (f"Pipeline({type(self.model).__name__}, {self.channels}x{h}x{w}, {classes}, "
                f"{self.describe_weights()} of step {self.step}{where}, {self.device})")

    def to(self, device: str | torch.device) -> Pipeline:
        """Move the model (and so the denoiser) to ``device`` (``"auto"`` allowed); returns self."""
        from hourglass.devices import resolve_device

        dev = resolve_device(device)
        self.model.to(dev)
        self.denoiser.to(dev)
        if self.vae is not None:
            self.vae.to(dev)
        return self

    # -- argument handling --------------------------------------------------------------------------
    def class_ids(self, classes: Any) -> list[int] | None:
        """Class ids for ``classes``: ids, names, or None / ``"none"`` for "no class" (id ``num_classes``).

        Args:
            classes: one entry, comma-separated text (``"cat,dog"``), or a sequence (or a ``(B,)`` int
                tensor) of entries; None alone means "not given" and returns None. Names match the
                run's class names exactly, else case-insensitively when unambiguous
                (:func:`hourglass.train.sampling.class_ids`).

        Raises:
            PipelineError: a class given to an unconditional model, an id out of range, an unknown name.
        """
        from hourglass.train.sampling import class_ids

        if classes is None:
            return None
        if isinstance(classes, Tensor):
            classes = classes.reshape(-1).tolist()
        elif isinstance(classes, int):
            classes = [classes]
        if not isinstance(classes, str):
            classes = ["none" if entry is None else entry for entry in classes]
        try:
            return class_ids(classes, self.num_classes, self.class_names)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None

    def _labels(self, n: int, classes: Any, default_every_class: bool) -> Tensor | None:
        from hourglass.train.sampling import class_labels

        ids = self.class_ids(classes)
        if self.num_classes == 0:
            return None
        if ids is None and not default_every_class:
            ids = [self.num_classes]
        return class_labels(n, self.num_classes, ids)

    def _cfg(self, cfg: float | None) -> float:
        guided = self.num_classes or vector_width(self.model, self.recipe)
        if cfg is None:
            return float(self.defaults.cfg_scale) if guided else 1.0
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
            raise PipelineError(f"cfg must be a finite number >= 0 (1 = no guidance), got {cfg!r}")
        if cfg != 1 and not guided:
            raise PipelineError(f"cfg {cfg} needs a class- or mapping_cond-conditional model; this one has neither "
                                "(use cfg=1)")
        return float(cfg)

    def _sampler(self, sampler: Any, options: dict[str, Any]) -> Any:
        from pydantic import BaseModel, ValidationError

        from hourglass.registry import SAMPLER, RegistryError

        chosen = self.defaults.sampler if sampler is None else sampler
        if isinstance(chosen, str):
            data: Any = {"type": chosen}
        elif isinstance(chosen, BaseModel):
            data = chosen.model_dump()
        elif isinstance(chosen, dict):
            data = dict(chosen)
        else:
            raise TypeError(f"sampler must be a name, a dict or a spec, got {type(chosen).__name__}")
        data.update(options)
        try:
            return SAMPLER.validate(data)
        except RegistryError as exc:
            raise PipelineError(str(exc)) from None
        except ValidationError as exc:
            name = data.get("type")
            fields = [f for f in SAMPLER.spec_class(name).model_fields if f != "type"]
            unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
            reasons = [f"unknown option(s) {', '.join(map(repr, unknown))}"] if unknown else []
            reasons += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                        if e["type"] != "extra_forbidden"]
            raise PipelineError(
                f"sampler {name!r}: {'; '.join(reasons)}; its options are: {', '.join(fields) or '(none)'}"
            ) from None

    def _schedule(self, schedule: Any) -> Any:
        from pydantic import ValidationError

        from hourglass.registry import SCHEDULE, RegistryError

        try:
            return SCHEDULE.validate(self.defaults.schedule if schedule is None else schedule)
        except (RegistryError, ValidationError) as exc:
            raise PipelineError(f"schedule: {exc}") from None

    def resolution_problems(self, size: int | Sequence[int]) -> str | None:
        """Why the model cannot run at ``size`` (side, or ``(H, W)``), or None when it can.

        With a VAE ``size`` is the images': its sides must be multiples of the VAE's factor, and the
        model must run at the latent grid.
        """
        from pydantic import ValidationError

        hw = (size, size) if isinstance(size, int) else tuple(size)
        if self.vae is not None:
            try:
                hw = self.vae.latent_size(hw)
            except ValueError as exc:
                return str(exc)
        spec = self.model.spec
        try:  # the spec's own rules: divisibility by its stride, windows that fit the grids
            type(spec).model_validate({**spec.model_dump(), "input_size": hw})
        except ValidationError as exc:
            return "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        return None

    def _size(self, resolution: int | Sequence[int] | None) -> tuple[int, int]:
        if resolution is None:
            return self.image_size
        values = [resolution] if isinstance(resolution, int) else list(resolution)
        if (len(values) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
                or min(values) <= 0):
            raise PipelineError(f"resolution takes a positive side or (height, width), got {resolution!r}")
        hw = (values[0], values[-1])
        problem = self.resolution_problems(hw)
        if problem:
            raise PipelineError(f"resolution {hw[0]}x{hw[1]} does not fit this model: {problem}")
        return hw

    def _settings(self, n: Any, steps: Any, seed: Any, batch_size: Any, dtype: Any) -> tuple[int, int, int, int, Any]:
        from hourglass.devices import resolve_dtype

        d = self.defaults
        n = positive_int("n", d.n if n is None else n)
        steps = positive_int("steps", d.steps if steps is None else steps)
        batch_size = positive_int("batch_size", d.batch_size if batch_size is None else batch_size)
        seed = d.seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PipelineError(f"seed must be an integer >= 0, got {seed!r}")
        if not isinstance(dtype, torch.dtype):
            if dtype not in ("auto", "float32", "bfloat16", "float16"):
                raise PipelineError(f"dtype must be 'auto', 'float32', 'bfloat16', 'float16' or a torch dtype, "
                                    f"got {dtype!r}")
            dtype = getattr(torch, resolve_dtype(dtype, self.device))
        return n, steps, seed, batch_size, dtype

    @staticmethod
    def _bar(progress: bool, total: int, desc: str) -> Any:
        if not progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    # -- the VAE of a latent model -------------------------------------------------------------------
    def _decode(self, latents: Tensor) -> Tensor:
        """Decoded images, one at a time: an image does not depend on the batch it was drawn in."""
        return torch.cat([self.vae.decode(z[None]) for z in latents])  # type: ignore[union-attr]

    def _encode(self, images: Tensor, seeds: Sequence[int]) -> Tensor:
        """Latents of ``images``, one at a time (image ``i``'s posterior sample, if any, drawn from seed ``seeds[i]``)."""
        vae: Any = self.vae
        return torch.cat([vae.encode(x[None], generator=torch.Generator(x.device).manual_seed(seed))
                          for x, seed in zip(images, seeds, strict=True)])

    # -- sampling -----------------------------------------------------------------------------------
    def iter_sample(
        self,
        n: int | None = None,
        *,
        classes: Any = None,
        cfg: float | None = None,
        sampler: Any = None,
        schedule: Any = None,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        resolution: int | Sequence[int] | None = None,
        dtype: str | torch.dtype = "float32",
        progress: bool = False,
        mapping_cond: Any = None,
        cond_image: Any = None,
        **sampler_options: Any,
    ) -> Iterator[tuple[int, Tensor]]:
        """:meth:`sample`, one batch at a time: yields ``(index of its first image, (b, C, H, W) images)``.

        The arguments are checked when it is called, before the first batch is drawn.
        """
        from hourglass.train.sampling import iter_generate

        n, steps, seed, batch_size, dtype = self._settings(n, steps, seed, batch_size, dtype)
        labels = self._labels(n, classes, default_every_class=True)
        cond = call_conditions(self.model, self.recipe, n, mapping_cond, cond_image)
        scale = self._cfg(cfg)
        spec = self._sampler(sampler, sampler_options)
        sched = self._schedule(schedule)
        hw = self._size(resolution)
        if self.vae is not None:
            hw = self.vae.latent_size(hw)

        def batches() -> Iterator[tuple[int, Tensor]]:
            bar = self._bar(progress, math.ceil(n / batch_size) * steps, "sample")
            try:
                yield from iter_generate(
                    self.denoiser, n=n, shape=(self.channels if self.vae is None else int(self.model.spec.in_channels), *hw),
                    sampler=spec, schedule=sched, steps=steps, cond=cond, conditioning=conditioning_of(self.recipe),
                    seed=seed, labels=labels, cfg_scale=scale, uncond_class=self.num_classes,
                    batch_size=batch_size, device=self.device, dtype=dtype,
                    on_step=bar.update if bar is not None else None,
                    decode=self._decode if self.vae is not None else None,
                )
            finally:
                if bar is not None:
                    bar.close()

        return batches()

    def sample(
        self,
        n: int | None = None,
        *,
        classes: Any = None,
        cfg: float | None = None,
        sampler: Any = None,
        schedule: Any = None,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        resolution: int | Sequence[int] | None = None,
        dtype: str | torch.dtype = "float32",
        progress: bool = False,
        mapping_cond: Any = None,
        cond_image: Any = None,
        **sampler_options: Any,
    ) -> Tensor:
        """Draw ``n`` images.

        Args:
            n: number of images (default: the run's ``sample.n``).
            classes: class ids or names (when the run recorded names), cycled over the images; None
                entries (or ``"none"``) draw without a class. Default: every class in turn
                (``0, 1, ..., num_classes - 1, 0, ...``); ignored for an unconditional model.
            cfg: classifier-free guidance scale, 1 = none (default: the run's ``sample.cfg_scale``).
            sampler: a sampler name (``hourglass list sampler``), dict or spec (default: the run's).
            schedule: a sigma schedule name, dict or spec (default: the run's).
            steps: sampler steps (default: the run's ``sample.steps``).
            seed: image ``i`` uses ``seed + i`` (default: the run's ``sample.seed``).
            batch_size: images per model batch; does not change the images (in float32).
            resolution: a side or ``(H, W)`` other than the training size.
            dtype: ``"float32"`` (default), ``"bfloat16"`` / ``"float16"`` autocast, or ``"auto"``
                (bfloat16 on CUDA).
            progress: show a progress bar.
            mapping_cond: the data's per-sample vectors, ``(D,)`` or ``(k, D)`` cycled over the images
                (needed by a model trained on them; zeroed in guidance's unconditional branch).
            cond_image: condition images ``(C', h, w)`` or ``(k, C', h, w)`` in [-1, 1], cycled (a
                ``[conditioning]`` model: e.g. the low-resolution input of super-resolution).
            **sampler_options: options of the sampler's spec, e.g. ``eta=0.5``, ``s_noise=1.0``.

        Returns:
            ``(n, C, H, W)`` float32 on the CPU, in ``[-1, 1]``.

        Raises:
            PipelineError: an argument the model cannot serve (the message says which).
        """
        return torch.cat([images for _, images in self.iter_sample(
            n, classes=classes, cfg=cfg, sampler=sampler, schedule=schedule, steps=steps, seed=seed,
            batch_size=batch_size, resolution=resolution, dtype=dtype, progress=progress, mapping_cond=mapping_cond,
            cond_image=cond_image, **sampler_options,
        )])

    # -- output helpers -----------------------------------------------------------------------------
    to_pil = staticmethod(to_pil)

    @staticmethod
    def save_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
        """Tile ``(B, C, H, W)`` images in [-1, 1] into one PNG (``nrow`` per row, default square)."""
        from hourglass.train.images import save_grid

        return save_grid(images, path, nrow=nrow)

    @staticmethod
    def save_images(images: Tensor, folder: str | os.PathLike, start: int = 0) -> list[Path]:
        """Write ``000000.png``, ``000001.png``, ... (numbered from ``start``) into ``folder``."""
        from hourglass.train.images import save_image

        return [save_image(image, Path(folder) / f"{start + i:06d}.png") for i, image in enumerate(images)]
