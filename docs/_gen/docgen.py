"""Regenerate the generated parts of the docs, which are committed as plain Markdown.

Run from anywhere (it works on the repository it lives in)::

    python docs/_gen/docgen.py            # rewrite every generated page and region that changed
    python docs/_gen/docgen.py --check    # change nothing; exit 1 and list what is stale

What it writes:

* whole pages (:data:`PAGES`): ``docs/components.md`` (the registries), ``docs/recipes.md`` (the
  recipe schema), ``docs/cli.md`` (the argparse parser) and ``docs/benchmarks/index.md`` (the
  results under ``docs/benchmarks/``), each starting with a comment that says so;
* regions inside hand-written pages (``docs/**/*.md`` and ``README.md``), between a begin and an
  end marker::

      <!-- docgen:begin command: hourglass build recipes/quickstart.toml -->
      (a text block: the command and what it printed)
      <!-- docgen:end -->

  ``command: hourglass ARGS`` runs ``hourglass ARGS`` in this process from the repository root and
  expects exit status 0; ``command[2]: hourglass ARGS`` expects status 2 (an example of an error
  message); ``table: NAME`` is a table a generator writes (``table: backends``: the kernels and their backends). To add a region, write
  the two markers with nothing between them and run this script.

The output is the same on every machine: the script hides CUDA, clears ``HOURGLASS_*`` variables,
fixes the terminal width that argparse wraps usage lines to, and loads exactly the example plugins
under ``plugins/`` (their entry points read from their ``pyproject.toml``, their code from their
``src/``) whatever is installed, so the component catalogue lists the built-ins plus those two.
A command that exits with another status than its marker expects, or an unknown table, is an
error (exit 2); so is a region without its end marker.

``tests/test_docs.py`` runs ``--check`` and fails, naming this command, when a committed page is
stale.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCS = ROOT / "docs"
COMMAND = "python docs/_gen/docgen.py"
PLUGIN_GROUP = "hourglass.plugins"
WIDTH = "100"  # the terminal width argparse wraps usage lines to

#: ``<!-- docgen:begin KIND: ARG -->`` ... ``<!-- docgen:end -->``, each marker on a line of its own
REGION = re.compile(
    r"^<!-- docgen:begin (?P<kind>command|table)(?:\[(?P<status>\d+)\])?: (?P<arg>.+?) -->\n"
    r"(?P<body>.*?)"
    r"^<!-- docgen:end -->$",
    flags=re.S | re.M,
)
BEGIN = re.compile(r"^<!-- docgen:begin\b", flags=re.M)
END = re.compile(r"^<!-- docgen:end\b", flags=re.M)
#: the markers of the mkdocs hook this replaced: filled only on the built site, empty in the files
LEGACY = re.compile(r"^<!--\s*(?:hourglass(?:\[\d+\])?|docgen):\s", flags=re.M)

__all__ = [
    "PAGES", "COMMAND", "DocgenError", "example_plugins", "prepare", "page_header", "fill_regions",
    "regions", "region_problems", "run_command", "generate", "stale", "main",
]


class DocgenError(RuntimeError):
    """A region cannot be generated (unknown table, unexpected exit status, missing end marker)."""


# -- a fixed environment ---------------------------------------------------------------------------
class _ExampleDist:
    """The part of ``importlib.metadata.Distribution`` the plugin loader reads."""

    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


class _ExampleEntryPoint:
    """An entry point of an example plugin, read from its ``pyproject.toml`` (installed or not)."""

    def __init__(self, name: str, value: str, dist: _ExampleDist) -> None:
        self.name, self.value, self.group, self.dist = name, value, PLUGIN_GROUP, dist

    def load(self) -> Any:
        module, _, attr = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
        return obj


def example_plugins(root: Path = ROOT) -> list[_ExampleEntryPoint]:
    """The ``hourglass.plugins`` entry points of the example plugins ``root/plugins/hourglass-*``.

    Their ``src/`` folders are put first on ``sys.path``, so their code is this checkout's.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    found = []
    for pyproject in sorted((root / "plugins").glob("hourglass-*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        points = project.get("entry-points", {}).get(PLUGIN_GROUP, {})
        if not points:
            continue
        src = str(pyproject.parent / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
        dist = _ExampleDist(project["name"], project["version"])
        found += [_ExampleEntryPoint(name, value, dist) for name, value in sorted(points.items())]
    return found


def prepare(root: Path = ROOT) -> None:
    """Fix what the generated text could otherwise depend on; call before hourglass is imported.

    CUDA hidden, ``HOURGLASS_*`` variables cleared (backend choices, disabled plugins), a fixed
    terminal width, this checkout's ``hourglass`` first on ``sys.path``, and the plugin entry points
    replaced by :func:`example_plugins`.
    """
    import importlib.metadata

    if "hourglass.registry" in sys.modules:
        raise DocgenError(f"{COMMAND} must set up the environment before hourglass is imported")
    for key in [k for k in os.environ if k.startswith("HOURGLASS_")]:
        del os.environ[key]
    os.environ.update(CUDA_VISIBLE_DEVICES="", HOURGLASS_NO_PROGRESS="1", COLUMNS=WIDTH, LINES="50")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    plugins = example_plugins(root)
    original = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == PLUGIN_GROUP:
            return list(plugins)
        return original(**params)

    importlib.metadata.entry_points = entry_points  # type: ignore[assignment]


# -- what is generated -----------------------------------------------------------------------------
def _generators() -> tuple[dict[str, Callable[[], str]], dict[str, Callable[[], str]]]:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import docgen_benchmarks
    import docgen_catalogue
    import docgen_cli
    import docgen_recipes

    pages = {
        "docs/components.md": docgen_catalogue.catalogue_markdown,
        "docs/recipes.md": lambda: docgen_recipes.recipes_markdown(ROOT),
        "docs/cli.md": docgen_cli.cli_markdown,
        "docs/" + docgen_benchmarks.INDEX: lambda: docgen_benchmarks.benchmarks_markdown(DOCS, ROOT),
    }
    tables = {"backends": docgen_catalogue.backends_table}
    return pages, tables


#: the generated pages (path from the repository root) and what each is generated from
PAGES: dict[str, str] = {
    "docs/components.md": "the component registries (`hourglass.registry.REGISTRIES`: the built-ins and the "
                          "example plugins under `plugins/`)",
    "docs/recipes.md": "the recipe schema (`hourglass.recipe.Recipe`)",
    "docs/cli.md": "the argparse parser (`hourglass.cli.build_parser()`)",
    "docs/benchmarks/index.md": "the results under `docs/benchmarks/` and the scripts under `benchmarks/`",
}


def page_header(source: str) -> str:
    """The comment a generated page starts with."""
    return (f"<!-- Generated by `{COMMAND}` from {source}. Do not edit this file: change the source "
            "and run that command. -->\n\n")


def run_command(args: str, root: Path = ROOT) -> tuple[int, str]:
    """Run ``hourglass ARGS`` in-process from ``root``; ``(exit status, stdout + stderr)``."""
    from hourglass.cli import main

    out = io.StringIO()
    cwd = Path.cwd()
    os.chdir(root)  # the commands' paths (recipes/...) are relative to the repository root
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = main(shlex.split(args))
    finally:
        os.chdir(cwd)
    return int(status or 0), "\n".join(line.rstrip() for line in out.getvalue().rstrip().splitlines())


def regions(text: str) -> list[re.Match]:
    """The generated regions of a page's text."""
    return list(REGION.finditer(text))


def region_problems(markdown: str) -> list[str]:
    """What is wrong with a page's generated regions as committed: legacy markers, unbalanced or empty regions
    (the mkdocs hook and ``tests/test_docs.py`` report them)."""
    problems = []
    legacy = LEGACY.search(markdown)
    if legacy:
        problems.append(f"{legacy.group(0)!r} is an old marker that nothing fills any more; use "
                        "`<!-- docgen:begin command: hourglass ARGS -->` ... `<!-- docgen:end -->`")
    found = regions(markdown)
    if len(found) != len(BEGIN.findall(markdown)) or len(found) != len(END.findall(markdown)):
        problems.append("a `<!-- docgen:begin ... -->` marker without its `<!-- docgen:end -->` (or the reverse)")
    for region in found:
        if not region.group("body").strip():
            problems.append(f"the region `{region.group('kind')}: {region.group('arg')}` is empty")
    return [f"{p}; run `{COMMAND}`" for p in problems]


def _region_body(match: re.Match, where: str, tables: dict[str, Callable[[], str]]) -> str:
    kind, arg = match.group("kind"), match.group("arg").strip()
    if kind == "table":
        if match.group("status") is not None or arg not in tables:
            raise DocgenError(f"{where}: unknown docgen table {arg!r}; known: {', '.join(tables)}")
        return tables[arg]().rstrip()
    words = shlex.split(arg)
    if not words or words[0] != "hourglass":
        raise DocgenError(f"{where}: a docgen command runs `hourglass ...`, got {arg!r}")
    expected = int(match.group("status") or 0)
    status, output = run_command(shlex.join(words[1:]))
    if status != expected:
        raise DocgenError(f"{where}: `{arg}` exited with status {status}, expected {expected}:\n{output}")
    return f"```text\n$ {arg}\n{output}\n```"


def fill_regions(text: str, where: str, tables: dict[str, Callable[[], str]] | None = None) -> str:
    """``text`` with every region's content generated anew.

    Raises:
        DocgenError: a legacy marker, a begin marker without its end, or a region that cannot be generated.
    """
    if tables is None:
        tables = _generators()[1]
    legacy = LEGACY.search(text)
    if legacy:
        raise DocgenError(f"{where}: {legacy.group(0)!r} is the old marker that only the built site filled; "
                          "write `<!-- docgen:begin command: hourglass ARGS -->` + `<!-- docgen:end -->`")
    found = regions(text)
    if len(found) != len(BEGIN.findall(text)) or len(found) != len(END.findall(text)):
        raise DocgenError(f"{where}: every `<!-- docgen:begin KIND: ARG -->` needs one `<!-- docgen:end -->` after it")

    def replace(match: re.Match) -> str:
        begin = match.group(0).split("\n", 1)[0]
        return f"{begin}\n\n{_region_body(match, where, tables)}\n\n<!-- docgen:end -->"

    return REGION.sub(replace, text)


def _hand_written(root: Path) -> list[Path]:
    generated = {root / p for p in PAGES}
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in pages if p.is_file() and p not in generated and "_gen" not in p.parts]


def generate(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's expected text: the generated pages, and each hand-written page with regions.

    Call :func:`prepare` first for the deterministic result (``main`` does).
    """
    pages, tables = _generators()
    if set(pages) != set(PAGES):  # pragma: no cover - kept in step by hand
        raise DocgenError(f"PAGES {sorted(PAGES)} and the generators {sorted(pages)} differ")
    out: dict[Path, str] = {}
    for rel, make in pages.items():
        out[root / rel] = page_header(PAGES[rel]) + make()
    for page in _hand_written(root):
        text = page.read_text(encoding="utf-8")
        if BEGIN.search(text) or END.search(text) or LEGACY.search(text):
            out[page] = fill_regions(text, str(page.relative_to(root)), tables)
    return out


def stale(expected: dict[Path, str]) -> dict[Path, str]:
    """The files whose text on disk differs from ``expected``: path -> a short unified diff."""
    found = {}
    for path, text in expected.items():
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1)
            lines = list(diff)
            found[path] = "\n".join(lines[:40] + ([f"... ({len(lines) - 40} more diff lines)"] if len(lines) > 40 else []))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Regenerate the generated pages and regions of the docs.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    parser.add_argument("--diff", action="store_true", help="with --check: show what differs")
    args = parser.parse_args(argv)
    prepare(ROOT)
    try:
        expected = generate(ROOT)
    except DocgenError as exc:
        print(f"{COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    changed = stale(expected)
    for path, diff in changed.items():
        rel = path.relative_to(ROOT)
        if args.check:
            print(f"stale: {rel}" + (f"\n{diff}" if args.diff else ""))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path], encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and changed:
        print(f"{len(changed)} generated file(s) are stale: run `{COMMAND}` and commit the result", file=sys.stderr)
        return 1
    if not changed:
        print(f"all {len(expected)} generated files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
