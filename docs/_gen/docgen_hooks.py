"""mkdocs hooks: generate the reference pages on every build, so they never go stale.

Registered in ``mkdocs.yml`` under ``hooks:``. On each build:

* ``on_config`` adds the Reliability page to the nav when ``docs/reliability.md`` exists;
* ``on_files`` adds the generated pages: ``components.md`` (from the registries, plugins
  included), ``recipes.md`` (from the recipe schema), ``cli.md`` (from the argparse parser) and
  ``benchmarks/index.md`` (from whatever results exist under ``docs/benchmarks/``);
* ``on_page_markdown`` replaces ``<!-- hourglass: ARGS -->`` markers with the output of
  ``hourglass ARGS``, run in-process when the page is built (``<!-- hourglass[2]: ARGS -->``
  expects exit status 2: an example of an error message), and ``<!-- docgen: NAME -->`` markers
  with the table :data:`SNIPPETS` ``[NAME]`` generates.

A generator that raises fails the build (never a silently stale page); a marker whose command
exits with another status than expected, or names no snippet, logs a warning, which
``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the generator modules live beside this hook
    sys.path.insert(0, str(HERE))

import docgen_benchmarks  # noqa: E402
import docgen_catalogue  # noqa: E402
import docgen_cli  # noqa: E402
import docgen_recipes  # noqa: E402

__all__ = ["GENERATED", "SNIPPETS", "on_config", "on_files", "on_page_markdown", "run_marker", "reliability_nav"]

log = logging.getLogger("mkdocs.hooks.hourglass")
ROOT = HERE.parents[1]
MARKER = re.compile(r"<!--\s*hourglass(?:\[(\d+)\])?:\s*(.+?)\s*-->")
SNIPPET = re.compile(r"<!--\s*docgen:\s*([\w-]+)\s*-->")

#: generated pages: docs path -> function(docs_dir) returning the Markdown
GENERATED: dict[str, Callable[[Path], str]] = {
    "components.md": lambda docs: docgen_catalogue.catalogue_markdown(),
    "recipes.md": lambda docs: docgen_recipes.recipes_markdown(ROOT),
    "cli.md": lambda docs: docgen_cli.cli_markdown(),
    docgen_benchmarks.INDEX: lambda docs: docgen_benchmarks.benchmarks_markdown(docs, ROOT),
}

#: tables generated into hand-written pages: ``<!-- docgen: NAME -->`` -> Markdown
SNIPPETS: dict[str, Callable[[], str]] = {
    "backends": docgen_catalogue.backends_table,
}


def reliability_nav(nav: list[Any], docs_dir: Path) -> list[Any]:
    """``nav`` with a Reliability entry before the API reference when ``reliability.md`` exists.

    Args:
        nav: the ``nav`` list of ``mkdocs.yml`` (dicts of title -> path or list).
        docs_dir: the docs folder.
    Returns:
        A new list; unchanged when the page is absent or already listed.
    """
    if not (docs_dir / "reliability.md").is_file():
        return list(nav)
    if any(isinstance(e, dict) and "reliability.md" in e.values() for e in nav):
        return list(nav)
    out = list(nav)
    position = next((i for i, e in enumerate(out) if isinstance(e, dict) and "API reference" in e), len(out))
    out.insert(position, {"Reliability": "reliability.md"})
    return out


def on_config(config: Any) -> Any:
    """Add Reliability to the nav when its page exists."""
    if config.nav is not None:
        config.nav = reliability_nav(config.nav, Path(config.docs_dir))
    return config


def on_files(files: Files, config: Any) -> Files:
    """Generate the reference pages into the build's file collection."""
    docs_dir = Path(config.docs_dir)
    for uri, generate in GENERATED.items():
        start = time.perf_counter()
        content = generate(docs_dir)
        existing = files.get_file_from_path(uri)
        if existing is not None:  # a page on disk with this name is replaced by the generated one
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
        log.debug("generated %s in %.2f s", uri, time.perf_counter() - start)
    return files


def run_marker(args: str) -> tuple[int, str]:
    """Run ``hourglass ARGS`` in-process from the repository root; ``(exit status, stdout + stderr)``."""
    from hourglass.cli import main

    out = io.StringIO()
    cwd = Path.cwd()
    os.chdir(ROOT)  # the commands' paths (recipes/...) are relative to the repository root
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = main(shlex.split(args))
    finally:
        os.chdir(cwd)
    return status, out.getvalue().rstrip()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Replace ``<!-- hourglass: ARGS -->`` with a text block of that command's live output."""

    def command(match: re.Match) -> str:
        expected, args = int(match.group(1) or 0), match.group(2)
        status, output = run_marker(args)
        if status != expected:
            log.warning("%s: `hourglass %s` exited with status %s, expected %s: %s",
                        page.file.src_uri, args, status, expected, output)
        return f"```text\n$ hourglass {args}\n{output}\n```"

    def snippet(match: re.Match) -> str:
        name = match.group(1)
        if name not in SNIPPETS:
            log.warning("%s: unknown docgen snippet %r; known: %s", page.file.src_uri, name, ", ".join(SNIPPETS))
            return match.group(0)
        return SNIPPETS[name]()

    return SNIPPET.sub(snippet, MARKER.sub(command, markdown))
