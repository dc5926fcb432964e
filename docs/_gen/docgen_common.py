"""Helpers shared by the generated docs pages: Markdown escaping, types, defaults, spec tables.

Everything here reads live objects (pydantic field infos, registries, argparse actions), so the
pages built from it follow the code without a hand-kept list.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = [
    "anchor",
    "md_text",
    "md_cell",
    "code",
    "toml_value",
    "component_registry",
    "nested_spec",
    "type_text",
    "constraints_text",
    "default_text",
    "spec_table",
    "first_paragraph",
    "field_type_cell",
    "section_doc",
    "nested_tables",
]

_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_INTRAWORD_STAR = re.compile(r"(?<=\S)\*(?=\S)")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`~?([^`]+)`")


def anchor(*parts: str) -> str:
    """An HTML id from ``parts``: lower case, ``[a-z0-9_-]`` only, parts joined with ``-``."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")


def md_text(text: str) -> str:
    """Docstring / help text (reST-flavoured) as safe Markdown.

    Sphinx roles become code spans; outside code spans ``<``, ``>`` and ``&`` are escaped (so
    ``runs/<name>`` is not taken for an HTML tag) and so is a ``*`` inside a word (``step_*.pt``
    is a glob, not the start of emphasis).
    """
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text or "")
    parts = _CODE_SPAN.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span: keep, but normalise reST ``x`` to Markdown `x`
            out.append(f"`{part.strip('`')}`" if part.startswith("``") else part)
        else:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(_INTRAWORD_STAR.sub(r"\\*", part))  # step_*.pt is a glob, not emphasis
    return "".join(out)


def md_cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(md_text(text).split()).replace("|", "&#124;")


def code(text: str) -> str:
    """A code span that is safe inside a table cell (pipes become HTML entities inside ``<code>``)."""
    text = str(text)
    if "|" in text or "`" in text:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")
        return f"<code>{escaped}</code>"
    return f"`{text}`"


