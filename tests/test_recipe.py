"""Recipes: schema, TOML round trip, dotted overrides and the problems users see."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import ValidationError, model_validator

from hourglass.data import DatasetComponent
from hourglass.recipe import (
    Recipe,
    RecipeError,
    apply_overrides,
    build_model,
    dump_recipe,
    load_recipe,
    loads_recipe,
    parse_path,
    recipe_from_data,
    toml,
)
from hourglass.registry import DATASET, RegistryError
from hourglass.spec import Problem, Spec, raise_problems
from tests._tiny import SMALL_RECIPE

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("**/*.toml"))

SMALL = SMALL_RECIPE


def small(**overrides) -> Recipe:
    return loads_recipe(SMALL, [(k.replace("__", "."), v) for k, v in overrides.items()])


def problems_of(text: str, overrides=()) -> list:
    with pytest.raises(RecipeError) as info:
        loads_recipe(text, overrides)
    return info.value.problems


def paths_of(text: str, overrides=()) -> list[str]:
    return [p.path for p in problems_of(text, overrides)]


# -- every shipped recipe -------------------------------------------------------------------------
def test_recipes_exist():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert {"hdit_ffhq1024.toml", "hdit_imagenet256.toml", "hdit_imagenet128.toml", "quickstart.toml"} <= names
    assert len([n for n in names if n.startswith("ablation/")]) == 6


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_validates_builds_and_round_trips(path):
    text = path.read_text()
    assert text.startswith("#"), "every recipe opens with a comment: purpose, command, hardware, expected result"
    head = text.split("\n\n")[0].lower()
    for word in ("purpose", "command", "hardware", "expected"):
        assert word in head, f"{path.name}: the opening comment should say its {word}"
    recipe = load_recipe(path)
    model = build_model(recipe)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.spec == recipe.model
    again = loads_recipe(dump_recipe(recipe))
    assert again == recipe
    text = dump_recipe(again)
    assert dump_recipe(loads_recipe(text)) == text  # the written form is a fixed point


def test_paper_recipes_match_the_presets():
    from hourglass.models import model_spec

    for name in ("hdit_ffhq1024", "hdit_imagenet256", "hdit_imagenet128"):
        assert load_recipe(ROOT / "recipes" / f"{name}.toml").model == model_spec(name)
    hdit = load_recipe(ROOT / "recipes" / "ablation" / "6_soft_min_snr.toml")
    assert hdit.model == model_spec("hdit_imagenet128")


def test_ablation_ladder_changes_one_thing_per_step():
    steps = [load_recipe(p) for p in sorted((ROOT / "recipes" / "ablation").glob("*.toml"))]
    data = [s.to_data() for s in steps]
    changed = []
    for a, b in zip(data, data[1:], strict=False):
        diff = {(sec, k) for sec in a for k in set(a[sec]) | set(b[sec]) if a[sec].get(k) != b[sec].get(k)}
        changed.append(diff)
    assert changed[0] == {("model", "levels")}  # global -> swin on the outer level
    assert changed[1] == {("model", "levels")}  # swin -> neighborhood
    assert ("model", "ffn") in changed[2]  # GELU MLP -> GEGLU (and d_ff 4x -> 3x)
    assert changed[3] == {("model", "pos_emb")}
    assert changed[4] == {("diffusion", "weighting")}
    assert steps[0].model.levels[0].attention.type == "global"
    assert steps[1].model.levels[0].attention.type == "shifted_window"
    assert steps[2].model.levels[0].attention.type == "neighborhood"
    assert steps[3].model.ffn.type == "geglu" and steps[2].model.ffn.type == "gelu_mlp"


# -- defaults and round trip ----------------------------------------------------------------------
def test_defaults_follow_the_paper():
    r = small()
    assert r.train.lr == 5e-4 and r.train.betas == (0.9, 0.95) and r.train.eps == 1e-8
    assert r.train.weight_decay == 1e-2 and math.isclose(r.train.mapping_lr_scale, 1 / 3)
    assert r.train.grad_clip == 1.0 and r.train.class_dropout == 0.1
    assert (r.train.ema.decay_max, r.train.ema.power) == (0.9999, 0.75)
    assert r.diffusion.denoiser.type == "karras" and r.diffusion.denoiser.sigma_data == 0.5
    assert r.diffusion.weighting.type == "soft_min_snr"
    assert r.diffusion.sigma_density.type == "cosine_interpolated"
    assert r.sample.sampler.type == "dpmpp_3m_sde" and r.sample.schedule.type == "karras"
    assert r.sample.steps == 50 and r.sample.cfg_scale == 1.0
    assert r.runtime.device == "auto" and r.runtime.dtype == "auto" and r.runtime.backends == {}


def test_hdit_defaults_resolve_attention_and_d_ff():
    r = loads_recipe(SMALL.replace('attention = { type = "neighborhood", kernel_size = 3, d_head = 16 }', "")
                     .replace('attention = { type = "global", d_head = 16 }', "")
                     .replace("width = 32\n", "width = 64\n").replace("width = 64\n\n[data]", "width = 128\n\n[data]"),
                     ["model.input_size=64"])
    assert [lv.attention.type for lv in r.model.levels] == ["neighborhood", "global"]
    assert r.model.levels[0].attention.kernel_size == 7
    assert r.model.levels[0].ffn_width == 3 * r.model.levels[0].width


def test_recipe_is_frozen():
    r = small()
    with pytest.raises(ValidationError, match="frozen"):
        r.train.lr = 1.0  # type: ignore[misc]


def test_round_trip_with_odd_values():
    r = small(train__lr=1 / 3 * 1e-3, train__seed=-5, data__dataset__classes=["star", "ring"],
              runtime__backends={"global": "torch"}, sample__schedule={"type": "karras", "sigma_max": 1e3})
    text = r.to_toml(header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert loads_recipe(text) == r


def test_preset_key_in_model_section():
    r = loads_recipe(SMALL.split("[data]")[0].split("[model]")[0]
                     + '[model]\npreset = "hdit_test"\nnum_classes = 0\n\n[data]\ndataset = "shapes"\n')
    from hourglass.models import model_spec

    assert r.model == model_spec("hdit_test", num_classes=0)


# -- TOML writer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    0, -3, 1.5, 1e-8, 1e300, float("inf"), -float("inf"), True, "", "a\"b\\c\n\t\x01é", [1, 2], [[1], []],
    {"a": 1, "b c": {"d": [1.0]}}, [{"x": 1}, {"x": 2, "y": {"z": "w"}}],
])
def test_toml_dumps_reads_back(value):
    data = {"section": {"key": value, "inner": {"v": value}}, "top": value}
    assert toml.loads(toml.dumps(data)) == data


def test_toml_dumps_nan_and_none():
    out = toml.loads(toml.dumps({"a": {"x": float("nan"), "y": None}}))
    assert math.isnan(out["a"]["x"]) and "y" not in out["a"]
    with pytest.raises(TypeError, match="TOML cannot hold"):
        toml.value_text(object())


def test_parse_value_reads_toml_then_strings():
    assert toml.parse_value("1e-4") == 1e-4
    assert toml.parse_value("[2, 11]") == [2, 11]
    assert toml.parse_value("{type = 'global'}") == {"type": "global"}
    assert toml.parse_value("true") is True
    assert toml.parse_value("global") == "global"
    assert toml.parse_value("/data/ffhq") == "/data/ffhq"


# -- overrides ------------------------------------------------------------------------------------
def test_parse_path():
    assert parse_path("model.levels[1].attention.kernel_size") == ["model", "levels", 1, "attention", "kernel_size"]
    for bad in ("", "a..b", "a.", "[0]", "a b", "a[x]"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_overrides_set_values_lists_and_new_tables():
    r = small()
    r2 = recipe_from_data(r.to_data(), [
        "train.lr=1e-4", "model.levels[0].depth=3", "data.dataset.size=10", "sample.schedule.rho=5",
        "runtime.backends.global=torch", "train.betas=[0.8, 0.9]", "model.levels[1].attention=global",
    ])
    assert r2.train.lr == 1e-4 and r2.model.levels[0].depth == 3 and r2.data.dataset.size == 10
    assert r2.sample.schedule.rho == 5 and r2.runtime.backends == {"global": "torch"}
    assert r2.train.betas == (0.8, 0.9) and r2.model.levels[1].attention.d_head == 64
    assert r.train.lr == 5e-4  # the original is untouched


def test_override_creates_missing_section_and_appends_levels():
    data = toml.loads(SMALL)
    del data["data"]["batch_size"]
    out = apply_overrides(data, ["train.ema.power=0.6667", "model.levels[2]={depth = 1, width = 64}"])
    assert out["train"] == {"ema": {"power": 0.6667}} and len(out["model"]["levels"]) == 3


def test_override_type_change_keeps_the_options_the_new_type_has_and_names_the_rest():
    notes: list[str] = []
    r = loads_recipe(SMALL, ["model.levels[0].attention.type=shifted_window", "model.levels[0].width=64"], notes=notes)
    attention = r.model.levels[0].attention
    assert attention.type == "shifted_window"
    assert attention.d_head == 16  # kept (it was 16; the new type's default is 64)
    assert attention.window_size == 8  # the new type's own default
    assert notes == ["model.levels[0].attention: type neighborhood -> shifted_window keeps d_head; "
                     "drops kernel_size (not options of shifted_window)"]
    notes.clear()
    r = loads_recipe(SMALL, ["model.levels[1].attention.type=neighborhood", "model.levels[1].attention.kernel_size=3"],
                     notes=notes)
    assert r.model.levels[1].attention.d_head == 16
    assert notes == ["model.levels[1].attention: type global -> neighborhood keeps d_head"]
    notes.clear()
    problems_of(SMALL, ["model.levels[0].attention.type=no_such_kind"])  # unknown type: reported, no note
    data = apply_overrides(toml.loads(SMALL), ["model.levels[0].attention.type=no_such_kind"], notes=notes)
    assert data["model"]["levels"][0]["attention"] == {"type": "no_such_kind"} and notes == []


def test_override_reaches_into_a_preset():
    text = '[model]\npreset = "hdit_test"\ninput_size = 16\nnum_classes = 0\n\n[data]\ndataset = "shapes"\n'
    base = loads_recipe(text)
    r = loads_recipe(text, ["model.levels[0].depth=3"])
    assert r.model.levels[0].depth == 3
    assert r.model.levels[0].model_copy(update={"depth": base.model.levels[0].depth}) == base.model.levels[0]
    assert r.model.levels[1:] == base.model.levels[1:] and r.model.mapping == base.model.mapping
    assert loads_recipe(text, ["model.preset=hdit_test", "model.levels[0].depth=3"]).model.levels[0].depth == 3


def test_override_string_component_becomes_table():
    r = small(data__dataset="shapes")
    r2 = recipe_from_data(r.to_data() | {"data": {"dataset": "shapes"}}, ["data.dataset.size=7"])
    assert r2.data.dataset.size == 7


@pytest.mark.parametrize("override, path", [
    ("train.lr", "train.lr"),
    ("model.levels[9].depth=1", "model.levels[9]"),
    ("train.lr.x=1", "train.lr"),
    ("model..x=1", "model..x"),
])
def test_bad_overrides_are_recipe_errors(override, path):
    with pytest.raises(RecipeError) as info:
        loads_recipe(SMALL, [override])
    assert info.value.problems[0].path == path


def test_overrides_go_through_validation():
    with pytest.raises(RecipeError) as info:
        loads_recipe(SMALL, ["train.lr=-1", "model.levels[0].attention.kernel_size=9"])
    assert {p.path for p in info.value.problems} == {"train.lr", "model.levels[0].attention.kernel_size"}


# -- problems a user can act on -------------------------------------------------------------------
def test_wrong_types():
    problems = problems_of(SMALL, ["train.lr='fast'", "model.levels[0].depth=two", "runtime.compile=3"])
    by_path = {p.path: p for p in problems}
    assert by_path["train.lr"].value == "fast" and "number" in by_path["train.lr"].text
    assert "whole number" in by_path["model.levels[0].depth"].text
    assert "true or false" in by_path["runtime.compile"].text


def test_strict_types_refuse_quoted_numbers_and_booleans_with_the_fix():
    by_path = {p.path: p for p in problems_of(SMALL, [
        ("data.batch_size", "32"), "data.num_workers=true", "runtime.compile=1", ("runtime.dtype", 3),
        "train.steps=3.0", ("train.lr", "1e-4"), "data.dataset.channels=true", ("train.betas", ["0.9", 0.95]),
        ("train.gradient_checkpointing", "true"),
    ])}
    assert by_path["data.batch_size"].value == "32" and "write 32 without quotes" in by_path["data.batch_size"].text
    assert "true/false is not a number" in by_path["data.num_workers"].text
    assert "true or false" in by_path["runtime.compile"].text and by_path["runtime.compile"].value == 1
    assert "runtime.dtype" in by_path
    assert "write 3 (a whole number" in by_path["train.steps"].text
    assert "write 1e-4 without quotes" in by_path["train.lr"].text
    assert by_path["data.dataset.channels"].value is True
    assert "write 0.9 without quotes" in by_path["train.betas[0]"].text
    assert "write true without quotes" in by_path["train.gradient_checkpointing"].text
    assert len(by_path) == 9


def test_strict_types_keep_ints_for_floats_and_arrays_for_tuples():
    r = small(train__lr=1, train__betas=[0.8, 0.9], data__augment__p=0, model__levels=[
        {"depth": 1, "width": 32, "attention": {"type": "neighborhood", "kernel_size": 3, "d_head": 16}},
        {"depth": 1, "width": 64, "attention": {"type": "global", "d_head": 16}},
    ])
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float) and r.train.betas == (0.8, 0.9)
    import json

    from hourglass.registry import MODEL

    as_json = json.loads(json.dumps(r.to_data()))  # tuples become lists, as in a checkpoint's model_spec
    assert MODEL.validate(as_json["model"]) == r.model and recipe_from_data(as_json) == r


def test_every_registered_spec_is_strict():
    from hourglass.registry import REGISTRIES

    loose = [f"{family}:{name}" for family, registry in REGISTRIES.items() for name in registry.names()
             if not registry.spec_class(name).model_config.get("strict")]
    assert not loose


def test_missing_fields():
    text = SMALL.replace("depth = 1\nwidth = 64", "width = 64").replace('dataset = { type = "shapes", size = 64 }', "")
    problems = problems_of(text)
    assert {p.path for p in problems} == {"model.levels[1].depth", "data.dataset"}
    assert all("required key is missing" in p.text and "add" in p.text for p in problems)
    assert paths_of(SMALL.split("[data]")[0]) == ["data"]


def test_unknown_keys_suggest_the_right_one():
    problems = problems_of(SMALL, ["train.learning_rate=1", "model.levels[0].attention.kernel=3"])
    by_path = {p.path: p.text for p in problems}
    assert "valid keys" in by_path["train.learning_rate"]
    assert "did you mean 'kernel_size'?" in by_path["model.levels[0].attention.kernel"]
    assert paths_of(SMALL + "\n[trainer]\nsteps = 1\n") == ["trainer"]


def test_unknown_component_lists_the_known_ones():
    (p,) = problems_of(SMALL, ["model.levels[0].attention.type=neighbourhood"])
    assert p.path == "model.levels[0].attention"
    assert "known: " in p.text and "Did you mean 'neighborhood'" in p.text
    assert all(name in p.text for name in ("global", "neighborhood", "none", "shifted_window"))
    (p,) = problems_of(SMALL, ["diffusion.weighting=soft-min-snr"])
    assert p.path == "diffusion.weighting" and "soft_min_snr" in p.text


def test_impossible_shapes_are_split_into_problems():
    problems = problems_of(SMALL, [
        "model.levels[0].attention.kernel_size=9", "model.levels[1].width=72",
    ])
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"model.levels[0].attention.kernel_size", "model.levels[1].width"}
    assert by_path["model.levels[0].attention.kernel_size"].value == 9
    assert "8x8 token grid" in by_path["model.levels[0].attention.kernel_size"].text
    assert by_path["model.levels[1].width"].value == 72 and "d_head" in by_path["model.levels[1].width"].text
    (p,) = problems_of(SMALL, ["model.input_size=36"])
    assert p.path == "model.input_size" and p.value == 36 and "divisible" in p.text
    (p,) = problems_of(SMALL, ["model.levels[0].attention={type = 'shifted_window', window_size = 3, d_head = 16}"])
    assert p.path == "model.levels[0].attention.window_size" and "divide" in p.text


def test_cross_section_rules():
    problems = problems_of(SMALL, ["sample.cfg_scale=2.0", "train.grad_accum=3", "model.in_channels=1"])
    assert {p.path for p in problems} == {"sample.cfg_scale", "data.batch_size", "model.in_channels"}
    # reported together with a schema problem elsewhere
    problems = problems_of(SMALL, ["sample.cfg_scale=2.0", "train.lr=-1"])
    assert {p.path for p in problems} == {"train.lr", "sample.cfg_scale"}


def test_runtime_rules():
    problems = problems_of(SMALL, ["runtime.device=gpu", "runtime.dtype=float16",
                                   "runtime.backends={neighborhood = 'natn', foo = 'x'}"])
    assert {p.path for p in problems} == {
        "runtime.device", "runtime.dtype", "runtime.backends.neighborhood", "runtime.backends.foo"
    }
    for ok in ("cpu", "cuda", "cuda:1", "auto", "mps", "xpu", "xpu:1"):
        assert small(runtime__device=ok).runtime.device == ok


class _LabelledSpec(Spec):
    type: Literal["labelled_test"] = "labelled_test"
    classes: int = 4
    channels: int = 3


@pytest.fixture
def labelled_dataset():
    class Labelled(DatasetComponent):
        """A dataset that declares its class count and channels (for the cross-section rules)."""

        Spec = _LabelledSpec

        @classmethod
        def classes_of(cls, spec):
            return spec.classes

        @classmethod
        def channels_of(cls, spec):
            return spec.channels

    DATASET.add("labelled_test", Labelled)
    yield
    DATASET.unregister("labelled_test")


def test_class_count_must_match_the_data(labelled_dataset):
    assert small(data__dataset={"type": "labelled_test"}, model__num_classes=4).model.num_classes == 4
    (p,) = problems_of(SMALL, ["data.dataset={type = 'labelled_test'}", "model.num_classes=10"])
    assert p.path == "model.num_classes" and p.value == 10 and "set model.num_classes = 4" in p.text
    (p,) = problems_of(SMALL, ["data.dataset={type = 'labelled_test', classes = 0}", "model.num_classes=10"])
    assert "unlabelled" in p.text
    small(data__dataset={"type": "labelled_test"}, model__num_classes=0)  # unconditional on labelled data is fine
    (p,) = problems_of(SMALL, ["data.dataset={type = 'labelled_test', channels = 1}"])
    assert p.path == "model.in_channels" and p.value == 3 and "set model.in_channels = 1" in p.text


def test_a_dataset_must_subclass_the_dataset_contract():
    class NoContract:
        """Declares nothing."""

        Spec = _LabelledSpec

    with pytest.raises(RegistryError, match="must subclass hourglass.data._base.DatasetComponent"):
        DATASET.add("labelled_test", NoContract)


def test_bad_toml_reports_line_and_column():
    text = SMALL.replace("depth = 1\nwidth = 32", "depth = 1\nwidth 32")
    line = text.splitlines().index("width 32") + 1
    (p,) = problems_of(text)
    assert f"line {line}," in p.text and "column" in p.text and "width 32" in p.text


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot read the recipe file"):
        load_recipe(tmp_path / "nope.toml")


def test_error_text_lists_every_problem():
    with pytest.raises(RecipeError) as info:
        loads_recipe(SMALL, ["train.lr=-1", "train.eps=0"])
    text = str(info.value)
    assert "2 problems" in text and "train.lr = -1" in text and "train.eps = 0" in text
    assert isinstance(info.value, ValueError)


def test_build_model_on_cpu_sets_explicit_backends():
    r = small(runtime__backends={"global": "torch", "neighborhood": "auto"})
    model = build_model(r, device="cpu")
    kinds = {m.spec.type: m.backend for m in model.modules() if hasattr(m, "backend") and hasattr(m, "spec")}
    assert kinds == {"global": "torch", "neighborhood": None}
    assert next(model.parameters()).device == torch.device("cpu")


class _PickySpec(Spec):
    type: Literal["picky_test"] = "picky_test"
    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _check(self):
        raise_problems([
            Problem("low", f"{self.low} is not below high", "lower it"),
            Problem("high", f"{self.high} is not above low; it must be", "raise it; or both"),
        ] if self.low >= self.high else [])
        return self


def test_validators_report_structured_problems_that_keep_path_message_and_hint():
    class Picky(DatasetComponent):
        """A dataset whose spec validator reports two problems."""

        Spec = _PickySpec

    DATASET.add("picky_test", Picky)
    try:
        problems = problems_of(SMALL, ["data.dataset={type = 'picky_test', low = 3, high = 2}"])
    finally:
        DATASET.unregister("picky_test")
    assert [(p.path, p.value) for p in problems] == [("data.dataset.low", 3), ("data.dataset.high", 2)]
    assert (problems[1].message, problems[1].hint) == ("2 is not above low; it must be", "raise it; or both")
