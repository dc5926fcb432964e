"""Helpers shared by the benchmark scripts (private): the model ladders, clocks, process memory, tables.

The HDiT ladder is grown exactly as ``hourglass flops --grow`` grows a model
(:func:`hourglass.models.grow`), the rule by which HDiT (Crowson et al. 2024, arXiv 2401.11605)
prices its ablation at 256 and 512 px (Sec. 5.2 and Table 1; one more local-attention level per doubling,
Sec. 4.1 and Fig. 3): start from ``hdit_imagenet128`` (levels ``[NA7 384 x 2, global 768 x 11]`` at
128 px) and, for every doubling of the image side, add one outer neighborhood level (width 384, depth 2,
k = 7) in front of the outermost one. The innermost (global) level therefore always sees the same
16 x 16 token grid.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = [
    "ROOT",
    "HDIT_BASE",
    "DIT_BASE",
    "hdit_ladder_data",
    "dit_data",
    "model_data",
    "machine_description",
    "read_status_kib",
    "reset_peak_rss",
    "release_free_memory",
    "markdown_table",
    "fmt",
]

#: the preset the HDiT ladder starts from (its native resolution is 128 px)
HDIT_BASE = "hdit_imagenet128"
#: the pixel-space DiT baseline of the paper's ablation table
DIT_BASE = "dit_b_4_pixel"


def hdit_ladder_data(resolution: int) -> dict[str, Any]:
    """Plain model data of the paper's HDiT scaling ladder at ``resolution`` px.

    Args:
        resolution: image side; 128 times a power of two (128, 256, 512, 1024, ...).

    Returns:
        ``{"type": "hdit", "levels": [...], "input_size": resolution, ...}`` with
        ``log2(resolution / 128)`` extra outer NA7 levels of width 384 and depth 2.

    Raises:
        ValueError: if ``resolution`` is not 128 times a power of two.
    """
    from hourglass.models import grow, model_spec

    base = model_spec(HDIT_BASE)
    native = base.input_size
    if resolution < native:
        raise ValueError(f"the HDiT ladder starts at {native} px; got {resolution}, use {native} or a larger size")
    return grow(base, resolution)


def dit_data(resolution: int) -> dict[str, Any]:
    """Plain model data of pixel-space DiT-B/4 at ``resolution`` px (``dit_b_4_pixel`` with ``input_size`` set)."""
    from hourglass.models.factory import get_preset

    return {**get_preset(DIT_BASE), "input_size": resolution}


def model_data(name: str, resolution: int) -> dict[str, Any]:
    """Model data for a benchmark model name at ``resolution`` px.

    Args:
        name: ``"hdit"`` (the grown HDiT ladder), ``"dit"`` (DiT-B/4) or any model preset (used as
            is, with ``input_size`` set; e.g. ``"hdit_test"`` for quick smoke runs).
        resolution: image side in pixels.

    Raises:
        ValueError: for a name that is neither of the two nor a preset.
    """
    if name == "hdit":
        return hdit_ladder_data(resolution)
    if name == "dit":
        return dit_data(resolution)
    from hourglass.models.factory import get_preset
    from hourglass.registry import RegistryError

    try:
        return {**get_preset(name), "input_size": resolution}
    except RegistryError as exc:
        raise ValueError(f"unknown benchmark model {name!r}: use 'hdit' (the HDiT ladder), 'dit' (DiT-B/4) "
                         f"or a model preset ({exc})") from None


def machine_description() -> str:
    """One line naming the CPU, its logical cores, the memory and the torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}; Linux {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def read_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim(0)``), so RSS counts live memory only."""
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def fmt(value: float | None, spec: str = ".3g") -> str:
    """Format a number for a table; ``-`` for None."""
    return "-" if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (all cells right-aligned except the first column)."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
