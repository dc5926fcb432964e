"""Property test: randomly mutated recipes give a clean RecipeError or a recipe that round-trips."""

from __future__ import annotations

import copy
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.recipe import RecipeError, loads_recipe, recipe_from_data, toml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {p.name: toml.loads(p.read_text()) for p in sorted((ROOT / "recipes").glob("**/*.toml"))}

_scalars = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, 1, 2, 3, 7, 8, 64, -1, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["global", "neighborhood", "shifted_window", "none", "hdit", "shapes", "karras", "auto", "cuda:0"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["type", "depth", "width", "d_head", "kernel_size", "p", "x"]), inner, max_size=3),
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    """Every (container, key) address inside nested dicts/lists."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(data, path):
    node = data
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated_recipes(draw):
    name = draw(st.sampled_from(sorted(RECIPES)))
    data = copy.deepcopy(RECIPES[name])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent, key = _parent(data, path), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "rename", "add"]))
        if op == "replace":
            parent[key] = draw(_values)
        elif op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(key)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(_values)
        elif op == "add" and isinstance(parent, list):
            parent.append(draw(_values))
    return name, data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_recipes())
def test_mutated_recipes_fail_cleanly_or_round_trip(case):
    name, data = case
    try:
        recipe = recipe_from_data(data, source=name)
    except RecipeError as exc:
        assert exc.problems, "a RecipeError must carry at least one problem"
        for problem in exc.problems:
            assert isinstance(problem.path, str) and problem.message
        str(exc)  # the message renders
        return
    assert loads_recipe(recipe.to_toml()) == recipe
