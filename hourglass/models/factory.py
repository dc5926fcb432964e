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

__all__ = ["create_model", "list_models", "get_preset", "register_preset", "model_spec"]

_ALIASES = {"in_chans": "in_channels", "img_size": "input_size"}
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


PRESET.subscribe(lambda name, _: _timm.register(name), lambda name, _: _timm.unregister(name))


def register_preset(name: str, model_type: str, config: dict[str, Any], *, override: bool = False) -> None:
    """Register a named model configuration (a spec as plain data); timm sees it too.

    Args:
        name: the preset name, e.g. ``"hdit_l"``.
        model_type: the registered model family, e.g. ``"hdit"``.
        config: the spec's fields as plain data.
        override: replace an existing preset of that name.

    Raises:
        hourglass.registry.RegistryError: the name is taken by another configuration (and
            ``override`` is false).
    """
    PRESET.add(name, {"type": model_type, **config}, override=override)


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


def create_model(name: str | dict | BaseModel, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build a model from a preset name (``"hdit_l"``), a spec dict or a spec.

    Args:
        name: preset name, ``{"type": "hdit", ...}`` or a spec instance.
        pretrained: unsupported (no weights are distributed); must be False.
        **overrides: spec fields to change, e.g. ``num_classes=10, input_size=64``.
    Returns:
        The ``nn.Module``; ``model.spec`` holds its validated spec.
    """
    if pretrained:
        raise ValueError(
            "hourglass ships no pretrained weights; load a checkpoint with hourglass.train.load_checkpoint "
            "or convert one with `hourglass convert k-diffusion`"
        )
    for key in _TIMM_ONLY:
        overrides.pop(key, None)
    return MODEL.build(model_spec(name, **overrides))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted preset names matching a shell-style ``pattern`` (e.g. ``"hdit*"``)."""
    return [n for n in PRESET.names() if fnmatch.fnmatch(n, pattern)]
