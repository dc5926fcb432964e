"""Generate the CLI reference (``cli.md``) from the argparse parser of ``hourglass.cli``.

Every command of ``hourglass.cli.build_parser()`` (and any nested sub-commands) with its usage,
description, arguments (flags, metavar, choices, default, help) and examples.
"""

from __future__ import annotations

import argparse

from docgen_common import anchor, code, md_cell, md_text

__all__ = ["subcommands", "command_id", "argument_id", "cli_markdown"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` of the direct sub-commands of ``parser`` (aliases folded into their command)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    out[name] = sub
    return out


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The one-line ``help`` each sub-command was registered with."""
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                helps[choice.dest] = choice.help or ""
    return helps


def command_id(path: list[str]) -> str:
    """HTML id of the command ``path`` (``["train"]`` -> ``"train"``)."""
    return anchor(*path) if path else "hourglass"


def argument_id(path: list[str], action: argparse.Action) -> str:
    """HTML id of one argument of the command ``path``."""
    return anchor(command_id(path), "arg", action.dest)


def _expand_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%" not in text:
        return text
    try:  # argparse's own %(default)s / %(choices)s expansion
        return parser._get_formatter()._expand_help(action)
    except (KeyError, TypeError, ValueError):
        return text


def _names(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(code(s) for s in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            flags += f" {code(metavar)}"
        return flags
    metavar = action.metavar or action.dest
    return code(metavar if not isinstance(metavar, tuple) else " ".join(metavar))


def _details(action: argparse.Action) -> str:
    bits = []
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        bits.append("choices: " + ", ".join(code(c) for c in action.choices))
    nargs = action.nargs
    if nargs in ("+", "*") or isinstance(nargs, int) and nargs > 1 and not action.option_strings:
        bits.append({"+": "one or more", "*": "any number"}.get(nargs, f"{nargs} values"))
    elif nargs in ("+", "*") or isinstance(nargs, int) and nargs > 1:
        bits.append({"+": "one or more values", "*": "any number of values"}.get(nargs, f"{nargs} values"))
    if isinstance(action, argparse._AppendAction):
        bits.append("repeatable")
    default = action.default
    shown = default not in (None, False, argparse.SUPPRESS, [], ()) and not (
        isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    )
    if isinstance(action, argparse.BooleanOptionalAction):
        shown = default is not None and default is not argparse.SUPPRESS
    if shown:
        bits.append("default: " + code(default if not isinstance(default, (list, tuple)) else " ".join(map(str, default))))
    if action.required and action.option_strings:
        bits.append("required")
    return "; ".join(bits)


def _arguments_table(path: list[str], parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | details | help |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        rows.append(
            f'| <a id="{argument_id(path, action)}"></a>{_names(action)} | {_details(action)} '
            f"| {md_cell(_expand_help(parser, action))} |"
        )
    return rows if len(rows) > 2 else ["*No arguments besides `--help`.*"]


def _description(text: str | None) -> list[str]:
    if not text:
        return []
    return [md_text(text.strip()), ""]


def _epilog(text: str | None) -> list[str]:
    """Examples as a shell block; other epilog text as plain paragraphs."""
    if not text:
        return []
    head, sep, rest = text.partition("examples:\n")
    lines: list[str] = []
    if head.strip():
        lines += [md_text(head.strip()), ""]
    if sep:
        examples, _, tail = rest.partition("\n\n")
        lines += ["Examples:", "", "```bash", "\n".join(e.strip() for e in examples.splitlines()), "```", ""]
        if tail.strip():
            lines += [md_text(tail.strip()), ""]
    return lines


def _command(path: list[str], parser: argparse.ArgumentParser, summary: str, level: int) -> list[str]:
    cid = command_id(path)
    title = " ".join(["hourglass", *path])
    lines = [f"{'#' * level} `{title}` {{#{cid}}}", ""]
    if summary:
        lines += [f"*{md_text(summary)}*", ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    lines += _description(parser.description)
    lines += _arguments_table(path, parser) + [""]
    lines += _epilog(parser.epilog)
    helps = _help_of(parser)
    for name, sub in subcommands(parser).items():
        lines += _command([*path, name], sub, helps.get(name, ""), min(level + 1, 6))
    return lines


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The CLI reference page as Markdown.

    Args:
        parser: the parser to document (default ``hourglass.cli.build_parser()``).
    """
    if parser is None:
        from hourglass.cli import build_parser

        parser = build_parser()
    commands = subcommands(parser)
    helps = _help_of(parser)
    lines = [
        "# CLI reference",
        "",
        "The `hourglass` command (also `python -m hourglass`). This page is generated from the argparse parser "
        "(`hourglass.cli.build_parser()`) by `python docs/_gen/docgen.py`; `hourglass COMMAND --help` prints the same.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name in commands:
        lines.append(f"| [`{name}`](#{command_id([name])}) | {md_cell(helps.get(name, ''))} |")
    lines += ["", "## `hourglass` {#hourglass}", ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    lines += _description(parser.description)
    lines += ["Global options (given before the command):", ""]
    lines += _arguments_table([], parser) + [""]
    lines += _epilog(parser.epilog)
    for name, sub in commands.items():
        lines += _command([name], sub, helps.get(name, ""), 2)
    return "\n".join(lines) + "\n"
