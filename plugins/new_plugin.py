"""Create a new hourglass plugin from ``plugins/template`` (a small cookiecutter).

Usage::

    python plugins/new_plugin.py NAME [--dest DIR]

``NAME`` is the plugin's snake_case name, e.g. ``my_ffn``. The template's placeholders become:

==========================  ===========================  =====================
placeholder                 becomes (``NAME = my_ffn``)  where
==========================  ===========================  =====================
``hourglass-myplugin``      ``hourglass-my-ffn``         distribution, folder
``MyPlugin``                ``MyFfn``                    class names
``myplugin``                ``my_ffn``                   package, entry point,
                                                         component, test file
==========================  ===========================  =====================

The new plugin lands in ``DIR/hourglass-<name-with-dashes>`` (``DIR`` defaults to this script's
folder, ``plugins/``); an existing folder is never overwritten.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

__all__ = ["PLACEHOLDER", "TEMPLATE", "create_plugin", "substitutions", "main"]

PLACEHOLDER = "myplugin"
TEMPLATE = Path(__file__).resolve().parent / "template"
_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_SKIP = {"__pycache__", ".pytest_cache", "build", "dist"}


def substitutions(name: str) -> list[tuple[str, str]]:
    """The ``(placeholder, replacement)`` pairs for plugin ``name``, in the order they apply.

    Args:
        name: snake_case plugin name, e.g. ``"my_ffn"``.

    Returns:
        ``[("hourglass-myplugin", "hourglass-my-ffn"), ("MyPlugin", "MyFfn"), ("myplugin", "my_ffn")]``.

    Raises:
        ValueError: ``name`` is not snake_case (lower-case letters, digits, single underscores,
            starting with a letter) or starts with ``hourglass``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"plugin name {name!r} must be snake_case: lower-case letters and digits separated by single "
            "underscores, starting with a letter (e.g. my_ffn)"
        )
    if name.startswith("hourglass"):
        raise ValueError(f"plugin name {name!r}: leave out the 'hourglass' prefix, it is added for you (e.g. my_ffn)")
    camel = "".join(part.capitalize() for part in name.split("_"))
    return [
        (f"hourglass-{PLACEHOLDER}", "hourglass-" + name.replace("_", "-")),
        ("MyPlugin", camel),
        (PLACEHOLDER, name),
    ]


def _apply(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def create_plugin(name: str, dest: Path | str | None = None, template: Path | str = TEMPLATE) -> Path:
    """Copy ``template`` to ``dest/hourglass-<name>``, replacing the placeholders in names and text.

    Args:
        name: snake_case plugin name.
        dest: parent folder of the new plugin; default: the folder holding the template.
        template: the template folder.

    Returns:
        The new plugin's folder.

    Raises:
        ValueError: a bad ``name``.
        FileExistsError: the target folder already exists.
        FileNotFoundError: no template folder.
    """
    pairs = substitutions(name)
    template = Path(template)
    if not (template / "pyproject.toml").is_file():
        raise FileNotFoundError(f"no plugin template at {template} (expected {template / 'pyproject.toml'})")
    parent = Path(dest) if dest is not None else template.parent
    target = parent / _apply(f"hourglass-{PLACEHOLDER}", pairs)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another name or --dest, or remove it first")
    for source in sorted(template.rglob("*")):
        rel = source.relative_to(template)
        if any(part in _SKIP or part.endswith(".egg-info") for part in rel.parts):
            continue
        out = target / Path(*(_apply(part, pairs) for part in rel.parts))
        if source.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.write_text(_apply(source.read_text(encoding="utf-8"), pairs), encoding="utf-8")
        except UnicodeDecodeError:  # a binary file: copy it as is
            shutil.copyfile(source, out)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python plugins/new_plugin.py NAME [--dest DIR]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Create an hourglass plugin from plugins/template.",
        epilog="example: python plugins/new_plugin.py my_ffn  ->  plugins/hourglass-my-ffn/",
    )
    parser.add_argument("name", help="snake_case plugin name, e.g. my_ffn")
    parser.add_argument("--dest", type=Path, default=None, help="parent folder of the new plugin (default: plugins/)")
    args = parser.parse_args(argv)
    try:
        target = create_plugin(args.name, args.dest)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"new_plugin: error: {exc}", file=sys.stderr)
        return 2
    print(f"created {target}")
    print(f"next: pip install -e {target}  &&  hourglass list  &&  python -m pytest {target / 'tests'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
