"""``hourglass data``: prepare training data, one sub-command per job.

* ``latents SOURCE OUT``: encode a dataset with a VAE into latent shards (the latents of every image and
  of its horizontal flip, with class ids) that the ``latents`` dataset trains on
  (:mod:`hourglass.cli.data_latents`).

Each sub-command is a module ``hourglass.cli.data_<name>`` listed in :data:`SUBCOMMANDS`, declaring
``HELP``, ``EXAMPLES``, ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from hourglass.cli._common import example_epilog

__all__ = ["HELP", "EXAMPLES", "SUBCOMMANDS", "add_arguments", "run"]

COMMAND = "data"
HELP = "prepare training data: encode a dataset into latent shards with a VAE"
#: sub-command modules (``hourglass.cli.data_<name>`` is ``hourglass data <name>``), in --help order
SUBCOMMANDS: tuple[str, ...] = ("data_latents",)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"hourglass.cli.{name}")


EXAMPLES: tuple[str, ...] = tuple(example for name in SUBCOMMANDS for example in _module(name).EXAMPLES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hourglass data``: one sub-command per module of :data:`SUBCOMMANDS`."""
    jobs = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="sub-commands", required=True)
    for name in SUBCOMMANDS:
        module = _module(name)
        sub = jobs.add_parser(
            name.removeprefix("data_"),
            help=module.HELP,
            description=module.__doc__,
            epilog=example_epilog(*module.EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_data_module=module)


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command."""
    return int(args._data_module.run(args) or 0)
