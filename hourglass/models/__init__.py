"""Model assemblies (HDiT and the baselines), the backbone contract and the presets.

Importing this registers the ``hdit``, ``dit`` and ``uvit`` families and their presets.
"""

from hourglass.models import dit, hdit, uvit
from hourglass.models.base import AttentionSite, Backbone, BackboneSpec, Stage
from hourglass.models.factory import create_model, get_preset, list_models, model_spec, register_preset
from hourglass.models.hdit import HDiT, HDiTSpec, LevelSpec, grow

__all__ = [
    "AttentionSite",
    "Backbone",
    "BackboneSpec",
    "HDiT",
    "HDiTSpec",
    "LevelSpec",
    "Stage",
    "create_model",
    "dit",
    "get_preset",
    "grow",
    "hdit",
    "list_models",
    "model_spec",
    "register_preset",
    "uvit",
]
