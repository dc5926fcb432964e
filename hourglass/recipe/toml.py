"""A small TOML writer and the TOML parsing helpers of :mod:`hourglass.recipe`.

Python 3.11's ``tomllib`` reads TOML but cannot write it; recipes only need plain data (tables,
arrays, strings, numbers, booleans), so a writer of that subset lives here instead of a dependency.
Top-level sections become ``[section]`` headers, nested tables ``[section.key]`` headers, lists of
tables ``[[section.key]]`` blocks, and tables inside those blocks inline tables (so a level reads
``attention = { type = "neighborhood", kernel_size = 7 }``).
"""

from __future__ import annotations

import math
import re
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 fallback
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["dumps", "loads", "parse_value", "value_text", "TOMLDecodeError", "toml_location"]

TOMLDecodeError = tomllib.TOMLDecodeError
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LOCATION = re.compile(r"\(at line (\d+), column (\d+)\)")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def loads(text: str) -> dict[str, Any]:
    """Parse TOML ``text`` into plain Python data (``tomllib.loads``)."""
    return tomllib.loads(text)


def toml_location(error: Exception) -> tuple[int, int] | None:
    """``(line, column)`` of a ``TOMLDecodeError`` (1-based), parsed from its message if needed."""
    line, col = getattr(error, "lineno", None), getattr(error, "colno", None)
    if isinstance(line, int) and isinstance(col, int):
        return line, col
    match = _LOCATION.search(str(error))
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_value(text: str) -> Any:
    """Read a command-line value as a TOML value, falling back to the plain string.

    ``"1e-4"`` -> ``0.0001``, ``"[2, 11]"`` -> ``[2, 11]``, ``"{type = 'global'}"`` -> a dict,
    ``"true"`` -> ``True``, ``"global"`` (not valid TOML) -> ``"global"``.
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)  # shortest text that reads back to the same float
    if "." not in text and "e" not in text and "E" not in text:
        text += ".0"
    return text


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_table(v) for v in value)


def value_text(value: Any) -> str:
    """One TOML value (scalars, arrays and inline tables).

    Raises:
        TypeError: for ``None`` or types TOML cannot hold (say which, so the caller can drop them).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{_key(k)} = {value_text(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"TOML cannot hold {type(value).__name__} value {value!r}")


def _header(path: list[str]) -> str:
    return ".".join(_key(p) for p in path)


def _write_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    """Write ``table`` (already under its header): plain keys first, then sub-tables and table arrays."""
    for key, value in table.items():
        if value is None or _is_table(value) or _is_table_array(value):
            continue
        lines.append(f"{_key(key)} = {value_text(value)}")
    for key, value in table.items():
        if _is_table(value):
            if lines and lines[-1] != "":
                lines.append("")
            lines.append(f"[{_header(path + [key])}]")
            _write_table(lines, path + [key], value)
    for key, value in table.items():
        if _is_table_array(value):
            for item in value:
                if lines and lines[-1] != "":
                    lines.append("")
                lines.append(f"[[{_header(path + [key])}]]")
                for k, v in item.items():  # tables inside an array element stay inline
                    if v is not None:
                        lines.append(f"{_key(k)} = {value_text(v)}")


def dumps(data: dict[str, Any], header: str = "") -> str:
    """Serialise plain data to TOML text; ``None`` values are left out (TOML has no null).

    Args:
        data: nested dicts/lists of str, int, float, bool.
        header: comment text put first, each line prefixed with ``# ``.
    Returns:
        The TOML document, ending with a newline.
    """
    lines: list[str] = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    if lines:
        lines.append("")
    scalars = {k: v for k, v in data.items() if not _is_table(v)}
    if scalars:
        _write_table(lines, [], scalars)
    for key, value in data.items():
        if _is_table(value):
            if lines and lines[-1] != "":
                lines.append("")
            lines.append(f"[{_key(key)}]")
            _write_table(lines, [key], value)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
