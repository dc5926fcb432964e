"""Where a pipeline comes from: run directories, checkpoints, converted folders, and their class names."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hourglass.pipeline._errors import PipelineError
from hourglass.pipeline.core import Pipeline

__all__ = ["CLASSES_FILE", "run_dir_of", "read_class_names", "load"]

#: the file of a run directory that lists its class names (a JSON list of strings, one per class id)
CLASSES_FILE = "classes.json"


def run_dir_of(path: str | os.PathLike) -> Path:
    """The run directory (or converted folder) a checkpoint path belongs to.

    A folder is its own; ``<run>/checkpoints/step_*.safetensors`` belongs to ``<run>``; any other file
    (``model.safetensors`` of a converted folder) to its folder.
    """
    path = Path(path)
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return path.parent


def read_class_names(source: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[str] | None:
    """The class names a run recorded, if any: the one place they are read.

    Looked up in order: the checkpoint's safetensors metadata key ``class_names`` (a JSON list), then
    ``classes.json`` (a JSON list of strings) in the run directory (:func:`run_dir_of` of ``source``).
    A malformed entry is skipped with a warning.

    Args:
        source: what was loaded (run directory, checkpoint file or converted folder).
        checkpoint: the checkpoint file actually read (for its metadata).

    Returns:
        One name per class id, or None when the run recorded none.
    """
    candidates: list[tuple[str, Callable[[], Any]]] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        def from_metadata() -> Any:
            from safetensors import safe_open

            with safe_open(str(checkpoint), framework="pt") as f:
                text = (f.metadata() or {}).get("class_names")
            return None if text is None else json.loads(text)

        candidates.append((f"{checkpoint} (metadata class_names)", from_metadata))
    names_file = run_dir_of(source) / CLASSES_FILE
    if names_file.is_file():
        candidates.append((str(names_file), lambda: json.loads(names_file.read_text(encoding="utf-8"))))
    for where, read in candidates:
        try:
            names = read()
        except (OSError, ValueError) as exc:
            warnings.warn(f"ignoring the class names of {where}: {exc}", stacklevel=2)
            continue
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            warnings.warn(f"ignoring the class names of {where}: expected a JSON list of strings", stacklevel=2)
            continue
        return names
    return None


def load(
    path: str | os.PathLike,
    *,
    ema: bool | None = True,
    device: str | torch.device = "auto",
    report: Callable[[str], None] | None = None,
) -> Pipeline:
    """Load a trained model for sampling.

    Args:
        path: a run directory (its newest valid checkpoint), a ``step_*.safetensors`` checkpoint, or a
            folder (or its ``model.safetensors``) written by ``hourglass convert``.
        ema: True: the EMA weights (for a converted folder: its one set of weights, unless they are
            recorded as the raw ones); False: the raw trained weights; None: the EMA weights when the
            file has them, else the ones it has.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:N"`` or a ``torch.device``.
        report: receives one message per corrupt checkpoint file skipped in a run directory
            (default: silent).

    Returns:
        The :class:`Pipeline`.

    Raises:
        hourglass.train.CheckpointError: nothing usable at ``path``, or weights that do not fit.
        PipelineError: the requested weights are not in the file.
    """
    from hourglass.devices import resolve_device
    from hourglass.train.checkpoint import (
        WEIGHTS_FORMAT,
        build_checkpoint_model,
        checkpoint_recipe,
        resolve_checkpoint,
    )

    dev = resolve_device(device)
    data = resolve_checkpoint(path, report=report)
    recipe, spec = checkpoint_recipe(data)
    converted_from = ""
    if data.format == WEIGHTS_FORMAT:  # one set of weights: say what it is, refuse the other
        weights, which = data.model, data.extra.get("weights", "unknown")
        converted_from = data.extra.get("source") or "another format"
        if ema is not None and which == ("raw" if ema else "ema"):
            wanted = "EMA" if ema else "raw (non-EMA)"
            raise PipelineError(
                f"{data.path} holds only the {'raw' if ema else 'EMA'} weights converted from {converted_from}, "
                f"not the {wanted} ones; {'pass ema=False (--no-ema)' if ema else 'drop ema=False (--no-ema)'}"
            )
    elif ema or (ema is None and data.ema):
        if not data.ema:
            raise PipelineError(f"{data.path} has no EMA weights; pass ema=False (--no-ema) for the trained weights")
        weights, which = data.ema, "ema"
    else:
        weights, which = data.model, "raw"
    model = build_checkpoint_model(data, weights, recipe=recipe, spec=spec, device=dev)
    return Pipeline(model, recipe=recipe, class_names=read_class_names(path, data.path), step=data.step,
                    weights=which, source=path, converted_from=converted_from)
