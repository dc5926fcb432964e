"""Model presets: ``create_model`` / ``list_models`` and the timm bridge.

Presets live in the :data:`~hourglass.registry.PRESET` registry like every other registration, so
a plugin's presets are rolled back with it; the timm bridge follows the registry (a preset that
is removed leaves ``timm.list_models`` too).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pydantic import BaseModel
from torch import nn

from hourglass.models import _timm
from hourglass.registry import MODEL, PRESET

__all__ = ["create_model", "list_models", "get_preset", "register_preset", "model_spec", "pretrained_source"]

_ALIASES = {"in_chans": "in_channels", "img_size": "input_size"}
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


#: preset name -> where its pretrained weights are (a Hub id or a folder); none ship with hourglass today
_PRETRAINED: dict[str, str] = {}


def _forget(name: str) -> None:
    _timm.unregister(name)
    _PRETRAINED.pop(name, None)


PRESET.subscribe(lambda name, _: _timm.register(name), lambda name, _: _forget(name))


def register_preset(
    name: str, model_type: str, config: dict[str, Any], *, override: bool = False, pretrained: str | None = None
) -> None:
    """Register a named model configuration (a spec as plain data); timm sees it too.

    Args:
        name: the preset name, e.g. ``"hdit_l"``.
        model_type: the registered model family, e.g. ``"hdit"``.
        config: the spec's fields as plain data.
        override: replace an existing preset of that name.
        pretrained: where the preset's pretrained weights are (a Hub id such as ``"owner/name"``, or a
            pretrained folder): what ``create_model(name, pretrained=True)`` loads.

    Raises:
        hourglass.registry.RegistryError: the name is taken by another configuration (and
            ``override`` is false).
    """
    PRESET.add(name, {"type": model_type, **config}, override=override)
    if pretrained:
        _PRETRAINED[name] = pretrained
    else:
        _PRETRAINED.pop(name, None)


def pretrained_source(name: str) -> str | None:
    """The pretrained weights preset ``name`` declares (a Hub id or a folder), or None."""
    return _PRETRAINED.get(name) if name in PRESET else None


def get_preset(name: str) -> dict[str, Any]:
    """The plain-data spec of preset ``name``.

    Raises:
        RegistryError: listing the known presets and the closest match.
    """
    return dict(PRESET.get(name))


def model_spec(name_or_spec: str | dict | BaseModel, **overrides: Any) -> BaseModel:
    """Validate a preset name, a dict or a spec (plus field overrides) into a model spec."""
    if isinstance(name_or_spec, str):
        data = get_preset(name_or_spec)
    elif isinstance(name_or_spec, BaseModel):
        data = name_or_spec.model_dump()
    else:
        data = dict(name_or_spec)
    for key, value in overrides.items():
        data[_ALIASES.get(key, key)] = value
    return MODEL.validate(data)


def create_model(name: str | dict | BaseModel, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build a model from a preset name (``"hdit_l"``), a spec dict or a spec.

    Args:
        name: preset name, ``{"type": "hdit", ...}`` or a spec instance.
        pretrained: False: fresh weights. True: the weights the preset declares (``register_preset(...,
            pretrained=...)``; no preset of hourglass declares any yet, which is an error naming what to
            pass instead). A string: a pretrained folder, a Hub id (``"owner/name"``, ``"hf-hub:owner/name"``),
            a run directory or a checkpoint, loaded with :func:`hourglass.from_pretrained` (EMA weights
            when present) into the model built from ``name`` and ``overrides``: every weight must fit.
        **overrides: spec fields to change, e.g. ``num_classes=10, input_size=64``.
    Returns:
        The ``nn.Module``; ``model.spec`` holds its validated spec.

    Raises:
        ValueError: ``pretrained=True`` for a model that declares no pretrained weights.
        hourglass.train.CheckpointError: the pretrained source cannot be read, or its weights do not
            fit the model (the message names the parameters).
    """
    cache_dir = overrides.pop("cache_dir", None)
    for key in _TIMM_ONLY:
        overrides.pop(key, None)
    if pretrained is True:
        declared = pretrained_source(name) if isinstance(name, str) else None
        if declared is None:
            what = f"preset {name!r}" if isinstance(name, str) else "a model given as a spec"
            raise ValueError(
                f"{what} declares no pretrained weights (hourglass ships none yet); pass pretrained="
                "'path/to/folder' or 'owner/name' (a Hugging Face Hub id), use hourglass.from_pretrained(...), or "
                "convert a checkpoint with `hourglass convert k-diffusion`"
            )
        pretrained = declared
    model = MODEL.build(model_spec(name, **overrides))
    if pretrained:
        from hourglass.hub import load_weights_into

        load_weights_into(model, pretrained, cache_dir=cache_dir)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Sorted preset names matching a shell-style ``pattern`` (e.g. ``"hdit*"``)."""
    return [n for n in PRESET.names() if fnmatch.fnmatch(n, pattern)]
