"""The ``hourglass`` command line (console script ``hourglass``, also ``python -m hourglass``).

Each command is a module of this package listed in :data:`COMMANDS`; it declares ``HELP`` (one
line for ``hourglass --help``), ``EXAMPLES`` (command lines shown under its own ``--help``, after
the module docstring), ``add_arguments(parser)`` and ``run(args) -> int``, and may set ``COMMAND``
when its name differs from the module's. User errors (:class:`CLIError`,
``RecipeError``, ``RegistryError``, ``PluginError``, ``CheckpointError``) are printed without a
traceback, on one line (a recipe error with several problems: one line per problem), and exit
with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from hourglass.cli._common import EXIT_USAGE, CLIError, example_epilog

__all__ = ["COMMANDS", "main", "build_parser", "CLIError"]

#: command modules, in the order ``hourglass --help`` lists them; append new commands here.
COMMANDS: tuple[str, ...] = (
    "build", "validate", "flops", "catalog", "show", "plugins", "convert", "train", "sample", "eval", "export",
    "export_onnx", "data",
)

_DESCRIPTION = """\
Hourglass Diffusion Transformers: build, inspect, train and sample pixel-space diffusion models
described by one TOML recipe (see recipes/). Run `hourglass COMMAND --help` for each command."""

_EPILOG = """\
examples:
  hourglass build recipes/hdit_ffhq1024.toml          # per-level table: grid, layers, params, GMACs
  hourglass build hdit_l --resolution 512 --json     # a preset at another size, as JSON
  hourglass validate recipes/*.toml --no-data-check  # every problem of every file (data not looked for)
  hourglass flops recipes/hdit_imagenet128.toml --resolution 128 256 512 --grow
  hourglass list attention                           # registered components and who provides them
  hourglass show neighborhood                        # a component's options and defaults
  hourglass convert k-diffusion config.json model.safetensors out/

exit status: 0 success, 1 failure while running, 2 a problem with the input (printed without a traceback)."""


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command of :data:`COMMANDS`."""
    from hourglass import __version__

    parser = argparse.ArgumentParser(
        prog="hourglass", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hourglass {__version__}")
    parser.add_argument(
        "--strict-plugins", action="store_true",
        help="fail (exit 2) if any plugin of entry-point group hourglass.plugins fails to load, "
        "instead of warning and carrying on",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module = _load(name)
        sub = subparsers.add_parser(
            getattr(module, "COMMAND", name), help=module.HELP, description=module.__doc__,
            epilog=example_epilog(*module.EXAMPLES), formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def _strict_plugins() -> None:
    from hourglass.registry import PluginError, load_plugins

    failed = [s for s in load_plugins(strict=True) if s.status == "failed"]
    if failed:
        raise PluginError(
            "strict plugin mode: "
            + "; ".join(f"plugin {s.name!r} ({s.distribution or 'unknown distribution'}) failed: {s.error}"
                        for s in failed)
            + ". Fix or uninstall the plugin, or disable it with HOURGLASS_DISABLE_PLUGINS=name"
        )


def _user_errors() -> tuple[type[BaseException], ...]:
    from hourglass.recipe import RecipeError
    from hourglass.registry import PluginError, RegistryError
    from hourglass.train.checkpoint import CheckpointError

    errors: list[type[BaseException]] = [CLIError, RecipeError, RegistryError, PluginError, CheckpointError]
    try:
        from hourglass.backends import BackendUnavailableError

        errors.append(BackendUnavailableError)
    except ImportError:  # pragma: no cover - backends is part of the package
        pass
    return tuple(errors)


def _one_message(exc: BaseException) -> str:
    """The error's text; a recipe error with a single problem on one line (``recipe X: path = v: ...``)."""
    from hourglass.recipe import RecipeError

    if isinstance(exc, RecipeError) and len(exc.problems) == 1:
        where = f"recipe {exc.source}: " if exc.source else "recipe: "
        problem = exc.problems[0]
        return where + (problem.text if not problem.path else str(problem))
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hourglass`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Args:
        argv: command-line arguments without the program name.
    Returns:
        0 on success, 1 when a command fails while running, 2 for input problems.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, or an argparse usage error (already printed)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "_module", None):
        parser.print_help()
        return EXIT_USAGE
    command = args.command
    previous_format = warnings.formatwarning
    warnings.formatwarning = _warning_line(command)
    try:
        if args.strict_plugins:
            _strict_plugins()
        return int(args._module.run(args) or 0)
    except _user_errors() as exc:
        print(f"hourglass {command}: error: {_one_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"hourglass {command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


def _warning_line(command: str) -> Any:
    """``warnings.formatwarning`` for the CLI: ``hourglass CMD: warning: message`` on one line (no source line)."""

    def format_warning(message: Any, category: Any, filename: str, lineno: int, line: str | None = None) -> str:
        return f"hourglass {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning
