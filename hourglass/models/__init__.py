"""Model assemblies (HDiT and the baselines) and their presets; importing this registers them."""

from hourglass.models import hdit
from hourglass.models.factory import create_model, get_preset, list_models, model_spec, register_preset
from hourglass.models.hdit import HDiT, HDiTSpec, LevelSpec

for _name, _config in hdit.PRESETS.items():
    register_preset(_name, "hdit", _config)
from hourglass.models import dit, uvit  # noqa: E402,F401 - register MODEL dit/uvit, MAPPING dit and their presets

__all__ = ["HDiT", "HDiTSpec", "LevelSpec", "create_model", "get_preset", "list_models", "model_spec", "register_preset"]
