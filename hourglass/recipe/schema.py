"""The recipe schema: six sections (and an optional seventh), each a frozen spec, and the rules that span sections.

* ``[model]``: a registered model type and its component graph (``[[model.levels]]`` tables,
  ``mapping``, ``pos_emb``, ``ffn``, ...), validated by the MODEL registry, so plugin components
  need no schema change. ``preset = "hdit_s"`` starts from a preset; the other keys override it.
* ``[vae]`` (optional): a registered VAE (``type = "autoencoder_kl"``, ``path = ...``); the model
  then works on its latents: ``model.input_size`` is the latent grid, ``model.in_channels`` the
  latent channels, and every sampling path decodes.
* ``[diffusion]``: denoiser (with ``sigma_data``), loss weighting, training sigma density.
* ``[data]``: the dataset component, batch size, loader workers, Karras augmentation.
* ``[train]``: AdamW, EMA, clipping, class dropout, checkpoint/sample/log cadence, seed.
* ``[sample]``: sampler, sigma schedule, steps, guidance scale, how many images.
* ``[runtime]``: device, dtype, ``torch.compile``, attention backends (not the model's identity).
* ``[eval]`` (optional): metrics (FID, KID, FD_DINOv2, IS, precision/recall) of EMA samples every
  ``every`` steps during training, logged to the trackers, and the best checkpoint kept as
  ``checkpoints/best.safetensors``.

Rules that span sections (classes and channels of model, VAE and data, guidance, batch splits, one
``sigma_data``) live in :func:`cross_field_problems`; they ask the components' contracts (a
dataset's declared classes and channels, a VAE's declared latent channels, the model's
``embeds_aug``), never their names.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hourglass.data.augment import KarrasAugmentSpec
from hourglass.diffusion.conditioning import ConditioningSection
from hourglass.recipe.eval_section import EVAL_METRICS, EvalSection
from hourglass.registry import DATASET, DENOISER, MODEL, SAMPLER, SCHEDULE, SIGMA_DENSITY, TRACKER, VAE, WEIGHTING
from hourglass.spec import Component, Problem, Spec, raise_problems

__all__ = [
    "Recipe",
    "DiffusionSection",
    "DataSection",
    "TrainSection",
    "EMASection",
    "SampleSection",
    "RuntimeSection",
    "EvalSection",
    "EVAL_METRICS",
    "SECTIONS",
    "cross_field_problems",
    "class_problems",
    "channel_problems",
    "vae_channel_problems",
    "denoiser_problems",
    "availability_problems",
]


class DiffusionSection(Spec):
    """``[diffusion]``: preconditioning, loss weighting and training noise levels."""

    denoiser: Component(DENOISER) = Field(  # type: ignore[valid-type]
        default_factory=lambda: DENOISER.validate("karras"),
        description="preconditioning of the backbone (EDM / Karras 2022), including sigma_data",
    )
    weighting: Component(WEIGHTING) = Field(  # type: ignore[valid-type]
        default_factory=lambda: WEIGHTING.validate("soft_min_snr"), description="loss weighting w(sigma)"
    )
    sigma_density: Component(SIGMA_DENSITY) = Field(  # type: ignore[valid-type]
        default_factory=lambda: SIGMA_DENSITY.validate("cosine_interpolated"),
        description="distribution of the training noise levels",
    )


class DataSection(Spec):
    """``[data]``: what to train on. Images are loaded at ``model.input_size`` (with a ``[vae]``: at the
    size the model's latent grid decodes to)."""

    dataset: Component(DATASET) = Field(  # type: ignore[valid-type]
        ..., description="dataset component, e.g. {type = \"imagefolder\", root = \"/data/ffhq\"}"
    )
    batch_size: int = Field(
        256, ge=1, description="images per optimizer step, over all devices and accumulation steps together"
    )
    num_workers: int = Field(2, ge=0, description="data-loading worker processes (0: load in the main process)")
    augment: KarrasAugmentSpec = Field(
        default_factory=KarrasAugmentSpec, description="non-leaking Karras augmentation; p = 0 turns it off"
    )


class EMASection(Spec):
    """``[train.ema]``: ``decay_t = min(decay_max, 1 - (1 + t)^(-power))`` (HDiT paper, Table 7: 0.9999)."""

    decay_max: float = Field(0.9999, gt=0, lt=1, description="largest EMA decay")
    power: float = Field(0.75, gt=0, description="warm-up power (2/3 is the other common value)")


class TrainSection(Spec):
    """``[train]``: optimisation and bookkeeping (optimiser defaults: HDiT paper, Sec. 5.1 and Table 7)."""

    steps: int = Field(100_000, ge=1, description="optimizer steps to train for")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    lr_schedule: Literal["constant", "linear_warmup", "cosine"] = Field(
        "constant", description="learning-rate schedule after the warm-up (the paper: constant)"
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(1e-2, ge=0, description="decoupled weight decay, on Linear weights only")
    mapping_lr_scale: float = Field(1 / 3, gt=0, description="lr factor of the mapping network and adaptive norms")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up (0: none)")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip (0: no clipping)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step; data.batch_size is split into them")
    ema: EMASection = Field(default_factory=EMASection, description="EMA of the weights")
    class_dropout: float = Field(0.1, ge=0, lt=1, description="probability of dropping the class (for CFG)")
    checkpoint_every: int = Field(10_000, ge=1, description="steps between checkpoints")
    keep_last: int = Field(3, ge=0, description="checkpoints kept on disk (0: keep all)")
    sample_every: int = Field(5_000, ge=0, description="steps between sample grids (0: never)")
    log_every: int = Field(100, ge=1, description="steps between log lines")
    seed: int = Field(0, description="seed of initialisation, data order, noise and augmentation")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (saves memory)")
    max_bad_steps: int = Field(
        10, ge=1, description="consecutive steps with a non-finite loss or gradient before the run stops"
    )
    init_from: str | None = Field(
        None, description="start from these weights (a run directory, checkpoint, pretrained folder or Hub id "
        "owner/name) with a fresh optimizer at step 0; ignored when the run directory has checkpoints (resume wins); "
        "\"\" = none",
    )
    init_allow: tuple[Literal["classes", "resolution", "grow"], ...] = Field(
        (), description="differences from init_from's model to adapt instead of refusing: classes (class rows "
        "re-initialised, the no-class row kept), resolution (learned position tables resized), grow (extra outer "
        "levels start fresh)",
    )
    init_weights: Literal["ema", "raw"] = Field(
        "ema", description="which of init_from's weights start the model and its EMA (ema: when it has them)"
    )
    trackers: tuple[Component(TRACKER), ...] = Field(  # type: ignore[valid-type]
        default_factory=lambda: (TRACKER.validate("jsonl"),),
        description='experiment trackers rank 0 logs metrics and sample grids to: names (["jsonl", "tensorboard"]) '
        "or [[train.trackers]] tables with their options; [] logs nothing",
    )

    @field_validator("init_from")
    @classmethod
    def _empty_init_from_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None  # --set train.init_from="" turns it off

    @field_validator("trackers")
    @classmethod
    def _each_tracker_once(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        names = [t.type for t in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tracker {twice[0]!r} is listed {names.count(twice[0])} times; list each tracker once "
                             "(one table holds all of its options)")
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"each AdamW beta must be in [0, 1), got {list(value)}; the paper uses [0.9, 0.95]")
        return value


class SampleSection(Spec):
    """``[sample]``: how images are drawn (during training and by ``hourglass sample``)."""

    sampler: Component(SAMPLER) = Field(  # type: ignore[valid-type]
        default_factory=lambda: SAMPLER.validate("dpmpp_3m_sde"), description="ODE/SDE sampler"
    )
    schedule: Component(SCHEDULE) = Field(  # type: ignore[valid-type]
        default_factory=lambda: SCHEDULE.validate("karras"), description="sigma schedule (sigma_min, sigma_max)"
    )
    steps: int = Field(50, ge=1, description="denoiser evaluations per image (per guidance branch)")
    cfg_scale: float = Field(1.0, ge=0, description="classifier-free guidance w; 1 = no guidance")
    n: int = Field(64, ge=1, description="images to generate")
    batch_size: int = Field(64, ge=1, description="images per sampling batch")
    seed: int = Field(0, description="seed of the initial noise and the SDE noise")


_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


class RuntimeSection(Spec):
    """``[runtime]``: where and how to run; never changes the weights or the maths."""

    device: str = Field(
        "auto", description="auto | cpu | cuda | cuda:N | xpu | xpu:N | mps (auto: the first present of cuda, xpu, "
        "mps, cpu); the recipe may name a device this machine lacks, the run then says which it has",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast dtype (auto: bfloat16 on CUDA and XPU, float32 on CPU and MPS)"
    )
    compile: bool = Field(False, description="torch.compile the model")
    backends: dict[str, str] = Field(
        default_factory=dict,
        description="backend per attention kernel, e.g. {neighborhood = \"natten\"}; every attention kind "
        "computed by that kernel (plugin kinds included) uses it; unlisted kernels use auto",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            from hourglass.devices import available_devices

            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N, xpu, xpu:N, mps; this machine "
                             f"has {', '.join(available_devices())}")
        return value

    @field_validator("backends")
    @classmethod
    def _backends(cls, value: dict[str, str]) -> dict[str, str]:
        from hourglass.backends import check_backend_choice

        problems = []
        for kernel, name in value.items():
            reason = check_backend_choice(kernel, name)
            if reason is not None:
                problems.append(Problem(kernel, reason, "use a listed name, or remove the line for auto"))
        raise_problems(problems)
        return value


def _sigma_data_of(spec: Any) -> float | None:
    value = spec.model_dump().get("sigma_data")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def class_problems(model_classes: int, data_classes: int, dataset: str) -> list[Problem]:
    """The one rule between the model's and the data's classes, at path ``model.num_classes``.

    Args:
        model_classes: ``model.num_classes`` (0: unconditional).
        data_classes: the dataset's classes (0: unlabelled).
        dataset: the dataset's type, for the message.
    """
    if model_classes and not data_classes:
        return [Problem("model.num_classes", f"the model has {model_classes} classes but data.dataset ({dataset}) "
                        "is unlabelled", "set model.num_classes = 0 or use labelled data", model_classes)]
    if data_classes and model_classes and model_classes != data_classes:
        return [Problem("model.num_classes", f"{model_classes} does not match the {data_classes} classes of "
                        f"data.dataset ({dataset})", f"set model.num_classes = {data_classes}", model_classes)]
    return []


def channel_problems(model_channels: int, data_channels: int, cond_channels: int = 0) -> list[Problem]:
    """The one rule between the model's input channels and the data's, at path ``model.in_channels``
    (``model_channels`` without the ``cond_channels`` a ``[conditioning]`` image takes)."""
    if model_channels != data_channels:
        plus = f" plus the {cond_channels} of the condition image" if cond_channels else ""
        return [Problem("model.in_channels", f"{model_channels + cond_channels} does not match the data's "
                        f"{data_channels} channels{plus}", f"set model.in_channels = {data_channels + cond_channels} "
                        "or change data.dataset.channels", model_channels + cond_channels)]
    return []


def vae_channel_problems(
    model_channels: int | None = None, latent_channels: int | None = None, vae: str = "vae",
    data_channels: int | None = None, image_channels: int | None = None, dataset: Any = None,
) -> list[Problem]:
    """The rules between a VAE and the model and data: the model takes the VAE's latents, the VAE the data's images.

    At path ``model.in_channels`` (model vs latent channels) and ``data.dataset.channels`` (or
    ``data.dataset`` when its spec has no ``channels``: data vs the VAE's image channels); a value
    given as ``None`` is not checked.

    Args:
        model_channels: ``model.in_channels``.
        latent_channels: the VAE's latent channels (declared, or of the loaded VAE).
        vae: the VAE's type, for the message.
        data_channels: the dataset's image channels.
        image_channels: the channels of the images the VAE encodes.
        dataset: the dataset's spec (for its type and whether it has a ``channels`` option).
    """
    problems = []
    if model_channels is not None and latent_channels is not None and model_channels != latent_channels:
        problems.append(Problem(
            "model.in_channels", f"{model_channels} does not match the {latent_channels} latent channels of "
            f"the VAE ({vae}): with a [vae], the model works on its latents", f"set model.in_channels = "
            f"{latent_channels}", model_channels))
    if data_channels is not None and image_channels is not None and data_channels != image_channels:
        name = getattr(dataset, "type", "the dataset")
        has_option = dataset is not None and "channels" in type(dataset).model_fields
        problems.append(Problem(
            "data.dataset.channels" if has_option else "data.dataset",
            f"the data ({name}) has {data_channels}-channel images, but the VAE ({vae}) encodes "
            f"{image_channels}-channel ones", f"set data.dataset.channels = {image_channels}" if has_option
            else f"use {image_channels}-channel data"))
    return problems


def cross_field_problems(
    model: Any = None, diffusion: Any = None, data: Any = None, train: Any = None, sample: Any = None,
    vae: Any = None, eval: Any = None, conditioning: Any = None,  # noqa: A002 - the section's name
) -> list[Problem]:
    """Rules that span sections, with absolute recipe paths; sections given as None are skipped.

    Checked: model classes and channels vs what the dataset declares (:meth:`classes_of`,
    :meth:`channels_of` of its contract; unknown until loading is checked by the trainer with the
    same rules); with a ``vae``, the model's channels vs the VAE's declared latent channels and the
    data's channels vs the images the VAE encodes (:func:`vae_channel_problems`; unknown until the
    VAE is loaded is checked by the trainer and the pipeline); augmentation needs a model that
    embeds ``aug_cond``, guidance needs classes, the batch splits into ``grad_accum`` micro-batches,
    one ``sigma_data``, the denoiser drives the
    model's time input and reads its output channels (:func:`denoiser_problems`), a density that
    draws timesteps has a denoiser with timesteps; ``[eval]`` guidance needs classes, and its default
    reference (the training data) must hold images, not precomputed latents; conditioning's rules
    (:func:`~hourglass.recipe.conditioning.conditioning_problems`: ``mapping_cond`` widths, condition
    images), the model's input channels then counting the condition image's.
    """
    from hourglass.recipe.conditioning import cond_image_channels, conditioning_problems

    problems: list[Problem] = conditioning_problems(model, data, conditioning, eval)
    extra_in = cond_image_channels(conditioning)
    if eval is not None:
        if model is not None and eval.cfg_scale not in (None, 1.0) and not model.num_classes:
            problems.append(Problem("eval.cfg_scale", f"{eval.cfg_scale} needs a class-conditional model "
                                    "(model.num_classes > 0)", "set eval.cfg_scale = 1.0 or leave it unset"))
        if data is not None and eval.reference is None and DATASET.get(data.dataset.type).holds_latents:
            problems.append(Problem("eval.reference", f"unset, so the training data, but data.dataset "
                                    f"({data.dataset.type}) holds latents, not images",
                                    "set eval.reference to a folder of images or a dataset table"))
    vae_cls = VAE.get(vae.type) if vae is not None else None
    if vae_cls is not None and extra_in:
        problems.append(Problem("conditioning.image_channels", "a condition image is concatenated in pixel space, "
                                "which a latent model ([vae]) cannot take", "remove [conditioning] or [vae]"))
    if model is not None and vae_cls is not None:
        problems += vae_channel_problems(model.in_channels, vae_cls.latent_channels_of(vae), vae.type)
    if model is not None and data is not None:
        dataset = DATASET.get(data.dataset.type)
        data_classes = dataset.classes_of(data.dataset)
        if data_classes is not None:
            problems += class_problems(model.num_classes, data_classes, data.dataset.type)
        data_channels = dataset.channels_of(data.dataset)
        if data_channels is not None and (vae_cls is None or dataset.holds_latents):
            problems += channel_problems(model.in_channels - extra_in, data_channels, extra_in)
        if data.augment.p > 0 and not model.embeds_aug:
            problems.append(Problem(
                "data.augment.p", f"{data.augment.p} augments the data, but this {model.type} model does not embed "
                "aug_cond, so the augmentations would leak into its samples",
                "set data.augment.p = 0, or use a model whose conditioning embeds aug_cond (e.g. an hdit mapping, "
                "or augment = true where the model has it)",
            ))
    if data is not None and vae_cls is not None and not DATASET.get(data.dataset.type).holds_latents:
        problems += vae_channel_problems(
            data_channels=DATASET.get(data.dataset.type).channels_of(data.dataset),
            image_channels=vae_cls.image_channels_of(vae), vae=vae.type, dataset=data.dataset)
    guided = model is not None and (model.num_classes or model.mapping_cond_dim > getattr(conditioning, "mapping_extra", 0))
    if model is not None and sample is not None and sample.cfg_scale != 1.0 and not guided:
        problems.append(Problem("sample.cfg_scale", f"{sample.cfg_scale} needs a class- or mapping_cond-conditional "
                                "model (model.num_classes > 0, or data vectors)", "set sample.cfg_scale = 1.0"))
    if data is not None and train is not None and data.batch_size % train.grad_accum:
        problems.append(Problem(
            "data.batch_size", f"{data.batch_size} does not split into train.grad_accum = {train.grad_accum} equal "
            "micro-batches", f"use a multiple of {train.grad_accum}",
        ))
    if model is not None and diffusion is not None:
        problems += denoiser_problems(model, diffusion, extra_in)
    if diffusion is not None:
        density = SIGMA_DENSITY.get(diffusion.sigma_density.type)
        denoiser = DENOISER.get(diffusion.denoiser.type)
        if density.draws_timesteps and not denoiser.has_timesteps:
            problems.append(Problem(
                "diffusion.sigma_density.type", f"{diffusion.sigma_density.type!r} draws the timesteps of the "
                f"denoiser, but the {diffusion.denoiser.type!r} denoiser has none",
                "use a denoiser with timesteps (diffusion.denoiser.type = \"ddpm\") or another sigma_density "
                "(e.g. \"cosine_interpolated\")",
            ))
        sd = _sigma_data_of(diffusion.denoiser)
        for name in ("weighting", "sigma_density"):
            other = _sigma_data_of(getattr(diffusion, name))
            if sd is not None and other is not None and other != sd:
                problems.append(Problem(f"diffusion.{name}.sigma_data", f"{other} differs from "
                                        f"diffusion.denoiser.sigma_data {sd}", f"use the same value ({sd})"))
    return problems


def denoiser_problems(model: Any, diffusion: Any, cond_channels: int = 0) -> list[Problem]:
    """The rules between the model and the denoiser, with absolute recipe paths.

    The denoiser must drive the model's time input (:func:`hourglass.models.base.time_input_of`:
    noise levels, or DDPM timesteps, which only denoisers declaring ``"timestep"`` among their
    ``time_inputs`` pass), and read its output: as many channels as the image has, or more where the
    denoiser ``drops_extra_channels`` (DiT's learned-sigma channels under the ``ddpm`` denoiser); the
    image's channels are the input's less the ``cond_channels`` of a ``[conditioning]`` image.
    """
    from hourglass.models.base import time_input_of

    problems: list[Problem] = []
    kind = diffusion.denoiser.type
    denoiser = DENOISER.get(kind)
    time_input = time_input_of(model)
    if time_input not in denoiser.time_inputs:
        problems.append(Problem(
            "diffusion.denoiser.type", f"{kind!r} passes the model noise levels, but this {model.type} model takes "
            f"{'DDPM timesteps' if time_input == 'timestep' else time_input} (time_input = {time_input!r})",
            "use the ddpm denoiser (diffusion.denoiser = {type = \"ddpm\", ...}) for official DiT/U-ViT weights, or "
            "set the model's time_input = \"log_sigma\" (model.mapping.time_input for a DiT)",
        ))
    c_in = getattr(model, "in_channels", None)
    c_out = getattr(model, "resolved_out_channels", c_in)
    c_in = c_in - cond_channels if isinstance(c_in, int) else c_in
    if isinstance(c_in, int) and c_in > 0 and isinstance(c_out, int) and c_out != c_in:  # else: the channel rule
        if c_out < c_in:
            problems.append(Problem("model.out_channels", f"{c_out} is fewer than the {c_in} input channels: the "
                                    "denoiser needs a prediction for every image channel", f"set it to {c_in}", c_out))
        elif not denoiser.drops_extra_channels:
            problems.append(Problem(
                "model.out_channels", f"{c_out} output channels for {c_in} input channels: the {kind!r} denoiser "
                "reads exactly one output channel per image channel",
                f"set model.out_channels = {c_in}; extra channels (DiT's learned sigma) are read only by the ddpm "
                "denoiser, which ignores them", c_out,
            ))
    return problems


def availability_problems(data: DataSection, vae: Any = None, trackers: Any = ()) -> list[Problem]:
    """Whether the data of ``data.dataset`` (and the VAE's files, and the trackers' packages) can be
    read here, at paths under ``data.dataset`` (and ``vae``, ``train.trackers``).

    Asks the dataset's contract (:meth:`~hourglass.data.DatasetComponent.availability_problems`:
    e.g. an image folder that is missing or holds no image) and, when ``vae`` (a recipe's ``[vae]``
    spec) is given, the VAE's (:meth:`~hourglass.vae.Autoencoder.availability_problems`: e.g. a
    missing folder, or diffusers not installed), and each of ``trackers``' (a recipe's ``train.trackers``:
    :meth:`~hourglass.trackers.Tracker.availability_problems`, e.g. wandb not installed). Not part of recipe validation (a checkpoint's
    recipe must load on a machine without the data): ``hourglass validate`` and ``hourglass train``
    run it, and :class:`~hourglass.train.Trainer` before it builds anything.
    """
    dataset = DATASET.get(data.dataset.type)
    problems = [p.under("data.dataset") for p in dataset.availability_problems(data.dataset)]
    if vae is not None:
        problems += [p.under("vae") for p in VAE.get(vae.type).availability_problems(vae)]
    for i, spec in enumerate(trackers):  # e.g. the wandb package missing
        problems += [p.under(f"train.trackers[{i}]") for p in TRACKER.get(spec.type).availability_problems(spec)]
    return problems


class Recipe(Spec):
    """A whole experiment: ``model``, ``diffusion``, ``data``, ``train``, ``sample``, ``runtime``
    (and, for latent diffusion, ``vae``).

    Build one with :func:`~hourglass.recipe.load_recipe` (a TOML file),
    :func:`~hourglass.recipe.loads_recipe` (TOML text) or ``Recipe.model_validate(data)``; write it
    back with :meth:`to_toml`.
    """

    model: Component(MODEL) = Field(..., description="backbone spec: a registered model type and its components")  # type: ignore[valid-type]
    vae: Component(VAE) | None = Field(  # type: ignore[valid-type]
        None, description="latent diffusion: the autoencoder whose latents the model learns (model.input_size is "
        "the latent grid, model.in_channels the latent channels; samples are decoded); unset: the model works on pixels",
    )
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection, description="diffusion recipe")
    data: DataSection = Field(..., description="training data")
    train: TrainSection = Field(default_factory=TrainSection, description="optimisation and bookkeeping")
    sample: SampleSection = Field(default_factory=SampleSection, description="sampling settings")
    runtime: RuntimeSection = Field(default_factory=RuntimeSection, description="device, dtype, backends")
    eval: EvalSection | None = Field(
        None, description="evaluation during training: metrics (fid, kid, fd_dinov2, is, pr) every eval.every steps, "
        "best checkpoint kept; unset: none",
    )
    conditioning: ConditioningSection | None = Field(
        None, description="an image condition concatenated to the model's input (super-resolution, "
        "image-to-image); unset: none",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _expand_preset(cls, value: Any) -> Any:
        if isinstance(value, dict) and "preset" in value:
            from hourglass.models.factory import get_preset

            rest = {k: v for k, v in value.items() if k != "preset"}
            if not isinstance(value["preset"], str):
                raise ValueError(f"preset: must be a preset name (a string), got {value['preset']!r}")
            return {**get_preset(value["preset"]), **rest}
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        raise_problems(cross_field_problems(
            model=self.model, diffusion=self.diffusion, data=self.data, train=self.train, sample=self.sample,
            vae=self.vae, eval=self.eval, conditioning=self.conditioning,
        ))
        return self

    def to_toml(self, header: str = "") -> str:
        """This recipe, fully resolved, as TOML text (see :func:`~hourglass.recipe.dump_recipe`)."""
        from hourglass.recipe.io import dump_recipe

        return dump_recipe(self, header=header)

    def to_data(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers, strings) that validates back to an equal recipe."""
        from hourglass.recipe.io import plain_data

        return plain_data(self.model_dump(mode="python"))


#: section name -> its spec class (``model`` validates through the MODEL registry)
SECTIONS: dict[str, Any] = {
    "diffusion": DiffusionSection, "data": DataSection, "train": TrainSection,
    "sample": SampleSection, "runtime": RuntimeSection,
}
