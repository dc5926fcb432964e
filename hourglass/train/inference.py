"""Loading checkpoints for inference: finding one, its recipe, its class names, and the model.

Everything here reads safetensors files only (nothing is unpickled) and reports a user's mistake
(a path that holds no checkpoint, a model that needs a plugin that is not installed, weights that
do not fit) as one :class:`~hourglass.train.checkpoint.CheckpointError` naming the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hourglass.train.checkpoint import (
    _PASS,
    CLASSES_FILE,
    WEIGHTS_FILE,
    CheckpointData,
    CheckpointError,
    _names,
    find_latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)

__all__ = ["resolve_checkpoint", "read_class_names", "load_checkpoint", "checkpoint_recipe", "build_checkpoint_model"]


def resolve_checkpoint(
    path_or_run_dir: str | os.PathLike, *, report: Callable[[str], None] | None = print, tensors: bool = True
) -> CheckpointData:
    """Read a checkpoint file, or the newest valid checkpoint of a run directory.

    Args:
        path_or_run_dir: a ``.safetensors`` checkpoint or weights file, a run directory (holding
            ``checkpoints/``), a pretrained folder (:mod:`hourglass.hub`: ``save_pretrained``,
            ``hourglass export``, ``hourglass convert``), a folder of older conversions (``recipe.toml``
            and ``model.safetensors``), or a Hub id (``"owner/name"``, ``"hf-hub:owner/name@revision"``).
        report: receives one message per skipped (corrupt) file of a run directory.
        tensors: False reads metadata only (see :func:`read_checkpoint`); a run directory's newest
            file is then taken without checking its tensors.

    Returns:
        The checkpoint's content.

    Raises:
        CheckpointError: nothing usable at that path; the message says what is there instead (a
            recipe, an image, a torch file, a folder without checkpoints, ...) and what to pass.
    """
    from hourglass.hub import is_pretrained_folder, parse_hub_id, read_pretrained_folder, resolve_source

    path = Path(path_or_run_dir)
    if not path.exists() and parse_hub_id(path_or_run_dir) is not None:  # "owner/name": a Hub id
        path = resolve_source(path_or_run_dir, ema=None, tensors=tensors)
    if path.is_dir() and not list_checkpoints(path) and is_pretrained_folder(path):
        return read_pretrained_folder(path, tensors=tensors)  # save_pretrained, `hourglass export`, `hourglass convert`
    if path.is_dir() and not list_checkpoints(path) and (path / WEIGHTS_FILE).is_file():
        return read_checkpoint(path / WEIGHTS_FILE, tensors=tensors)  # a folder written by ``hourglass convert``
    if path.is_dir():
        found = find_latest_checkpoint(path, report=report, tensors=tensors)
        if found is None:
            raise CheckpointError(_no_checkpoint(path))
        return found
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; {_PASS}")
    return read_checkpoint(path, tensors=tensors)


def _no_checkpoint(folder: Path) -> str:
    n = len(list_checkpoints(folder))
    if n:
        return (f"run directory {folder} has no usable checkpoint (all {n} checkpoint file(s) are corrupt); "
                "train again or pass an intact file")
    if folder.name == "checkpoints" and list_checkpoints(folder.parent):
        return (f"{folder} is the checkpoints folder of run directory {folder.parent}: pass {folder.parent} (its "
                "newest valid checkpoint) or one of the step_*.safetensors files")
    if (folder / "recipe.toml").is_file():
        return (f"run directory {folder} has no checkpoint yet (no checkpoints/step_*.safetensors): train it with "
                f"`hourglass train {folder / 'recipe.toml'} --run-dir {folder}`")
    images = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if images:
        return f"{folder} is a folder of images (e.g. {images[0]}), not a run directory; {_PASS}"
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    if files:
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        return f"{folder} is a folder without a run's checkpoints/ but holds {shown}; pass one of those files"
    return (f"{folder} is a folder without checkpoints (no checkpoints/step_*.safetensors, no {WEIGHTS_FILE}); "
            f"{_PASS}")


def read_class_names(run_or_checkpoint: str | os.PathLike | CheckpointData) -> list[str] | None:
    """The class names of a run, in class-id order, or None when it records none.

    Looked up, cheapest first: the metadata ``class_names`` of the checkpoint (for a run directory,
    its newest; only the header is read), the run directory's ``classes.json``, and the dataset
    of the run's recipe when its spec alone names the classes (``shapes``, ``digits``, ``lfw``:
    :meth:`~hourglass.data.DatasetComponent.class_names_of`), so runs written before names were
    recorded have them too.

    Args:
        run_or_checkpoint: a run directory, a checkpoint file (``step_*.safetensors``), a folder
            or file written by ``hourglass convert``, or a :class:`CheckpointData` already read.

    Returns:
        One name per class id, or None (an unconditional model, or data whose classes have no names).

    Raises:
        CheckpointError: the path holds no checkpoint (the message says what it holds instead),
            or its recorded names are malformed.
    """
    if isinstance(run_or_checkpoint, CheckpointData):
        data = run_or_checkpoint
    else:
        path = Path(run_or_checkpoint)
        run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else None
        if run_dir is not None and (run_dir / CLASSES_FILE).is_file():
            names_file = run_dir / CLASSES_FILE
            try:
                text = names_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"cannot read {names_file}: {exc}") from None
            if path.is_dir():
                return _names(text, str(names_file))
        data = resolve_checkpoint(path, report=None, tensors=False)
    if data.class_names is not None:
        return list(data.class_names)
    if data.path is not None and data.path.parent.name == "checkpoints":
        names_file = data.path.parent.parent / CLASSES_FILE
        if names_file.is_file():
            return _names(names_file.read_text(encoding="utf-8"), str(names_file))
    return _names_from_recipe(data.recipe_toml)


def _names_from_recipe(recipe_toml: str) -> list[str] | None:
    """Class names the recipe's dataset spec tells (no data is read), or None."""
    if not recipe_toml:
        return None
    from hourglass.recipe import toml
    from hourglass.registry import DATASET

    try:
        dataset = toml.loads(recipe_toml)["data"]["dataset"]
        spec = DATASET.validate(dataset)
        names = DATASET.get(spec.type).class_names_of(spec)
    except (KeyError, TypeError, ValueError, toml.TOMLDecodeError):  # no data section, or a dataset not installed
        return None
    return list(names) if names else None


