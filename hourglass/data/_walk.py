"""Listing the files of a dataset folder: the one walk (and subfolder labelling) that ``imagefolder`` and
``latents`` share."""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection
from pathlib import Path

__all__ = ["label_by_subfolder", "walk_files"]


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


def label_by_subfolder(root: Path, paths: list[Path], what: str) -> tuple[list[Path], list[str], list[int]]:
    """Class ids from the top-level folder under ``root`` that holds each file (``classes = "subfolders"``).

    Files lying directly in ``root`` belong to no class: they are dropped with a warning.

    Args:
        root: the dataset folder.
        paths: files under ``root`` (as :func:`walk_files` lists them).
        what: the plural noun for the warning, e.g. ``"image(s)"``.

    Returns:
        ``(kept paths, class names in sorted order, class id of each kept path)``.
    """
    loose = [p for p in paths if p.parent == root]
    if loose:
        warnings.warn(
            f"ignored {len(loose)} {what} lying directly in '{root}' because classes='subfolders' takes the class "
            "from the top-level folder; move them into a class folder",
            UserWarning,
            stacklevel=3,
        )
    kept = [p for p in paths if p.parent != root]
    top = [p.relative_to(root).parts[0] for p in kept]
    names = sorted(set(top))
    ids = {name: i for i, name in enumerate(names)}
    return kept, names, [ids[t] for t in top]
