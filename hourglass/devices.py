"""Which device and dtype a run uses: the one place ``"auto"`` is resolved."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> ``cuda`` when available, else ``cpu``; other values as ``torch.device``.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"meta"``, a ``torch.device`` or None.

    Returns:
        The device.

    Raises:
        ValueError: CUDA requested but not available, or a string torch cannot read as a device.
    """
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{device!r} is not a device torch knows ({exc}); use \"auto\", \"cpu\" or \"cuda:0\"") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; use device = \"cpu\" or \"auto\"")
    return dev


def resolve_dtype(dtype: str, device: str | torch.device | None) -> str:
    """``"auto"`` -> ``"bfloat16"`` on CUDA, ``"float32"`` elsewhere; other values unchanged.

    Args:
        dtype: ``"auto"``, ``"float32"`` or ``"bfloat16"``.
        device: the run's device (``"auto"`` allowed).

    Returns:
        A ``torch`` dtype name.
    """
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_device(device).type == "cuda" else "float32"
