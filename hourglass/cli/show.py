"""``hourglass show``: a model preset as recipe TOML, or a component's fields and defaults.

``NAME`` is a preset (``hdit_l``), a component (``neighborhood``) or ``FAMILY:NAME`` when a
name exists in several families (``mapping:hdit``, ``pos_emb:none``).
"""

from __future__ import annotations

import argparse
from typing import Any

from hourglass.cli._common import CLIError, add_json_option, format_table, print_json

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "find_components"]

COMMAND = "show"


HELP = "a preset as TOML, or a component's fields, defaults and backends"
EXAMPLES = (
    "hourglass show hdit_imagenet256        # the preset's [model] section",
    "hourglass show neighborhood            # options of neighborhood attention",
    "hourglass show sampler:dpmpp_3m_sde",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass show``."""
    parser.add_argument("name", metavar="NAME", help="preset, component, or FAMILY:NAME")
    add_json_option(parser)


def find_components(name: str) -> list[tuple[str, str]]:
    """``[(family, component)]`` matching ``name`` or ``family:name``."""
    from hourglass.registry import REGISTRIES

    if ":" in name:
        family, _, comp = name.partition(":")
        if family not in REGISTRIES:
            raise CLIError(f"unknown family {family!r}; known: {', '.join(REGISTRIES)}")
        REGISTRIES[family].get(comp)  # raises RegistryError listing the known names
        return [(family, comp)]
    return [(family, name) for family, reg in REGISTRIES.items() if name in reg]


def _show_preset(name: str, as_json: bool) -> None:
    from hourglass.models.factory import model_spec
    from hourglass.recipe import plain_data, toml

    data = plain_data(model_spec(name).model_dump(mode="python"))
    if as_json:
        print_json({"preset": name, "model": data})
        return
    header = (f"model preset {name!r}, resolved (every default filled in).\n"
              f"Paste into a recipe, or write [model] preset = \"{name}\" and override single keys.")
    print(toml.dumps({"model": data}, header=header), end="")


def _show_component(family: str, name: str) -> dict[str, Any]:
    from hourglass.registry import REGISTRIES

    return REGISTRIES[family].describe(name)


def run(args: argparse.Namespace) -> int:
    """Print the preset or component(s) named ``args.name``."""
    from hourglass.models.factory import list_models

    name = args.name
    if ":" not in name and name in list_models():
        _show_preset(name, args.json)
        return 0
    matches = find_components(name)
    if not matches:
        import difflib

        from hourglass.registry import REGISTRIES

        known = list_models() + sorted({n for reg in REGISTRIES.values() for n in reg.names()})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CLIError(f"no preset or component is called {name!r}.{hint} See `hourglass list`.")
    infos = [_show_component(f, n) for f, n in matches]
    if args.json:
        print_json(infos if len(infos) > 1 else infos[0])
        return 0
    from hourglass.recipe import toml

    blocks = []
    for info in infos:
        lines = [f"{info['family']} {info['name']!r} (provided by {info['provider']})"]
        if info.get("doc"):
            lines.append(info["doc"])
        facts = info.get("facts", {})
        if facts:
            lines.append("declares: " + "; ".join(f"{k} = {_fact(v)}" for k, v in facts.items()))
        if facts.get("kernel"):
            lines.append(f"backends of its kernel: {', '.join(facts['backends'])} (chosen at run time: "
                         f"[runtime.backends] {facts['kernel']} = \"NAME\")")
        rows = [
            [f, d["type"], "(required)" if d["required"] else _value(d["default"]), d["description"]]
            for f, d in info["fields"].items()
        ]
        lines.append(format_table(["field", "type", "default", "description"], rows) if rows else "no options")
        example = {"type": info["name"], **{f: d["default"] for f, d in info["fields"].items() if not d["required"]}}
        try:
            lines.append(f"as TOML: {toml.value_text(_tomlable(example))}")
        except TypeError:
            pass
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value(v: Any) -> str:
    from hourglass.recipe import toml

    try:
        return toml.value_text(_tomlable(v)) if v is not None else "none"
    except TypeError:
        return repr(v)


def _tomlable(v: Any) -> Any:
    from hourglass.recipe import plain_data

    return plain_data(v)
