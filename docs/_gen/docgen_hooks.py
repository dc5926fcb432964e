"""mkdocs hooks: the nav's Reliability entry, and checks that the committed generated docs are complete.

Registered in ``mkdocs.yml`` under ``hooks:``. The generated pages (``components.md``,
``recipes.md``, ``cli.md``, ``benchmarks/index.md``) and the generated regions inside hand-written
pages are committed Markdown, written by ``python docs/_gen/docgen.py`` (see that module); the build
renders them as they are, so the site and the files in the repository read the same. On each build:

* ``on_config`` adds the Reliability page to the nav when ``docs/reliability.md`` exists;
* ``on_files`` warns when a generated page is missing;
* ``on_page_markdown`` warns about a region without its end marker, an empty region, and the
  markers of the older hook (``<!-- hourglass: ARGS -->``), which nothing fills any more.

``mkdocs build --strict`` turns those warnings into a failure. Whether the committed text is up to
date is checked by ``python docs/_gen/docgen.py --check`` (and ``tests/test_docs.py``), not here:
it runs every documented command, which a ``mkdocs serve`` rebuild should not wait for.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import Files

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # docgen lives beside this hook
    sys.path.insert(0, str(HERE))

import docgen  # noqa: E402

__all__ = ["on_config", "on_files", "on_page_markdown", "reliability_nav"]

log = logging.getLogger("mkdocs.hooks.hourglass")


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
    """Warn about a generated page that is not in the docs folder."""
    for rel in docgen.PAGES:
        uri = rel.removeprefix("docs/")
        if files.get_file_from_path(uri) is None:
            log.warning("the generated page %s is missing: run `%s`", uri, docgen.COMMAND)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Warn about broken generated regions; the Markdown is rendered as committed."""
    for problem in docgen.region_problems(markdown):
        log.warning("%s: %s", page.file.src_uri, problem)
    return markdown
