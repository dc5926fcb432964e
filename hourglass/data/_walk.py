"""Listing the files of a dataset folder: the one walk that ``imagefolder`` and ``latents`` share."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

__all__ = ["walk_files"]


def walk_files(root: Path, extensions: Collection[str], *, first: bool = False,
               in_subfolders: bool = False) -> list[Path]:
    """Files under ``root`` whose lower-cased suffix is in ``extensions``, sorted by relative posix path.

    The walk is recursive and follows links once (a link back up the tree is not walked again);
    hidden files and folders (a leading ``.``) are skipped.

    Args:
        root: the folder.
        extensions: suffixes with their dot, e.g. ``(".png", ".jpg")``.
        first: stop at the first file found (in sorted order): a cheap "is there any" on a large folder.
        in_subfolders: skip the files lying directly in ``root`` (they belong to no class subfolder).

    Returns:
        The paths (at most one with ``first``).
    """
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if in_subfolders and Path(dirpath) == root:
            continue
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                path = Path(dirpath, name)
                if path.is_file():
                    found.append(path)
                    if first:
                        return found
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
