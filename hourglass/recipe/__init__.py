"""Recipes: a whole experiment as one typed TOML file.

Modules: :mod:`~hourglass.recipe.schema` (the sections and cross-section rules),
:mod:`~hourglass.recipe.io` (load, override, dump, build), :mod:`~hourglass.recipe.problems`
(structured problems with recipe paths), :mod:`~hourglass.recipe.overrides` (``--set``) and
:mod:`~hourglass.recipe.toml` (TOML reading and writing).
"""

from hourglass.recipe.io import (
    apply_overrides,
    build_model,
    dump_recipe,
    load_recipe,
    loads_recipe,
    plain_data,
    recipe_from_data,
)
from hourglass.recipe.overrides import apply_override, format_path, parse_path
from hourglass.recipe.problems import RecipeError
from hourglass.recipe.schema import (
    EVAL_METRICS,
    DataSection,
    DiffusionSection,
    EMASection,
    EvalSection,
    Recipe,
    RuntimeSection,
    SampleSection,
    TrainSection,
    availability_problems,
    channel_problems,
    class_problems,
    cross_field_problems,
    vae_channel_problems,
)
from hourglass.spec import NO_VALUE, Problem

__all__ = [
    "NO_VALUE",
    "DataSection",
    "DiffusionSection",
    "EMASection",
    "Problem",
    "Recipe",
    "RecipeError",
    "RuntimeSection",
    "SampleSection",
    "EVAL_METRICS",
    "EvalSection",
    "TrainSection",
    "apply_override",
    "apply_overrides",
    "availability_problems",
    "build_model",
    "channel_problems",
    "class_problems",
    "cross_field_problems",
    "dump_recipe",
    "format_path",
    "load_recipe",
    "loads_recipe",
    "parse_path",
    "plain_data",
    "recipe_from_data",
    "vae_channel_problems",
]
