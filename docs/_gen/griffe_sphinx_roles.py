"""A griffe extension that makes reST leftovers in Google-style docstrings render as Markdown.

mkdocstrings renders docstrings as Markdown, but many of hourglass's docstrings use Sphinx roles
(``:class:`RecipeError```, ``:func:`load_recipe```) and reST literal-block markers
(``Its items are dicts::``). Without help those show up verbatim on the API pages. This extension,
listed under ``extensions`` of the mkdocstrings Python handler in ``mkdocs.yml``, rewrites the
docstrings griffe loads (the source files are untouched):

* ``:role:`~a.b.Name``` and ``:role:`Name``` become the code span ```Name``` / ```a.b.Name```;
* a paragraph ending in ``::`` ends in ``:`` (the indented block after it is already code).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

__all__ = ["SphinxRoles", "rewrite"]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const|term):`(~?)([^`]+)`")
_LITERAL_MARKER = re.compile(r"(?<=\S)::[ \t]*$", flags=re.M)


def _role(match: re.Match) -> str:
    tilde, target = match.group(1), match.group(2).strip()
    if tilde:  # reST: ~a.b.Name shows only Name
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def rewrite(text: str) -> str:
    """``text`` with Sphinx roles as code spans and ``::`` literal markers as ``:``."""
    return _LITERAL_MARKER.sub(":", _ROLE.sub(_role, text))


class SphinxRoles(Extension):
    """Rewrite each loaded object's docstring with :func:`rewrite`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Called by griffe for every object it loads."""
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = rewrite(docstring.value)
