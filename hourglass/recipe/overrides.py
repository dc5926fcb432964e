"""Dotted overrides (``--set train.lr=1e-4 --set model.levels[0].depth=3``) on plain recipe data.

An override edits the TOML data *before* validation, so it goes through exactly the checks a
recipe file does. Values are read as TOML values (``1e-4``, ``[2, 11]``, ``{type = "global"}``,
``true``), falling back to plain strings (``global``, ``/data/ffhq``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import Any

from hourglass.recipe.toml import parse_value

__all__ = ["OverrideError", "parse_path", "format_path", "apply_override", "apply_overrides", "lookup", "Retype"]

#: ``retype(data, component_path, old_table, new_type) -> names of the old options to keep``, or None
#: when the new type is not known (then the component starts afresh); ``data`` is the whole recipe
#: data before the change
Retype = Callable[[dict, list, dict, Any], "Iterable[str] | None"]

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|(\.)")


class OverrideError(ValueError):
    """A malformed ``--set`` expression or a path that cannot be followed; ``path`` names where."""

    def __init__(self, path: str, value: Any, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.value = value
        self.message = message


def parse_path(path: str) -> list[str | int]:
    """Split ``"model.levels[1].attention.kernel_size"`` into ``["model", "levels", 1, "attention", "kernel_size"]``.

    Raises:
        OverrideError: for empty paths, stray dots or brackets, or non-integer indices.
    """
    text = path.strip()
    parts: list[str | int] = []
    pos = 0
    expect_name = True  # a name must follow the start or a dot
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise OverrideError(
                path, None, f"cannot read the key at character {pos + 1} ({text[pos:]!r}); write keys as "
                "section.key, list items as key[0], e.g. model.levels[0].depth"
            )
        name, index, dot = match.groups()
        if name is not None:
            if not expect_name:
                raise OverrideError(path, None, f"a '.' is missing before {name!r}")
            parts.append(name)
            expect_name = False
        elif index is not None:
            if expect_name:
                raise OverrideError(path, None, "an index [N] must follow a key, e.g. model.levels[0]")
            parts.append(int(index))
        else:
            if expect_name:
                raise OverrideError(path, None, "empty key between dots; write e.g. train.lr")
            expect_name = True
        pos = match.end()
    if not parts or expect_name:
        raise OverrideError(path, None, "the key is empty or ends with '.'; write e.g. train.lr=1e-4")
    return parts


def format_path(parts: Iterable[str | int]) -> str:
    """Inverse of :func:`parse_path`: ``["model", "levels", 1]`` -> ``"model.levels[1]"``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def lookup(data: Any, parts: Iterable[str | int]) -> Any:
    """The value at ``parts`` inside nested dicts/lists, or ``None`` where the path does not exist."""
    node = data
    for part in parts:
        if isinstance(part, int) and isinstance(node, list) and -len(node) <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def apply_override(data: dict[str, Any], path: str, value: Any, *, retype: Retype | None = None) -> None:
    """Set ``value`` at dotted ``path`` inside ``data`` (in place), creating missing tables.

    An index equal to the list's length appends (``model.levels[2].depth=2`` on a 2-level model
    adds a level). Setting a component's ``type`` to a different name keeps the options that
    ``retype`` names (those the new type also has; see :func:`hourglass.recipe.apply_overrides`)
    and drops the rest; without ``retype`` the component starts afresh from the new type's defaults.

    Raises:
        OverrideError: if the path runs through a value that is not a table or list, or an index
            is out of range.
    """
    parts = parse_path(path)
    node: Any = data
    for depth, (part, nxt) in enumerate(zip(parts[:-1], parts[1:], strict=True)):
        here = format_path(parts[: depth + 1])
        fresh: Any = [] if isinstance(nxt, int) else {}
        if isinstance(part, int):
            if not isinstance(node, list):
                raise OverrideError(here, None, f"{format_path(parts[:depth]) or 'this'} is not a list")
            part = _index(node, part, here, path)
            if part == len(node):
                node.append(fresh)
            if not isinstance(node[part], (dict, list)):
                node[part] = fresh
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise OverrideError(here, None, f"{format_path(parts[:depth])} is not a table, so it has no key {part!r}")
            child = node.get(part)
            if isinstance(child, str) and isinstance(nxt, str):
                child = {"type": child}  # a component given by name becomes a table to set options on
            elif not isinstance(child, (dict, list)):
                child = fresh
            node[part] = child
            node = child
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list):
            raise OverrideError(path, value, f"{format_path(parts[:-1])} is not a list")
        last = _index(node, last, path, path)
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
        return
    if not isinstance(node, dict):
        raise OverrideError(path, value, f"{format_path(parts[:-1])} is not a table")
    if last == "type" and len(parts) > 1 and node.get("type") not in (None, value):
        keep = retype(data, parts[:-1], dict(node), value) if retype is not None else None
        keep = set(keep or ())
        for key in [k for k in node if k not in keep]:
            del node[key]  # options the new type does not have
    node[last] = value


def _index(node: list, index: int, here: str, path: str) -> int:
    if index < 0:
        index += len(node)
    if not 0 <= index <= len(node):
        raise OverrideError(
            here, None, f"index out of range: the list has {len(node)} item(s); use 0..{len(node)} "
            f"({len(node)} appends a new item)"
        )
    return index


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]], *, retype: Retype | None = None
) -> dict[str, Any]:
    """Return a copy of ``data`` with every override applied, in order.

    Args:
        data: recipe data as read from TOML.
        overrides: ``"path=value"`` strings (values read as TOML, else as strings) or
            ``(path, value)`` pairs (values used as given).
        retype: decides which options a component keeps when its ``type`` changes (see
            :func:`apply_override`).
    Raises:
        OverrideError: for the first malformed override.
    """
    out = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, str):
            if "=" not in item:
                raise OverrideError(
                    item, None, "an override needs the form key=value, e.g. --set train.lr=1e-4"
                )
            path, text = item.split("=", 1)
            value = parse_value(text.strip())
        else:
            path, value = item
        apply_override(out, path.strip(), value, retype=retype)
    return out
