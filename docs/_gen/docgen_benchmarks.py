"""Generate the Benchmarks page (``benchmarks/index.md``) from whatever results exist when it is generated.

Benchmark scripts (``benchmarks/*.py``) write Markdown tables and PNG plots under
``docs/benchmarks/``. This page inlines every ``docs/benchmarks/*.md`` (headings moved one level
down), shows every PNG there that no results page already shows, and lists the scripts with the
command that regenerates each. With no results yet the page says so, and the build still passes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from docgen_common import md_text

__all__ = ["INDEX", "result_pages", "benchmarks_markdown"]

#: where the generated page lives in the docs tree (beside the results, so their relative links hold)
INDEX = "benchmarks/index.md"

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#{1,5})(\s)")


def result_pages(docs_dir: Path) -> list[Path]:
    """The results pages ``docs/benchmarks/*.md`` (sorted, the index itself excluded)."""
    folder = docs_dir / "benchmarks"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.md") if p.name != "index.md")


def _demote(text: str) -> str:
    """Move ATX headings one level down (``#`` -> ``##``), leaving fenced code alone."""
    out, fence = [], None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            marker = match.group(2)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
        elif fence is None:
            line = _HEADING.sub(lambda m: "#" + m.group(1) + m.group(2), line)
        out.append(line)
    return "\n".join(out)


def _script_summary(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (SyntaxError, UnicodeDecodeError):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _scripts_section(root: Path) -> list[str]:
    scripts = sorted(p for p in (root / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        return []
    lines = ["## Benchmark scripts", "", "| script | measures | run |", "|---|---|---|"]
    for script in scripts:
        rel = script.relative_to(root).as_posix()
        summary = md_text(_script_summary(script)).replace("|", "&#124;")
        lines.append(f"| `{rel}` | {summary} | `python3 {rel} --help` |")
    return lines + [""]


def benchmarks_markdown(docs_dir: Path, root: Path) -> str:
    """The Benchmarks page as Markdown.

    Args:
        docs_dir: the docs folder (results are read from ``docs_dir/benchmarks``).
        root: the repository root (the scripts are listed from ``root/benchmarks``).
    """
    folder = docs_dir / "benchmarks"
    pages = result_pages(docs_dir)
    lines = ["# Benchmarks", ""]
    lines += [
        "Measurements written by the scripts in `benchmarks/`: each writes its tables (Markdown) and plots "
        "(PNG) into `docs/benchmarks/`, and this page, regenerated with `python docs/_gen/docgen.py`, shows "
        "whatever is there. Timings depend on the machine and its load: compare numbers within one table, and "
        "see each table's notes for where and how it was measured.",
        "",
    ]
    shown: set[str] = set()
    if pages:
        lines += ["Results below (each also has a page of its own):", ""]
        for page in pages:
            text = page.read_text(encoding="utf-8")
            title = re.search(r"^# (.+)$", text, flags=re.M)
            label = title.group(1).strip() if title else page.stem
            lines.append(f"- [{label}]({page.name}) (`docs/benchmarks/{page.name}`)")
        lines.append("")
        for page in pages:
            text = page.read_text(encoding="utf-8")
            shown.update(re.findall(r"[\w./-]+\.png", text))
            if not re.search(r"^# ", text, flags=re.M):
                lines += [f"## {page.stem.replace('_', ' ').capitalize()}", ""]
            lines += [_demote(text).strip(), ""]
    else:
        lines += [
            "!!! note \"No results yet\"",
            "    No benchmark has written results into `docs/benchmarks/` yet. Run a script below, then "
            "`python docs/_gen/docgen.py`.",
            "",
        ]
    plots = sorted(p for p in folder.glob("*.png") if p.name not in {Path(s).name for s in shown}) if folder.is_dir() else []
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            lines += [f"![{plot.stem}]({plot.name})", ""]
    lines += _scripts_section(root)
    return "\n".join(lines) + "\n"
