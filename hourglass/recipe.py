"""Recipes: a whole experiment as one typed TOML file (docs/concepts.md, "Recipes").

A recipe has six sections, each a frozen pydantic spec that refuses unknown keys:

* ``[model]``: a registered model type and its component graph (``[[model.levels]]`` tables,
  ``mapping``, ``pos_emb``, ``ffn``, ...), validated by the MODEL registry, so plugin components
  need no schema change. ``preset = "hdit_s"`` starts from a preset; the other keys override it.
* ``[diffusion]``: denoiser (with ``sigma_data``), loss weighting, training sigma density.
* ``[data]``: the dataset component, batch size, loader workers, Karras augmentation.
* ``[train]``: AdamW, EMA, clipping, class dropout, checkpoint/sample/log cadence, seed.
* ``[sample]``: sampler, sigma schedule, steps, guidance scale, how many images.
* ``[runtime]``: device, dtype, ``torch.compile``, attention backends (not the model's identity).

:func:`load_recipe` reports *every* problem at once as a :class:`RecipeError`, each with its
recipe path, the value found and how to fix it; :func:`apply_overrides` applies ``--set``
overrides before validation; :func:`dump_recipe` writes the resolved recipe back as TOML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from hourglass import _recipe_toml as toml
from hourglass._recipe_errors import NO_VALUE, Problem, RecipeError, problems_from_validation
from hourglass._recipe_overrides import OverrideError, apply_override, format_path, parse_path
from hourglass._recipe_overrides import apply_overrides as _apply_overrides
from hourglass.data.augment import KarrasAugmentSpec
from hourglass.registry import DATASET, DENOISER, MODEL, SAMPLER, SCHEDULE, SIGMA_DENSITY, WEIGHTING
from hourglass.spec import Component, Spec

__all__ = [
    "Recipe",
    "DiffusionSection",
    "DataSection",
    "TrainSection",
    "EMASection",
    "SampleSection",
    "RuntimeSection",
    "Problem",
    "RecipeError",
    "load_recipe",
    "loads_recipe",
    "recipe_from_data",
    "dump_recipe",
    "apply_overrides",
    "build_model",
    "resolve_device",
    "resolve_dtype",
    "dataset_num_classes",
    "cross_field_problems",
    "plain_data",
    "apply_override",
    "format_path",
    "parse_path",
]


class DiffusionSection(Spec):
    """``[diffusion]``: preconditioning, loss weighting and training noise levels.

    The defaults are HDiT's (Crowson et al. 2024, arXiv 2401.11605; Sec. 3.1, App. C and Table 7).
    """

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
    """``[data]``: what to train on. Images are loaded at ``model.input_size``."""

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


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class RuntimeSection(Spec):
    """``[runtime]``: where and how to run; never changes the weights or the maths."""

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (auto: cuda if available, else cpu)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    compile: bool = Field(False, description="torch.compile the model")
    backends: dict[str, str] = Field(
        default_factory=dict,
        description="attention backend per kind, e.g. {neighborhood = \"natten\"}; unlisted kinds use auto",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N; use e.g. \"cuda:0\"")
        return value

    @field_validator("backends")
    @classmethod
    def _backends(cls, value: dict[str, str]) -> dict[str, str]:
        from hourglass.backends import BACKENDS

        problems = []
        for kind, name in value.items():
            if kind not in BACKENDS:
                problems.append(f"backends.{kind}: no attention kind {kind!r} has backends; known kinds: "
                                f"{', '.join(sorted(BACKENDS))}")
            elif name != "auto" and name not in BACKENDS[kind]:
                problems.append(f"backends.{kind}: unknown {kind} backend {name!r}; use auto or one of "
                                f"{', '.join(BACKENDS[kind])}")
        if problems:
            raise ValueError("; ".join(problems))
        return value


def _sigma_data_of(spec: Any) -> float | None:
    value = getattr(spec, "sigma_data", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def dataset_num_classes(spec: Any) -> int | None:
    """Classes a dataset spec implies, when the spec knows (``None``: not known before loading).

    Asks the spec's ``num_classes`` (a field or property), then the dataset class's
    ``num_classes_of(spec)``; datasets that only learn their classes from files return ``None``.
    """
    value = getattr(spec, "num_classes", None)
    if value is None:
        cls = DATASET.get(spec.type) if spec.type in DATASET else None
        finder = getattr(cls, "num_classes_of", None)
        value = finder(spec) if callable(finder) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def cross_field_problems(
    model: Any = None, diffusion: Any = None, data: Any = None, train: Any = None, sample: Any = None
) -> list[str]:
    """Rules that span sections, as ``"path: problem; fix"`` strings; sections given as None are skipped.

    Checked: model classes vs the dataset's (when its spec knows them), model vs data channels,
    guidance needs classes, the batch splits into ``grad_accum`` micro-batches, one ``sigma_data``.
    """
    problems = []
    model_classes = getattr(model, "num_classes", None)
    if model is not None and data is not None:
        data_classes = dataset_num_classes(data.dataset)
        if isinstance(model_classes, int) and data_classes is not None:
            if model_classes and not data_classes:
                problems.append(
                    f"model.num_classes: the model has {model_classes} classes but data.dataset "
                    f"({data.dataset.type}) is unlabelled; set model.num_classes = 0 or use labelled data"
                )
            elif data_classes and model_classes and model_classes != data_classes:
                problems.append(
                    f"model.num_classes: {model_classes} does not match the {data_classes} classes of data.dataset "
                    f"({data.dataset.type}); set model.num_classes = {data_classes}"
                )
        model_channels = getattr(model, "in_channels", None)
        data_channels = getattr(data.dataset, "channels", None)
        if isinstance(model_channels, int) and isinstance(data_channels, int) and model_channels != data_channels:
            problems.append(
                f"model.in_channels: {model_channels} does not match data.dataset.channels {data_channels}; "
                f"set model.in_channels = {data_channels} or data.dataset.channels = {model_channels}"
            )
    if model is not None and sample is not None and sample.cfg_scale != 1.0 and not model_classes:
        problems.append(
            f"sample.cfg_scale: {sample.cfg_scale} needs a class-conditional model (model.num_classes > 0); "
            "set sample.cfg_scale = 1.0"
        )
    if data is not None and train is not None and data.batch_size % train.grad_accum:
        problems.append(
            f"data.batch_size: {data.batch_size} does not split into train.grad_accum = "
            f"{train.grad_accum} equal micro-batches; use a multiple of {train.grad_accum}"
        )
    if diffusion is not None:
        sd = _sigma_data_of(diffusion.denoiser)
        for name in ("weighting", "sigma_density"):
            other = _sigma_data_of(getattr(diffusion, name))
            if sd is not None and other is not None and other != sd:
                problems.append(
                    f"diffusion.{name}.sigma_data: {other} differs from diffusion.denoiser.sigma_data {sd}; "
                    f"use the same value ({sd})"
                )
    return problems


class Recipe(Spec):
    """A whole experiment: ``model``, ``diffusion``, ``data``, ``train``, ``sample``, ``runtime``.

    Build one with :func:`load_recipe` (a TOML file), :func:`loads_recipe` (TOML text) or
    ``Recipe.model_validate(data)``; write it back with :meth:`to_toml`.
    """

    model: Component(MODEL) = Field(..., description="backbone spec: a registered model type and its components")  # type: ignore[valid-type]
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection, description="diffusion recipe")
    data: DataSection = Field(..., description="training data")
    train: TrainSection = Field(default_factory=TrainSection, description="optimisation and bookkeeping")
    sample: SampleSection = Field(default_factory=SampleSection, description="sampling settings")
    runtime: RuntimeSection = Field(default_factory=RuntimeSection, description="device, dtype, backends")

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
        problems = cross_field_problems(
            model=self.model, diffusion=self.diffusion, data=self.data, train=self.train, sample=self.sample
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_toml(self, header: str = "") -> str:
        """This recipe, fully resolved, as TOML text (see :func:`dump_recipe`)."""
        return dump_recipe(self, header=header)

    def to_data(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers, strings) that validates back to an equal recipe."""
        return plain_data(self.model_dump(mode="python"))