def toml_value(value: Any) -> str:
    """``value`` written as a TOML inline value (tuples as arrays, specs as inline tables)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (int,)):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0] != "type")  # a component's type first
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in items if v is not None) + "}"
    if value is None:
        return "none"
    return str(value)


def _closure_registry(func: Any) -> Any:
    from hourglass.registry import Registry

    for cell in getattr(func, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # empty cell
            continue
        if isinstance(content, Registry):
            return content
    return None


def _metadata_registry(metadata: Any) -> Any:
    for item in metadata or ():
        func = getattr(item, "func", None)
        if func is not None:
            registry = _closure_registry(func)
            if registry is not None:
                return registry
    return None


def component_registry(field: FieldInfo) -> Any:
    """The registry a ``Component(REGISTRY)`` field validates through, else ``None``.

    Looks in the field's validators, then inside ``Optional[...]``/``Annotated[...]`` of its
    annotation (``attention: Component(ATTENTION) | None``).
    """
    found = _metadata_registry(field.metadata)
    if found is not None:
        return found
    stack = [field.annotation]
    while stack:
        ann = stack.pop()
        if typing.get_origin(ann) is typing.Annotated:
            found = _metadata_registry(getattr(ann, "__metadata__", ()))
            if found is not None:
                return found
        stack.extend(typing.get_args(ann))
    return None


def nested_spec(field: FieldInfo) -> tuple[type[BaseModel] | None, bool]:
    """``(SpecClass, is_list)`` when the field holds a fixed nested spec (not a registry component).

    ``levels: list[LevelSpec]`` gives ``(LevelSpec, True)``; ``ema: EMASection`` gives
    ``(EMASection, False)``; anything else ``(None, False)``.
    """
    if component_registry(field) is not None:
        return None, False
    ann = field.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    if typing.get_origin(ann) in (list, tuple):
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def type_text(ann: Any) -> str:
    """A readable type: ``int``, ``float | None``, ``"a" | "b"``, ``list[LevelSpec]``."""
    if ann is None or ann is type(None):
        return "none"
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(toml_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin in (list, tuple, dict, set, frozenset):
        name = origin.__name__
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{name}[{inner}]" if args else name
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
           ("max_length", "length <="), ("multiple_of", "multiple of"))


def constraints_text(field: FieldInfo) -> str:
    """Bounds declared on the field (``>= 1``, ``< 1``, ``length >= 1``), comma separated."""
    found = []
    for item in field.metadata:
        for attr, symbol in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
    return ", ".join(found)


def default_text(field: FieldInfo) -> str:
    """The default as a TOML value in a code span, or *required*."""
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "*unset*"
    return code(toml_value(value))


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def field_type_cell(field: FieldInfo, component_link: str) -> str:
    """The type column: a link to the family in the catalogue for component fields."""
    registry = component_registry(field)
    if registry is not None:
        optional = any(a is type(None) for a in typing.get_args(field.annotation))
        text = f"[{registry.family}]({component_link}#{anchor(registry.family)}) component"
        return text + " or none" if optional else text
    return code(type_text(field.annotation))


def spec_table(spec_cls: type[BaseModel], id_prefix: str, component_link: str,
               skip: tuple[str, ...] = ("type",)) -> str:
    """A Markdown table of ``spec_cls``'s fields: name (with an HTML id), type, default, description.

    A field holding a fixed nested spec gets no id here: its own table follows under a heading
    with that id (see ``docgen_recipes``), and its type cell links there.

    Args:
        spec_cls: a pydantic model class.
        id_prefix: prefix of each row's HTML id (``id_prefix-field``).
        component_link: relative link to the component catalogue page (for component types).
        skip: field names left out (the ``type`` discriminator by default).
    """
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in spec_cls.model_fields.items():
        if name in skip:
            continue
        limits = constraints_text(field)
        desc = md_cell(field.description or "")
        if limits:
            desc = f"{desc} ({md_cell(limits)})" if desc else md_cell(limits)
        nested, is_list = nested_spec(field)
        if nested is not None:  # its own table follows, under a heading with this id
            kind = "array of tables" if is_list else "table"
            rows.append(f"| `{name}` | [{kind}](#{anchor(id_prefix, name)}) | {default_text(field)} | {desc} |")
            continue
        rows.append(
            f'| <a id="{anchor(id_prefix, name)}"></a>`{name}` | {field_type_cell(field, component_link)} '
            f"| {default_text(field)} | {desc} |"
        )
    if len(rows) == 2:
        return "*No options.*"
    return "\n".join(rows)


def section_doc(cls: Any) -> str:
    """First paragraph of a section spec's docstring without its leading ````[name]````: label."""
    text = first_paragraph(cls.__doc__)
    return re.sub(r"^``\[+[\w.]+\]+``:\s*", "", text)


def nested_tables(spec_cls: type[BaseModel], path: str, id_prefix: str, level: int, component_link: str) -> list[str]:
    """Headed tables for the fixed nested specs of ``spec_cls`` (``[train.ema]``, ``[[model.levels]]``), recursively.

    Args:
        spec_cls: the spec whose nested fields are expanded.
        path: the TOML path of ``spec_cls`` (``"train"``, ``"model"``).
        id_prefix: the HTML id prefix of ``spec_cls``'s table; a nested table's heading gets
            ``id_prefix-field`` (the id its row in the parent table links to).
        level: Markdown heading level of the nested tables.
        component_link: relative link to the component catalogue page.
    """
    lines: list[str] = []
    for name, field in spec_cls.model_fields.items():
        nested, is_list = nested_spec(field)
        if nested is None:
            continue
        sub_path, sub_id = f"{path}.{name}", anchor(id_prefix, name)
        title = f"[[{sub_path}]]" if is_list else f"[{sub_path}]"
        lines += [f"{'#' * level} `{title}` {{#{sub_id}}}", ""]
        doc = field.description or section_doc(nested)
        if is_list:
            doc = (doc.rstrip(".") + ". " if doc else "") + f"An array of tables: repeat `{title}` once per entry."
        if doc:
            lines += [md_text(doc), ""]
        lines += [spec_table(nested, sub_id, component_link), ""]
        lines += nested_tables(nested, sub_path, sub_id, min(level + 1, 6), component_link)
    return lines
