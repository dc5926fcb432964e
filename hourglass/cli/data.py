"""``hourglass data``: prepare training data, one sub-command per task.

* ``shards FOLDER OUT``: write an image folder as WebDataset tar shards (``type = "webdataset"``).

Each sub-command is a module ``hourglass.cli.data_<name>`` (listed in :data:`SUBCOMMANDS`) that
declares ``HELP``, ``EXAMPLES``, ``add_arguments(parser)`` and ``run(args)``, like a command.
"""

from __future__ import annotations

import argparse

from hourglass.cli._common import example_epilog

__all__ = ["HELP", "EXAMPLES", "SUBCOMMANDS", "add_arguments", "run"]

COMMAND = "data"
#: sub-command modules of ``hourglass data`` (``data_shards``: ``hourglass data shards``)
SUBCOMMANDS: tuple[str, ...] = ("data_shards",)

HELP = "prepare training data (WebDataset shards of an image folder, ...)"
EXAMPLES = ("hourglass data shards data/ffhq256/ shards/ffhq256 --classes none --samples-per-shard 4",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per module of :data:`SUBCOMMANDS`."""
    from hourglass.cli import _load  # the command loader: modules of this package only

    tasks = parser.add_subparsers(dest="task", metavar="TASK", title="tasks", required=True)
    for name in SUBCOMMANDS:
        module = _load(name)
        sub = tasks.add_parser(
            name.removeprefix("data_"),
            help=module.HELP,
            description=module.__doc__,
            epilog=example_epilog(*module.EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_task=module)


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command."""
    return int(args._task.run(args) or 0)
