"""What the converters of ``hourglass convert`` share (k-diffusion in :mod:`hourglass.cli.convert`, DiT and
U-ViT in :mod:`hourglass.cli.convert_official`): reading a file's kind, refusing hourglass files, the words
for which weights were converted, and the closing report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hourglass.cli._common import CLIError

__all__ = ["ROOT_PLACEHOLDER", "WEIGHTS_WORDS", "checked_kind", "refuse_hourglass_file", "report_conversion"]

#: what ``model.safetensors`` holds, for the recipe header
WEIGHTS_WORDS = {
    "ema": "the checkpoint's EMA weights",
    "raw": "the checkpoint's raw training weights (it holds no EMA copy)",
    "unknown": "the checkpoint's only weights (whether they are an EMA copy is not recorded in it)",
}
#: the data root a converted recipe names when the source's config gives none
ROOT_PLACEHOLDER = "/path/to/images"


def checked_kind(path: Path) -> str | None:
    """:func:`hourglass._files.file_kind` of ``path``, an unreadable file as a one-line CLIError."""
    from hourglass._files import file_kind

    try:
        return file_kind(path)
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def refuse_hourglass_file(path: Path) -> None:
    """An hourglass checkpoint or converted weights need no conversion: say so."""
    from hourglass.train.checkpoint import FORMAT, WEIGHTS_FORMAT, CheckpointError, read_checkpoint

    try:
        read_checkpoint(path, tensors=False)
    except CheckpointError:
        return  # not an hourglass file: k-diffusion's loader judges it
    raise CLIError(f"{path} is already an hourglass checkpoint ({FORMAT} or {WEIGHTS_FORMAT}); nothing to convert: "
                   f"sample it with `hourglass sample {path}`")


def report_conversion(recipe_path: Path, weights_path: Path, tensors: dict[str, Any], which: str, notes: list[str]) -> None:
    """Print what was written: the two files, the tensor count, which weights (``which``) and the notes."""
    n = sum(v.numel() for v in tensors.values())
    print(f"wrote {recipe_path} and {weights_path} ({len(tensors)} tensors, {n:,} values: {WEIGHTS_WORDS[which]}), "
          "with config.json and a model card (README.md): a pretrained folder")
    for note in notes:
        print(f"note: {note}")
