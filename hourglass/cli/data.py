"""``hourglass data``: prepare training data, one sub-command per task.

* ``shards FOLDER OUT``: write an image folder as WebDataset tar shards (``type = "webdataset"``)
  (:mod:`hourglass.cli.data_shards`).
* ``latents SOURCE OUT``: encode a dataset with a VAE into latent shards (the latents of every image
  and of its horizontal flip, with class ids) that the ``latents`` dataset trains on
  (:mod:`hourglass.cli.data_latents`).

Each sub-command is a module ``hourglass.cli.data_<name>`` (listed in :data:`SUBCOMMANDS`) that
declares ``HELP``, ``EXAMPLES``, ``add_arguments(parser)`` and ``run(args)``, like a command.
"""

from __future__ import annotations

import argparse

from hourglass.cli import _load  # the command loader: modules of this package only
from hourglass.cli._common import example_epilog

__all__ = ["HELP", "EXAMPLES", "SUBCOMMANDS", "add_arguments", "run"]

COMMAND = "data"
#: sub-command modules of ``hourglass data`` (``data_shards``: ``hourglass data shards``), in --help order
SUBCOMMANDS: tuple[str, ...] = ("data_shards", "data_latents")

HELP = "prepare training data: WebDataset shards of an image folder, latent shards encoded with a VAE"
EXAMPLES: tuple[str, ...] = tuple(example for name in SUBCOMMANDS for example in _load(name).EXAMPLES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per module of :data:`SUBCOMMANDS`."""
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
