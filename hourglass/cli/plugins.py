"""``hourglass plugins``: third-party plugins found in entry-point group ``hourglass.plugins``.

For each: its name, distribution and version, the components it registered and whether it
loaded, failed (with the reason) or was disabled (``HOURGLASS_DISABLE_PLUGINS=name``). With the
global ``--strict-plugins`` flag a failed plugin is an error (exit 2).
"""

from __future__ import annotations

import argparse

from hourglass.cli._common import add_json_option, format_table, print_json

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

COMMAND = "plugins"


HELP = "installed plugins: version, components, load status"
EXAMPLES = ("hourglass plugins", "hourglass --strict-plugins plugins", "hourglass plugins --json",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass plugins``."""
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    """Print one row per plugin; 0 (a failed plugin is reported, not fatal, unless --strict-plugins)."""
    from hourglass.registry import PLUGIN_GROUP, plugin_statuses

    statuses = plugin_statuses()
    if args.json:
        print_json([
            {"name": s.name, "distribution": s.distribution, "version": s.version, "status": s.status,
             "components": list(s.components), "error": s.error}
            for s in statuses
        ])
        return 0
    if not statuses:
        print(f"no plugins installed (none registers entry-point group {PLUGIN_GROUP!r})")
        return 0
    rows = [
        [s.name, s.distribution or "-", s.version or "-", s.status, ", ".join(s.components) or "-"]
        for s in statuses
    ]
    print(format_table(["plugin", "distribution", "version", "status", "components"], rows))
    for s in statuses:
        if s.error:
            print(f"{s.name}: {s.error}")
    return 0
