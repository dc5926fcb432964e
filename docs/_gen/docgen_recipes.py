"""Generate the recipe reference (``recipes.md``) from the pydantic schema in ``hourglass.recipe``.

Every section of :class:`hourglass.recipe.Recipe`, every field of it (type, default, bounds,
description), the nested tables (``[train.ema]``, ``[data.augment]``, ``[[model.levels]]``) and,
for the component sections (``[model]``, ``[vae]``), the fields of every registered type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docgen_common import (
    anchor,
    component_registry,
    first_paragraph,
    md_cell,
    md_text,
    nested_spec,
    nested_tables,
    section_doc,
    spec_table,
)

__all__ = ["section_ids", "recipes_markdown"]

CATALOGUE = "components.md"


def _model_section(field: Any) -> list[str]:
    registry = component_registry(field)
    lines = [
        "## `[model]` {#model}",
        "",
        md_text(field.description or ""),
        "",
        f"`type` picks one of the registered [models]({CATALOGUE}#model) "
        f"({', '.join(f'`{n}`' for n in registry.names())}); the other keys are that model's fields below. "
        f"`preset = \"NAME\"` starts from a [preset]({CATALOGUE}#model-presets) instead, and the keys given "
        "beside it override the preset's (`[model]` `preset = \"hdit_s\"`, `num_classes = 10`).",
        "",
        '| field | type | default | description |',
        '|---|---|---|---|',
        f'| <a id="{anchor("model", "type")}"></a>`type` | {" &#124; ".join(f"`{chr(34)}{n}{chr(34)}`" for n in registry.names())} '
        '| *required unless `preset` is given* | the model ([catalogue](components.md#model)) |',
        f'| <a id="{anchor("model", "preset")}"></a>`preset` | `str` | *unset* | start from this preset; '
        'the other keys override it (`hourglass show NAME` prints one) |',
        "",
    ]
    return lines + _type_sections("model", registry)


def _type_sections(section: str, registry: Any) -> list[str]:
    """One subsection per registered type of a component section: its summary and fields."""
    lines: list[str] = []
    for name in registry.names():
        spec_cls = registry.spec_class(name)
        sid = anchor(section, name)
        lines += [f"### `type = \"{name}\"` {{#{sid}}}", ""]
        summary = first_paragraph(registry.get(name).__doc__)
        provider = registry.provider(name)
        if summary:
            lines += [md_text(summary), ""]
        if provider != "hourglass":
            lines += [f"Provided by the plugin distribution `{provider}`.", ""]
        lines += [spec_table(spec_cls, sid, CATALOGUE), ""]
        lines += nested_tables(spec_cls, section, sid, 4, CATALOGUE)
    return lines


def _component_section(name: str, field: Any) -> list[str]:
    """An optional section that is one component (``[vae]``): its ``type`` picks the component."""
    registry = component_registry(field)
    required = "" if field.is_required() else " Leave the section out for none."
    return [
        f"## `[{name}]` {{#{anchor(name)}}}",
        "",
        md_text(field.description or ""),
        "",
        f"`type` picks one of the registered [{registry.family} components]({CATALOGUE}#{anchor(registry.family)}) "
        f"({', '.join(f'`{n}`' for n in registry.names())}); the other keys are that component's fields below."
        + required,
        "",
        '| field | type | default | description |',
        '|---|---|---|---|',
        f'| <a id="{anchor(name, "type")}"></a>`type` | {" &#124; ".join(f"`{chr(34)}{n}{chr(34)}`" for n in registry.names())} '
        f'| *required* | the {registry.family} ([catalogue]({CATALOGUE}#{anchor(registry.family)})) |',
        "",
    ] + _type_sections(name, registry)


def _section_class(field: Any) -> Any:
    """The spec class of a fixed section, unwrapping ``Optional`` (``eval: EvalSection | None``)."""
    import typing

    from pydantic import BaseModel

    args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel) else field.annotation


def section_ids() -> dict[str, list[str]]:
    """``{section title: [HTML ids of its fields]}`` that :func:`recipes_markdown` writes (for tests)."""
    from hourglass.recipe import Recipe

    out: dict[str, list[str]] = {}

    def walk(spec_cls: Any, path: str, id_prefix: str) -> None:
        out[path] = [anchor(id_prefix, n) for n in spec_cls.model_fields if n != "type"]
        for n, f in spec_cls.model_fields.items():
            nested, _ = nested_spec(f)
            if nested is not None:
                walk(nested, f"{path}.{n}", anchor(id_prefix, n))

    for name, field in Recipe.model_fields.items():
        registry = component_registry(field)
        if registry is not None:
            out[name] = [anchor(name, "type")] + ([anchor(name, "preset")] if name == "model" else [])
            for comp in registry.names():
                walk(registry.spec_class(comp), f"{name}[type={comp}]", anchor(name, comp))
        else:
            walk(_section_class(field), name, anchor(name))
    return out


def _example(root: Path) -> list[str]:
    path = root / "recipes" / "quickstart.toml"
    if not path.is_file():
        return []
    return [
        "## A complete recipe",
        "",
        "`recipes/quickstart.toml`, the [quick start](quickstart.md)'s recipe, included from the repository:",
        "",
        "```toml",
        path.read_text(encoding="utf-8").rstrip(),
        "```",
        "",
    ]


def recipes_markdown(root: Path) -> str:
    """The recipe reference page as Markdown.

    Args:
        root: the repository root (for the example recipe).
    """
    from hourglass.recipe import Recipe

    lines = [
        "# Recipe reference",
        "",
        "A recipe is one TOML file that declares a whole experiment. It is validated by "
        "`hourglass.recipe.Recipe` (pydantic, frozen, unknown keys refused); this page is generated from that "
        "schema by `python docs/_gen/docgen.py` (a test fails when it is stale), so it lists every section and field.",
        "",
        "- Load one with `hourglass.recipe.load_recipe(path)`, check files with `hourglass validate FILE...`, "
        "train with `hourglass train FILE`.",
        "- Every problem is reported at once, each with its path (`model.levels[1].attention.kernel_size`), "
        "the value found and how to fix it.",
        "- `--set KEY=VALUE` on the command line (`--set train.lr=1e-4 --set model.levels[0].depth=3`) overrides "
        "a value before validation, through the same schema.",
        "- A field whose type is a *component* takes a registered name (`weighting = \"soft_min_snr\"`) or a "
        "table with a `type` and that component's options (`weighting = {type = \"min_snr\", gamma = 5.0}`); "
        f"the options of each are in the [component catalogue]({CATALOGUE}).",
        "- The resolved recipe (every default filled in) is written to the run directory and into every "
        "checkpoint.",
        "",
        "| section | required | what |",
        "|---|---|---|",
    ]
    for name, field in Recipe.model_fields.items():
        required = "yes" if field.is_required() else "no"
        what = field.description or ""
        if component_registry(field) is None:
            what = section_doc(_section_class(field)) or what
        lines.append(f"| [`[{name}]`](#{anchor(name)}) | {required} | {md_cell(what)} |")
    lines.append("")
    for name, field in Recipe.model_fields.items():
        if component_registry(field) is not None:
            lines += _model_section(field) if name == "model" else _component_section(name, field)
            continue
        cls = _section_class(field)
        lines += [f"## `[{name}]` {{#{anchor(name)}}}", ""]
        doc = section_doc(cls)
        if cls is not field.annotation:  # an optional section
            doc = (doc + " " if doc else "") + "Leave the section out for none."
        if doc:
            lines += [md_text(doc), ""]
        lines += [spec_table(cls, anchor(name), CATALOGUE), ""]
        lines += nested_tables(cls, name, anchor(name), 3, CATALOGUE)
    lines += _example(root)
    return "\n".join(lines) + "\n"
