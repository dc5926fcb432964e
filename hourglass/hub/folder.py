"""Writing and reading pretrained folders, and loading their weights into models.

:func:`save_pretrained_folder` is the one writer (``save_pretrained``, ``hourglass export`` and the
converters use it); :func:`from_pretrained` builds a model from a folder, a Hub id, a run directory or
a checkpoint; :func:`load_weights_into` loads weights into a model that is already built.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hourglass.hub.card import model_card
from hourglass.hub.layout import (
    _WEIGHT_KINDS,
    _WEIGHT_WORDS,
    CARD_FILE,
    CLASSES_FILE,
    CONFIG_FILE,
    EMA_FILE,
    FOLDER_FILES,
    FORMAT_VERSION,
    PRETRAINED_FORMAT,
    RECIPE_FILE,
    SAMPLES_FILE,
    WEIGHTS_FILE,
    PretrainedError,
    _read_config,
)
from hourglass.hub.remote import _download, parse_hub_id, resolve_source
from hourglass.train.checkpoint import CheckpointData

__all__ = [
    "save_pretrained_folder", "read_pretrained_folder", "select_weights", "from_pretrained", "fit_problems",
    "load_weights_into",
]


def _state(weights: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    # private contiguous CPU copies: safetensors refuses tensors that share storage
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _spec_data(model: Any, spec: Any) -> dict[str, Any]:
    from pydantic import BaseModel

    from hourglass.recipe import plain_data

    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None:
        raise PretrainedError("save_pretrained_folder needs the model's spec: pass a built backbone (it has .spec) "
                              "or spec=... with a state dict")
    if isinstance(spec, BaseModel):
        spec = spec.model_dump(mode="python")
    from hourglass.registry import MODEL

    return plain_data(MODEL.validate(spec).model_dump(mode="python"))


def _recipe_text(recipe: Any) -> str:
    if recipe is None or recipe == "":
        return ""
    if isinstance(recipe, str):
        return recipe
    if isinstance(recipe, os.PathLike):
        return Path(recipe).read_text(encoding="utf-8")
    return recipe.to_toml()


def save_pretrained_folder(
    out_dir: str | os.PathLike,
    *,
    model: nn.Module | Mapping[str, Tensor],
    spec: Any = None,
    ema: nn.Module | Mapping[str, Tensor] | None = None,
    weights: str = "raw",
    recipe: Any = None,
    class_names: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    card: str | bool | None = None,
    card_data: Mapping[str, Any] | None = None,
    source: str = "hourglass",
    sample_grid: str | os.PathLike | None = None,
    repo_id: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a pretrained folder (the one writer: ``save_pretrained``, ``hourglass export`` and the converters use it).

    Args:
        out_dir: the folder (created if missing).
        model: the backbone, or its state dict (then pass ``spec``); its weights go to ``model.safetensors``.
        spec: the model spec (a spec or its plain data); default ``model.spec``.
        ema: the EMA weights (a module or a state dict), written to ``ema.safetensors``; None: no EMA copy.
        weights: what ``model`` holds: ``"raw"`` (trained weights), ``"ema"`` (e.g. a converted
            checkpoint's EMA weights, the folder then holding no ``ema``) or ``"unknown"``.
        recipe: a :class:`~hourglass.recipe.Recipe`, TOML text or a path to one (``recipe.toml``); None: none.
        class_names: one name per class id (``classes.json``); None: none.
        metadata: JSON-able facts kept in ``config.json`` under ``"metadata"`` and shown in the card
            (e.g. ``{"step": 400000, "converted_from": "facebook/DiT-XL-2-256"}``; ``"metrics"``, a list
            of ``metrics.jsonl`` records, is shown as a table).
        card: None: a generated model card (``README.md``); a string: Markdown inserted into the
            generated card under the summary (where the weights come from, their licence, ...);
            False: no ``README.md``.
        card_data: extra YAML front matter of the card (``license``, ``base_model``, ``datasets``,
            more ``tags``), merged over the generated one.
        source: where the weights come from: ``"hourglass"`` (trained here) or the converted format
            (``"k-diffusion"``, ``"dit"``, ...); loaders report it.
        sample_grid: an image to copy in as ``samples.png`` (shown in the card).
        repo_id: the Hub id the folder is meant for (``"owner/name"``): the card's title and examples use it.
        overwrite: False refuses to write into a folder that already holds any of these files. True
            replaces them and removes those this call does not write (a stale ``ema.safetensors`` or
            ``classes.json`` of an earlier save would otherwise be read back with the new weights).

    Returns:
        The folder.

    Raises:
        PretrainedError: a bad argument, an existing folder without ``overwrite``, or a write that failed.
    """
    import safetensors.torch

    from hourglass import __version__
    from hourglass.train.checkpoint import WEIGHTS_FORMAT, _atomic_write, _plugin_components

    out = Path(out_dir)
    if weights not in _WEIGHT_KINDS:
        raise PretrainedError(f"weights={weights!r}: use one of {', '.join(_WEIGHT_KINDS)}")
    if ema is not None and weights == "ema":
        raise PretrainedError("weights='ema' says model holds the EMA weights, but ema=... was given too; pass the "
                              "raw weights as model (weights='raw') and the EMA ones as ema")
    if out.exists() and not out.is_dir():
        raise PretrainedError(f"{out} is a file; pass a folder (it is created if missing)")
    if not overwrite:
        existing = [n for n in FOLDER_FILES if (out / n).exists()]
        if existing:
            raise PretrainedError(f"{out} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) "
                                  "or choose another folder")
    spec_data = _spec_data(model, spec)
    num_classes = int(spec_data.get("num_classes") or 0)
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise PretrainedError(f"{len(class_names)} class names for a model with {num_classes} classes; pass one "
                                  "name per class id, or none")
    recipe_toml = _recipe_text(recipe)
    meta = json.loads(json.dumps(dict(metadata or {}), default=str))
    sets = {WEIGHTS_FILE: (_state(model), weights)}
    if ema is not None:
        sets[EMA_FILE] = (_state(ema), "ema")
    plugins = _plugin_components(spec_data)
    files: list[str] = list(sets)
    if recipe_toml:
        files.append(RECIPE_FILE)
    if class_names is not None:
        files.append(CLASSES_FILE)
    if sample_grid is not None:
        if not Path(sample_grid).is_file():
            raise PretrainedError(f"sample grid {sample_grid} does not exist; pass an existing image, or sample_grid=None")
        files.append(SAMPLES_FILE)
    if card is not False:
        files.append(CARD_FILE)
    config = {
        "library_name": "hourglass",
        "format": PRETRAINED_FORMAT,
        "format_version": FORMAT_VERSION,
        "hourglass_version": __version__,
        "model_type": spec_data.get("type"),
        "model": spec_data,
        "weights": {name: kind for name, (_, kind) in sets.items()},
        "source": source,
        "files": [CONFIG_FILE, *files],
        "plugins": plugins,
        "metadata": meta,
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, (tensors, kind) in sets.items():
            header = {"format": WEIGHTS_FORMAT, "source": source, "weights": kind, "recipe": recipe_toml,
                      "model_spec": json.dumps(spec_data), "plugins": json.dumps(plugins)}
            if class_names is not None:
                header["class_names"] = json.dumps(class_names)
            _atomic_write(out / name, safetensors.torch.save(tensors, metadata=header))
        if recipe_toml:
            _atomic_write(out / RECIPE_FILE, recipe_toml.encode("utf-8"))
        if class_names is not None:
            _atomic_write(out / CLASSES_FILE, (json.dumps(class_names, ensure_ascii=False) + "\n").encode("utf-8"))
        if sample_grid is not None and Path(sample_grid).resolve() != (out / SAMPLES_FILE).resolve():
            shutil.copyfile(sample_grid, out / SAMPLES_FILE)
        if card is not False:
            text = model_card(config, recipe_toml=recipe_toml, class_names=class_names, extra=card or None,
                              card_data=card_data, name=repo_id or out.resolve().name, repo_id=repo_id)
            _atomic_write(out / CARD_FILE, text.encode("utf-8"))
        for stale in set(FOLDER_FILES) - set(config["files"]):
            (out / stale).unlink(missing_ok=True)
        # last: a folder is recognised by its config.json, so an interrupted save is not read as a complete one
        _atomic_write(out / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise PretrainedError(f"cannot write into {out}: {exc.strerror or exc}; choose a writable folder") from None
    return out



def read_pretrained_folder(folder: str | os.PathLike, *, tensors: bool = True) -> CheckpointData:
    """Read a pretrained folder as a :class:`~hourglass.train.CheckpointData`.

    With both weight files, ``model`` holds the raw weights and ``ema`` the EMA ones; with one, it is
    in ``model`` and ``extra["weights"]`` says which it is (``"ema"``, ``"raw"`` or ``"unknown"``).
    ``format`` is :data:`PRETRAINED_FORMAT`; ``extra["source"]`` names where the weights come from,
    ``extra["metadata"]`` holds the folder's metadata; ``step`` is its ``metadata["step"]`` (else 0).

    Args:
        folder: the folder.
        tensors: False reads ``config.json`` (and the recipe and class names) only.

    Raises:
        PretrainedError: not a pretrained folder, a newer format, or no weight file present.
    """
    from hourglass.train.checkpoint import _names, read_checkpoint

    folder = Path(folder)
    config = _read_config(folder)
    if config is None:
        raise PretrainedError(f"{folder} is not an hourglass pretrained folder (no {CONFIG_FILE} of format "
                              f"{PRETRAINED_FORMAT!r}); pass a folder written by save_pretrained or `hourglass export`")
    if int(config.get("format_version", 1)) > FORMAT_VERSION:
        raise PretrainedError(f"{folder / CONFIG_FILE} has format version {config['format_version']}; this hourglass "
                              f"reads version {FORMAT_VERSION}: upgrade hourglass")
    kinds = dict(config.get("weights") or {WEIGHTS_FILE: "unknown"})
    present = [name for name in (WEIGHTS_FILE, EMA_FILE) if name in kinds and (folder / name).is_file()]
    if not present:
        listed = ", ".join(kinds) or "none"
        raise PretrainedError(f"{folder} holds no weights: its {CONFIG_FILE} lists {listed}, and none is there; copy "
                              "the folder again (or download it again)")
    recipe_toml = ""
    if (folder / RECIPE_FILE).is_file():
        recipe_toml = (folder / RECIPE_FILE).read_text(encoding="utf-8")
    class_names = None
    if (folder / CLASSES_FILE).is_file():
        class_names = _names((folder / CLASSES_FILE).read_text(encoding="utf-8"), str(folder / CLASSES_FILE))
    meta = config.get("metadata") or {}
    step = meta.get("step", 0)
    step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0
    sets = {}
    for name in present:
        sets[name] = read_checkpoint(folder / name).model if tensors else {}
    if len(present) == 2:
        model, ema, which = sets[WEIGHTS_FILE], sets[EMA_FILE], kinds.get(WEIGHTS_FILE, "raw")
    else:
        model, ema, which = sets[present[0]], {}, kinds.get(present[0], "unknown")
    return CheckpointData(
        step=step, model=model, ema=ema, recipe_toml=recipe_toml, model_spec=dict(config.get("model") or {}),
        extra={"source": str(config.get("source") or ""), "weights": which if which in _WEIGHT_KINDS else "unknown",
               "metadata": meta, "files": present},
        path=folder, format=PRETRAINED_FORMAT, class_names=class_names, plugins=dict(config.get("plugins") or {}),
    )



def select_weights(data: CheckpointData, ema: bool | None) -> tuple[dict[str, Tensor], str]:
    """The weights of ``data`` to load and which they are (``"ema"``, ``"raw"`` or ``"unknown"``).

    ``ema=True`` or None: the EMA weights when present, else the only ones; ``ema=False``: the raw ones
    (an error when the source holds only EMA weights).

    Raises:
        PretrainedError: ``ema=False`` for a source that holds only EMA weights.
    """
    from hourglass.train.checkpoint import FORMAT

    if data.ema:  # two sets: a training checkpoint, or a folder with model.safetensors and ema.safetensors
        return (data.model, "raw") if ema is False else (data.ema, "ema")
    which = "raw" if data.format == FORMAT else str(data.extra.get("weights") or "unknown")
    if ema is False and which == "ema":
        raise PretrainedError(f"{data.path} holds only EMA weights, not the raw ones; load it with ema=True")
    return data.model, which if which in _WEIGHT_KINDS else "unknown"


def from_pretrained(
    source: str | os.PathLike,
    *,
    ema: bool = True,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: Any = None,
    report: Callable[[str], None] | None = None,
) -> nn.Module:
    """Load a model from a pretrained folder, a Hub id, a run directory or a checkpoint.

    Args:
        source: a pretrained folder (or one of its ``.safetensors`` files), ``"hf-hub:owner/name"``,
            ``"owner/name"`` (a Hub id when no local path has that name; ``"owner/name@revision"``), a
            run directory (its newest valid checkpoint), a ``step_*.safetensors`` checkpoint or a folder
            written by ``hourglass convert``.
        ema: True (default): the EMA weights when the source has them, else its only weights;
            False: the raw trained weights.
        revision: a Hub branch, tag or commit.
        device: where to put the model.
        cache_dir: the Hub cache (default ``HF_HUB_CACHE``).
        report: receives notes (corrupt checkpoints skipped in a run directory, a recipe that does not load).

    Returns:
        The backbone (:class:`~hourglass.models.Backbone`) in eval mode, with gradients enabled (call
        ``.train()`` to fine-tune it). ``model.spec`` is its spec.

    Raises:
        hourglass.train.CheckpointError: nothing usable at ``source`` (a :class:`PretrainedError` for Hub
            and folder problems), a component that is not installed, weights that do not fit.
    """
    from hourglass.devices import resolve_device
    from hourglass.train.checkpoint import build_checkpoint_model, checkpoint_recipe, resolve_checkpoint

    path = resolve_source(source, revision=revision, ema=ema, cache_dir=cache_dir)
    data = resolve_checkpoint(path, report=report)
    recipe, spec = checkpoint_recipe(data, report=report)
    weights, _ = select_weights(data, ema)
    model = build_checkpoint_model(data, weights, recipe=recipe, spec=spec, device=resolve_device(device))
    return model.requires_grad_(True)


def fit_problems(target: Mapping[str, Tensor], weights: Mapping[str, Tensor], limit: int = 6) -> list[str]:
    """Why ``weights`` do not load into a model with state dict ``target`` (empty when they do).

    One entry each for missing names, unexpected names and shape mismatches, naming up to ``limit`` of them.
    """

    def names(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

    missing = [k for k in target if k not in weights]
    unexpected = [k for k in weights if k not in target]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(target[k].shape)}" for k in target
              if k in weights and tuple(weights[k].shape) != tuple(target[k].shape)]
    out = []
    if missing:
        out.append(f"{len(missing)} missing ({names(missing)})")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected ({names(unexpected)})")
    if shapes:
        out.append(f"{len(shapes)} of another shape (saved vs model: {names(shapes)})")
    return out


def _weights_of_file(path: Path, ema: bool) -> dict[str, Tensor]:
    """The weights in a ``.safetensors`` file: an hourglass checkpoint or weights file, or a plain state dict."""
    import safetensors.torch

    from hourglass._files import SAFETENSORS, file_kind
    from hourglass.train.checkpoint import FORMAT, WEIGHTS_FORMAT, _read_header_only, read_checkpoint

    if not path.is_file():
        raise PretrainedError(f"weights file {path} does not exist; check the path (a pretrained folder's model.safetensors "
                              "or ema.safetensors, or a checkpoint)")
    kind = file_kind(path)
    if kind != SAFETENSORS:
        raise PretrainedError(f"{path} is {kind or 'not a safetensors file'}; hourglass loads weights from safetensors "
                              "files only (it never unpickles): save it with safetensors.torch.save_file, or convert a k-diffusion "
                              "checkpoint with `hourglass convert k-diffusion`")
    if _read_header_only(path).get("format") in (FORMAT, WEIGHTS_FORMAT):
        return select_weights(read_checkpoint(path), ema)[0]
    try:
        return dict(safetensors.torch.load_file(str(path)))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise PretrainedError(f"cannot read {path} as safetensors ({exc}): the file is damaged or incomplete; copy or "
                              "download it again") from None


def load_weights_into(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Tensor],
    *,
    ema: bool = True,
    revision: str | None = None,
    cache_dir: Any = None,
    filename: str | None = None,
) -> str:
    """Load pretrained weights into an already built ``model`` (``create_model(..., pretrained=...)``, timm).

    Args:
        model: the built model.
        source: a state dict, a ``.safetensors`` file (an hourglass weights file or checkpoint, or a plain
            state dict), a pretrained folder, run directory or checkpoint, or a Hub id.
        ema: take the EMA weights when the source has them (else its raw ones).
        revision: a Hub branch, tag or commit.
        cache_dir: the Hub cache.
        filename: with a Hub id: the file to load (timm's ``hf_hub_filename``) instead of the folder's choice.

    Returns:
        Where the weights came from, in words.

    Raises:
        PretrainedError: the source cannot be read, or its weights do not fit ``model`` (names the parameters).
    """
    from hourglass.train.checkpoint import resolve_checkpoint

    if isinstance(source, Mapping):
        weights, where = dict(source), "the given state dict"
    else:
        hub = parse_hub_id(source)
        if hub is not None and filename:
            repo_id, at = hub
            path = _download(repo_id, filename, revision or at, cache_dir)
            weights, where = _weights_of_file(path, ema), f"{repo_id}/{filename}"
        elif hub is None and Path(source).is_file():
            weights, where = _weights_of_file(Path(source), ema), str(source)
        else:
            local = resolve_source(source, revision=revision, ema=ema, cache_dir=cache_dir)
            data = resolve_checkpoint(local, report=None)
            weights, which = select_weights(data, ema)
            where = f"{source} ({_WEIGHT_WORDS[which]})"
    problems = fit_problems(model.state_dict(), weights)
    if problems:
        raise PretrainedError(
            f"the weights of {where} do not fit this {type(model).__name__}: {'; '.join(problems)}. Build the model "
            "they were saved with (hourglass.from_pretrained reads its spec from the folder), or warm-start a different "
            "model with [train] init_from and init_allow"
        )
    model.load_state_dict(weights, strict=True)
    return where