def plain_data(value: Any) -> Any:
    """Dicts/lists/scalars only (tuples -> lists, ``None`` entries dropped): what TOML can hold."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0] != "type")  # a component's type first
        return {str(k): plain_data(v) for k, v in items if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    """Write ``recipe`` (defaults and overrides resolved) as TOML that loads to an equal recipe.

    Args:
        recipe: a validated :class:`Recipe`.
        header: comment lines put at the top.
    Returns:
        TOML text.
    """
    return toml.dumps(recipe.to_data(), header=header)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """Apply ``--set`` style overrides to plain recipe data (a copy is returned).

    Args:
        data: recipe data (e.g. from ``tomllib``) or a :class:`Recipe` (its resolved data is used).
        overrides: ``"train.lr=1e-4"``, ``"model.levels[0].depth=3"``, ``"data.dataset.root=/x"``
            strings (values read as TOML, else as plain strings) or ``(path, value)`` pairs.
    Raises:
        RecipeError: listing every malformed override.
    """
    if isinstance(data, Recipe):
        data = data.to_data()
    problems = []
    out = _apply_overrides(data, ())
    for item in overrides:
        try:
            out = _apply_overrides(out, (item,))
        except OverrideError as exc:
            problems.append(Problem(exc.path, NO_VALUE if exc.value is None else exc.value, exc.message))
    if problems:
        raise RecipeError(problems, source="--set overrides")
    return out


def recipe_from_data(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]] = (), source: str | None = None
) -> Recipe:
    """Validate plain recipe data (after ``overrides``) into a :class:`Recipe`.

    Raises:
        RecipeError: with every problem found, each naming its recipe path.
    """
    if not isinstance(data, dict):
        raise RecipeError([Problem("", NO_VALUE, f"a recipe must be a table, got {type(data).__name__}")], source)
    try:
        data = apply_overrides(data, overrides)
    except RecipeError as exc:
        raise RecipeError(exc.problems, source) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, data, Recipe)
    problems += _partial_cross_problems(data, {p.path for p in problems})
    raise RecipeError(problems, source)


def _partial_cross_problems(data: dict[str, Any], known: set[str]) -> list[Problem]:
    """Cross-section rules among the sections that did validate (so one run reports them too)."""
    sections: dict[str, Any] = {}
    for name, field in Recipe.model_fields.items():
        value = data.get(name)
        try:
            if name == "model":
                sections[name] = MODEL.validate(value) if value is not None else None
            elif value is not None or not field.is_required():
                sections[name] = field.annotation.model_validate(value if value is not None else {})
        except (ValidationError, ValueError, TypeError):
            sections[name] = None
    texts = cross_field_problems(**{k: sections.get(k) for k in ("model", "diffusion", "data", "train", "sample")})
    if not texts:
        return []
    error = ValueError("; ".join(texts))
    found = problems_from_validation(
        ValidationError.from_exception_data(
            "Recipe", [{"type": "value_error", "loc": (), "input": data, "ctx": {"error": error}}]
        ),
        data,
        Recipe,
    )
    return [p for p in found if p.path not in known]


def loads_recipe(text: str, overrides: Iterable[str | tuple[str, Any]] = (), source: str = "<string>") -> Recipe:
    """Parse TOML ``text`` and validate it (after ``overrides``) into a :class:`Recipe`.

    Raises:
        RecipeError: for TOML syntax errors (with line and column) and every schema problem.
    """
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        where = toml.toml_location(exc)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        if where is not None:
            line, col = where
            lines = text.splitlines()
            shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            message = f"TOML syntax error at line {line}, column {col}: {reason}"
            if shown:
                message += f" (the line reads: {shown!r})"
        else:
            message = f"TOML syntax error: {reason}"
        message += "; fix the syntax there (strings need quotes, tables [name], arrays [a, b])"
        raise RecipeError([Problem("", NO_VALUE, message)], source) from None
    return recipe_from_data(data, overrides, source)


def load_recipe(path: str | Path, overrides: Iterable[str | tuple[str, Any]] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: a ``.toml`` recipe.
        overrides: dotted overrides, e.g. ``["train.lr=1e-4", "model.levels[0].depth=3"]``.
    Returns:
        The validated, frozen :class:`Recipe`.
    Raises:
        RecipeError: listing every problem (missing file, TOML syntax, schema, cross-field rules).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RecipeError(
            [Problem("", NO_VALUE, f"cannot read the recipe file: {reason}; check the path")], str(path)
        ) from None
    return loads_recipe(text, overrides, source=str(path))


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when CUDA is available, else ``"cpu"``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``"auto"`` -> ``"bfloat16"`` on CUDA, ``"float32"`` elsewhere; other values unchanged."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_device(device).startswith("cuda") else "float32"


def build_model(recipe: Recipe, device: str = "meta") -> Any:
    """Build the recipe's backbone (on ``device``; ``"meta"`` allocates no memory for weights).

    The runtime's explicit attention backends (``[runtime.backends]``) are set on the attention
    modules of each kind; ``auto`` kinds are left for the backend resolver to pick at run time.

    Args:
        recipe: a validated :class:`Recipe`.
        device: ``"meta"``, ``"cpu"``, ``"cuda"``, ...; ``"auto"`` follows :func:`resolve_device`.
    Returns:
        The ``nn.Module``; ``model.spec`` is ``recipe.model``.
    """
    import torch

    with torch.device(resolve_device(device)):
        model = MODEL.build(recipe.model)
    explicit = {k: v for k, v in recipe.runtime.backends.items() if v != "auto"}
    if explicit:
        for module in model.modules():
            kind = getattr(getattr(module, "spec", None), "type", None)
            if kind in explicit and hasattr(module, "backend"):
                module.backend = explicit[kind]
    return model