def load_checkpoint(
    path_or_run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    report: Callable[[str], None] | None = print,
) -> tuple[torch.nn.Module, torch.nn.Module | None, Any, int]:
    """Load a trained model and its EMA copy for inference (eval mode, no gradients).

    Args:
        path_or_run_dir: a checkpoint file or a run directory (its newest valid checkpoint), or a
            weights file / folder written by ``hourglass convert``.
        device: where to put the models.
        report: receives messages about skipped corrupt files, and a note when the embedded
            recipe does not load here (the model is then rebuilt from the stored model spec).

    Returns:
        ``(model, ema_model, recipe, step)``: the raw and EMA backbones (``ema_model`` is None when
        the checkpoint has no EMA weights; a weights-only file's one set of weights, EMA or not, is
        ``model``, and :func:`resolve_checkpoint` tells which in ``extra["weights"]``; both with the
        recipe's ``[runtime.backends]`` pinned), the run's :class:`hourglass.recipe.Recipe` (None if
        the checkpoint carries none, or it does not load here) and the step it was written at.

    Raises:
        CheckpointError: no usable checkpoint, a model that needs a component not registered here
            (a plugin not installed or disabled: named, with the plugins' state), or weights that
            do not fit the stored model spec.
    """
    data = resolve_checkpoint(path_or_run_dir, report=report)
    recipe, spec = checkpoint_recipe(data, report=report)
    models = [build_checkpoint_model(data, weights, recipe=recipe, spec=spec, device=device) if weights else None
              for weights in (data.model, data.ema)]
    return models[0], models[1], recipe, data.step


