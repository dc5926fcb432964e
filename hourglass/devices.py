"""Which device and dtype a run uses: the one place ``"auto"`` is resolved and devices are looked for.

Device types: ``cpu``, ``cuda`` (NVIDIA, and AMD through ROCm builds), ``xpu`` (Intel GPUs) and
``mps`` (Apple silicon), each where the installed PyTorch has it. ``"auto"`` takes the first present
of cuda, xpu, mps, cpu. The pure-PyTorch attention kernels serve every attention kind on every
device type (NATTEN, flex attention and xformers are CUDA-only and are never chosen elsewhere).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "DEVICE_TYPES",
    "available_devices",
    "device_available",
    "device_count",
    "device_rng_states",
    "resolve_device",
    "resolve_dtype",
    "set_device_rng_states",
]

#: the device types a run may use, in the order ``"auto"`` prefers them (cpu last)
DEVICE_TYPES: tuple[str, ...] = ("cuda", "xpu", "mps", "cpu")
#: accelerators whose autocast runs in bfloat16 under ``dtype = "auto"``
_BF16_AUTO: frozenset[str] = frozenset({"cuda", "xpu"})


def device_count(device_type: str) -> int:
    """How many devices of ``device_type`` this machine has (cpu: 1; mps: 1 when present; unknown: 0)."""
    if device_type == "cpu":
        return 1
    if device_type == "mps":
        backend = getattr(torch.backends, "mps", None)
        return int(backend is not None and backend.is_available())
    module = getattr(torch, device_type, None) if device_type in DEVICE_TYPES else None
    if module is None or not module.is_available():
        return 0
    return int(module.device_count())


def device_available(device_type: str) -> bool:
    """Whether this machine has at least one device of ``device_type``."""
    return device_count(device_type) > 0


def available_devices() -> list[str]:
    """Every device present here, e.g. ``["cuda:0", "cuda:1", "cpu"]`` (one name per device; mps as ``"mps"``)."""
    out = []
    for device_type in DEVICE_TYPES:
        n = device_count(device_type)
        if device_type in ("cpu", "mps"):
            out += [device_type] * min(n, 1)
        else:
            out += [f"{device_type}:{i}" for i in range(n)]
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> the first present of cuda, xpu, mps, cpu; other values as ``torch.device``.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"xpu"``, ``"xpu:N"``, ``"mps"``,
            ``"meta"``, a ``torch.device`` or None.

    Returns:
        The device.

    Raises:
        ValueError: a device type this machine lacks (the message lists the devices it has), an
            index past the last device, or a string torch cannot read as a device.
    """
    if device is None or device in ("", "auto"):
        return torch.device(next(t for t in DEVICE_TYPES if device_available(t)))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r} is not a device torch knows; use \"auto\" or one of "
                         f"{', '.join(available_devices())}") from None
    if dev.type == "meta":
        return dev
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device type {dev.type!r} is not supported; use \"auto\" or one of this machine's devices: "
                         f"{', '.join(available_devices())}")
    count = device_count(dev.type)
    if count == 0:
        raise ValueError(f"device {str(device)!r} was requested but this machine has no {dev.type} device (PyTorch "
                         f"{torch.__version__}); it has {', '.join(available_devices())}: use one of them or \"auto\"")
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} {dev.type} device(s) "
                         f"({', '.join(available_devices())})")
    return dev


def resolve_dtype(dtype: str, device: str | torch.device | None) -> str:
    """``"auto"`` -> ``"bfloat16"`` on CUDA and XPU, ``"float32"`` elsewhere (CPU, MPS); other values unchanged.

    Args:
        dtype: ``"auto"``, ``"float32"`` or ``"bfloat16"``.
        device: the run's device (``"auto"`` allowed).

    Returns:
        A ``torch`` dtype name.
    """
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_device(device).type in _BF16_AUTO else "float32"


def device_rng_states() -> dict[str, Tensor]:
    """The accelerators' generator states, ``{"cuda.0": uint8 (n,), "xpu.0": ..., "mps.0": ...}``.

    Only device types already initialised in this process are read (reading would otherwise
    initialise them); a checkpoint stores these next to ``torch_cpu``.
    """
    states: dict[str, Tensor] = {}
    for device_type in ("cuda", "xpu"):
        module = getattr(torch, device_type, None)
        if module is not None and module.is_available() and module.is_initialized():
            states.update({f"{device_type}.{i}": s for i, s in enumerate(module.get_rng_state_all())})
    if device_available("mps"):
        states["mps.0"] = torch.mps.get_rng_state()
    return states


def set_device_rng_states(states: dict[str, Tensor]) -> None:
    """Restore :func:`device_rng_states`' entries where this machine has the same devices (others are ignored)."""
    for device_type in ("cuda", "xpu"):
        saved = [states[k] for k in sorted(states, key=_index) if k.split(".")[0] == device_type]
        if saved and len(saved) == device_count(device_type):
            getattr(torch, device_type).set_rng_state_all(saved)
    if "mps.0" in states and device_available("mps"):
        torch.mps.set_rng_state(states["mps.0"])


def _index(key: str) -> tuple[str, int]:
    device_type, _, index = key.partition(".")
    return device_type, int(index) if index.isdigit() else -1
