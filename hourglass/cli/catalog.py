"""``hourglass list``: registered components per family, and the distribution providing each.

Families: attention, pos_emb, ffn, norm, merge, skip, mapping, model, denoiser, weighting,
sigma_density, sampler, schedule, dataset, and ``presets`` (named model configurations).
Components from plugins (entry-point group ``hourglass.plugins``) appear with their distribution.
"""

from __future__ import annotations

import argparse

from hourglass.cli._common import CLIError, add_json_option, format_table, print_json

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "catalog"]

COMMAND = "list"
PRESETS = "presets"


HELP = "registered components (by family) and model presets, with their providers"
EXAMPLES = ("hourglass list", "hourglass list attention", "hourglass list presets --json",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass list``."""
    parser.add_argument("family", nargs="?", metavar="FAMILY", help="only this family (or 'presets')")
    add_json_option(parser)


def catalog(family: str | None = None) -> dict[str, list[dict[str, str]]]:
    """``{family: [{"name", "provider"}, ...]}`` for one or every family (plus ``presets``).

    Raises:
        CLIError: for an unknown family (the message lists the known ones).
    """
    from hourglass.models.factory import get_preset, list_models
    from hourglass.registry import REGISTRIES, load_plugins

    load_plugins()
    families = list(REGISTRIES) + [PRESETS]
    if family is not None and family not in families:
        import difflib

        close = difflib.get_close_matches(family, families, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CLIError(f"unknown family {family!r}; known: {', '.join(families)}.{hint}")
    out: dict[str, list[dict[str, str]]] = {}
    for name in [family] if family else families:
        if name == PRESETS:
            out[name] = [{"name": p, "provider": "hourglass", "type": str(get_preset(p).get("type", ""))}
                         for p in list_models()]
        else:
            reg = REGISTRIES[name]
            out[name] = [{"name": n, "provider": reg.provider(n)} for n in reg.names()]
    return out


def run(args: argparse.Namespace) -> int:
    """Print the catalogue."""
    data = catalog(args.family)
    if args.json:
        print_json(data)
        return 0
    blocks = []
    for family, entries in data.items():
        if family == PRESETS:
            rows = [[e["name"], e["type"], e["provider"]] for e in entries]
            table = format_table(["preset", "model type", "provider"], rows)
        else:
            rows = [[e["name"], e["provider"]] for e in entries]
            table = format_table([family, "provider"], rows) if rows else f"{family}: (none registered)"
        blocks.append(table)
    print("\n\n".join(blocks))
    return 0