def checkpoint_recipe(data: CheckpointData, *, report: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """The recipe and the validated model spec a checkpoint was written with.

    Args:
        data: a checkpoint's content (:func:`read_checkpoint`, :func:`resolve_checkpoint`).
        report: receives a note when the embedded recipe does not load here (the model spec is
            then used alone).

    Returns:
        ``(recipe, model_spec)``: the :class:`hourglass.recipe.Recipe` (None if the checkpoint carries
        none, or when its recipe no longer validates but a model spec is stored) and the model spec.

    Raises:
        CheckpointError: neither a usable recipe nor a model spec; a component that is not
            registered here (named, with the plugins' state); a spec that no longer validates.
    """
    from hourglass.recipe import RecipeError, loads_recipe

    recipe = None
    recipe_error: RecipeError | None = None
    if data.recipe_toml:
        try:
            recipe = loads_recipe(data.recipe_toml, source=f"{data.path} (embedded recipe)")
        except RecipeError as exc:
            if not data.model_spec:
                raise CheckpointError(_unloadable(data, exc)) from None
            recipe_error = exc
    spec = data.model_spec or (recipe.model if recipe is not None else None)
    if not spec:
        raise CheckpointError(f"{data.path} carries neither a model spec nor a recipe; it cannot be rebuilt")
    spec = _validated_model_spec(data, spec)
    if recipe_error is not None and report is not None:  # the model loads, the rest of its recipe does not
        report(f"note: the recipe embedded in {data.path} does not load here, so the run's [sample] and "
               f"[runtime] settings are not used: {' '.join(str(recipe_error).split())}")
    return recipe, spec


def build_checkpoint_model(
    data: CheckpointData, weights: dict[str, Tensor], *, recipe: Any, spec: Any, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Build the model of ``spec`` with ``weights`` (one of ``data.model`` / ``data.ema``) for inference.

    Args:
        data: the checkpoint (named in error messages).
        weights: the state dict to load.
        recipe: its recipe (its ``[runtime.backends]`` are pinned), or None.
        spec: the model spec (:func:`checkpoint_recipe`).
        device: where to put the model.

    Returns:
        The backbone in eval mode without gradients.

    Raises:
        CheckpointError: the model cannot be built here, or the weights do not fit the spec.
    """
    from hourglass.nn.attention import pin_backends
    from hourglass.registry import MODEL

    # Built for real (not on "meta"): non-persistent buffers must be computed, not loaded.
    try:
        with torch.device(device):
            model = MODEL.build(spec)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{data.path}: its model cannot be built here: {' '.join(str(exc).split())}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{data.path}: the weights do not fit the stored model spec ({exc})") from None
    if recipe is not None:
        pin_backends(model, recipe.runtime.backends)
    return model.to(device).eval().requires_grad_(False)


def _missing_message(data: CheckpointData, missing: list[tuple[str, str, str]]) -> str:
    """``PATH needs attention 'dinat' (model.levels[0].attention), not registered here; ...`` with the
    plugin that provided it when the file was written (if recorded) and the plugins' state."""
    from hourglass.registry import plugin_summary

    names = [f"{family} {name!r} ({where})" for where, family, name in missing]
    provided = [data.plugins[f"{family}:{name}"] for _, family, name in missing if f"{family}:{name}" in data.plugins]
    text = f"{data.path} needs {', '.join(names)}, not registered here"
    if provided:
        text += f"; it was written with {', '.join(dict.fromkeys(provided))}: install or enable that plugin"
    else:
        text += "; install or enable the plugin that provides it"
    summary = plugin_summary()
    return text + f" (`hourglass plugins` lists them). {summary or 'No plugins are installed.'}"


def _validated_model_spec(data: CheckpointData, spec: Any) -> Any:
    """The model spec, validated; a missing component (plugin) or a spec that no longer validates
    is a :class:`CheckpointError` of one line."""
    from pydantic import BaseModel, ValidationError

    from hourglass.recipe.problems import missing_components, problems_from_validation
    from hourglass.registry import MODEL, RegistryError

    if isinstance(spec, BaseModel):
        return spec
    missing = [(f"model.{p}" if p else "model", family, name) for p, family, name in missing_components(MODEL, spec)]
    if missing:
        raise CheckpointError(_missing_message(data, missing))
    try:
        return MODEL.validate(spec)
    except ValidationError as exc:
        problems = problems_from_validation(exc, spec, MODEL.spec_class(spec["type"]))
        text = "; ".join(str(p.under("model")) for p in problems)
    except (RegistryError, ValueError, TypeError) as exc:
        text = " ".join(str(exc).split())
    raise CheckpointError(f"{data.path}: its model spec does not validate with this hourglass: {text}")


def _unloadable(data: CheckpointData, exc: Exception) -> str:
    from hourglass.recipe import Recipe, toml
    from hourglass.recipe.problems import missing_components

    try:
        missing = missing_components(Recipe, toml.loads(data.recipe_toml))
    except toml.TOMLDecodeError:
        missing = []
    if missing:
        return _missing_message(data, missing)
    return f"{data.path}: its embedded recipe no longer validates: {' '.join(str(exc).split())}"
