"""Every scalar of every shipped recipe replaced by values of the wrong type or range.

``tests/test_recipe_fuzz.py`` mutates random places with random values; this sweep is exhaustive over
the leaves instead: each one, in every section, gets each wrong value. A recipe must then either be
refused with a :class:`RecipeError` whose problems name that leaf (or a field that depends on it), or
be accepted only where the value is legitimately of the field's kind.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hourglass.recipe import RecipeError, recipe_from_data, toml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {str(p.relative_to(ROOT / "recipes")): toml.loads(p.read_text())
           for p in sorted((ROOT / "recipes").glob("**/*.toml"))}
#: no shipped recipe has an [eval] section (its default extractor needs Inception weights): sweep one here
RECIPES["quickstart.toml+eval"] = {**RECIPES["quickstart.toml"], "eval": {
    "every": 500, "n": 64, "metrics": ["fid", "kid"], "best": "fid", "reference": "data/reference",
    "n_reference": 256, "extractor": "random-projection", "sampler": "euler", "steps": 10, "cfg_scale": 2.0,
    "seed": 1, "batch_size": 32}}

#: wrong kinds for a number: text, NaN, infinities, containers, a table, booleans where numbers are due
WRONG_FOR_NUMBER = ["abc", math.nan, math.inf, -math.inf, [1, 2], {"x": 1}]
#: wrong kinds for a name: numbers, containers, an unknown name, a dotted import path
WRONG_FOR_TEXT = [3, 1.5, [1], {"x": 1}, "no_such_thing_xyz", "os.system"]


#: fields whose value is free text (a folder; init_from and vae.path: a path or a Hub id), where "os.system" is
#: just a name
FREE_TEXT = {"root", "init_from", "reference", "path"}


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, v in enumerate(node):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix, node


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _cases():
    for name, data in RECIPES.items():
        for path, value in _leaves(data):
            if path[-1] == "preset":
                continue
            if isinstance(value, bool):
                wrong = ["yes", 2, [True]]
            elif isinstance(value, (int, float)):
                wrong = WRONG_FOR_NUMBER
            elif isinstance(value, str):
                wrong = WRONG_FOR_TEXT
            else:
                continue
            for bad in wrong:
                yield name, path, bad


CASES = list(_cases())


def _check(name: str, path: tuple, bad) -> str:
    """Validate the mutated recipe; returns "refused" or "accepted" (accepted only when legitimate)."""
    data = copy.deepcopy(RECIPES[name])
    _set(data, path, bad)
    dotted = _dotted(path)
    try:
        recipe = recipe_from_data(data, source=name)
    except RecipeError as exc:
        paths = [p.path for p in exc.problems]
        assert exc.problems, f"{name}: {dotted}={bad!r}: RecipeError without problems"
        # the problem is reported at the mutated leaf, a field next to it, or its section, or a cross-section
        # rule reported at the other field names it (sample.cfg_scale: "needs ... model.num_classes > 0")
        parent = dotted.rsplit(".", 1)[0].split("[")[0]
        assert any(p and (dotted.startswith(p) or p.startswith(parent) or dotted.split(".")[0] == p.split(".")[0])
                   for p in paths) or any(dotted in pr.message for pr in exc.problems), (
            f"{name}: {dotted}={bad!r} reported at {paths}")
        text = str(exc)
        assert "Traceback" not in text and len(text) < 20000
        return "refused"
    except Exception as exc:  # anything else is a crash, not a clear error
        raise AssertionError(f"{name}: {dotted}={bad!r} raised {type(exc).__name__}: {exc}") from exc
    # accepted: no NaN/inf and no dotted import path may slip through silently
    if isinstance(bad, float) and math.isnan(bad):
        raise AssertionError(f"{name}: {dotted}=NaN was accepted")
    if bad == "os.system" and path[-1] not in FREE_TEXT:
        where = recipe.to_data()
        node = where
        for part in path:
            node = node[part] if isinstance(node, (dict, list)) else None
            if node is None:
                break
        assert node != "os.system", f"{name}: {dotted}='os.system' accepted as a component"
    return "accepted"


def test_sweep_every_leaf_of_every_recipe_with_wrong_values():
    outcomes = {"refused": 0, "accepted": 0}
    failures = []
    for name, path, bad in CASES:
        try:
            outcomes[_check(name, path, bad)] += 1
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    print(f"FAULTS recipes: {len(CASES)} mutations over {len(RECIPES)} recipes: {outcomes}")
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures[:30])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CASES) if CASES else st.nothing(),
       st.one_of(st.integers(min_value=-(2**63), max_value=2**63), st.floats(), st.text(max_size=8)))
def test_random_wrong_values_in_any_section(case, value):
    name, path, _ = case
    _check(name, path, value)


@pytest.mark.parametrize("component", ["os.system", "subprocess.Popen", "builtins.eval", "__import__"])
def test_dotted_import_paths_are_refused(component):
    data = copy.deepcopy(RECIPES["quickstart.toml"])
    data["diffusion"]["weighting"] = component
    with pytest.raises(RecipeError) as info:
        recipe_from_data(data)
    assert "diffusion.weighting" in str(info.value)
    data = copy.deepcopy(RECIPES["quickstart.toml"])
    data["model"]["levels"][0]["attention"]["type"] = component
    with pytest.raises(RecipeError) as info:
        recipe_from_data(data)
    assert "model.levels[0].attention" in str(info.value)
