"""Where a pipeline comes from: run directories, checkpoints, pretrained folders, Hub ids, and their class names."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hourglass.pipeline._errors import PipelineError
from hourglass.pipeline.core import Pipeline

__all__ = ["run_dir_of", "load"]

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


def load(
    path: str | os.PathLike,
    *,
    ema: bool | None = True,
    device: str | torch.device = "auto",
    report: Callable[[str], None] | None = None,
    vae: Any = None,
    revision: str | None = None,
) -> Pipeline:
    """Load a trained model for sampling.

    Args:
        path: a run directory (its newest valid checkpoint), a ``step_*.safetensors`` checkpoint, a
            pretrained folder (``save_pretrained``, ``hourglass export``, ``hourglass convert``; or one of
            its ``.safetensors`` files), or a Hugging Face Hub id (``"hf-hub:owner/name"``, or
            ``"owner/name"`` when no local path has that name; see :mod:`hourglass.hub`).
        ema: True: the EMA weights (for a folder holding one set of weights: that set, unless it is
            recorded as the raw one); False: the raw trained weights; None: the EMA weights when the
            source has them, else the ones it has.
        device: ``"auto"`` (see :func:`hourglass.devices.resolve_device`), ``"cpu"``, ``"cuda:N"``,
            ``"xpu:N"``, ``"mps"`` or a ``torch.device``.
        report: receives one message per corrupt checkpoint file skipped in a run directory
            (default: silent).
        vae: for a latent model, the VAE to use instead of the one its recipe's ``[vae]`` names (an
            :class:`hourglass.vae.Autoencoder`, or a spec such as ``{"type": "autoencoder_kl", "path":
            "elsewhere/vae"}``); default: the recipe's, loaded from the folder or Hub cache it names.
        revision: a Hub branch, tag or commit (also ``"owner/name@revision"``).

    Returns:
        The :class:`Pipeline`.

    Raises:
        hourglass.train.CheckpointError: nothing usable at ``path`` (a Hub id that cannot be fetched
            included), or weights that do not fit.
        PipelineError: the requested weights are not in the file, or the VAE cannot be loaded.
    """
    from hourglass.devices import resolve_device
    from hourglass.hub import PRETRAINED_FORMAT, resolve_source
    from hourglass.train.checkpoint import (
        WEIGHTS_FORMAT,
        build_checkpoint_model,
        checkpoint_recipe,
        read_class_names,
        resolve_checkpoint,
    )

    dev = resolve_device(device)
    local = resolve_source(path, revision=revision, ema=ema)
    data = resolve_checkpoint(local, report=report)
    recipe, spec = checkpoint_recipe(data)
    converted_from = ""
    if data.format in (WEIGHTS_FORMAT, PRETRAINED_FORMAT):
        source = data.extra.get("source") or ("another format" if data.format == WEIGHTS_FORMAT else "")
        converted_from = "" if source == "hourglass" else source
    if data.format in (WEIGHTS_FORMAT, PRETRAINED_FORMAT) and not data.ema:  # one set: say what it is, refuse the other
        weights, which = data.model, data.extra.get("weights", "unknown")
        if ema is not None and which == ("raw" if ema else "ema"):
            wanted = "EMA" if ema else "raw (non-EMA)"
            origin = f" converted from {converted_from}" if converted_from else ""
            raise PipelineError(
                f"{data.path} holds only the {'raw' if ema else 'EMA'} weights{origin}, "
                f"not the {wanted} ones; {'pass ema=False (--no-ema)' if ema else 'drop ema=False (--no-ema)'}"
            )
    elif ema or (ema is None and data.ema):
        if not data.ema:
            raise PipelineError(f"{data.path} has no EMA weights; pass ema=False (--no-ema) for the trained weights")
        weights, which = data.ema, "ema"
    else:
        weights, which = data.model, "raw"
    model = build_checkpoint_model(data, weights, recipe=recipe, spec=spec, device=dev)
    return Pipeline(model, recipe=recipe, class_names=read_class_names(data), step=data.step,
                    weights=which, source=local, converted_from=converted_from, vae=vae)
