"""torch.distributed set-up for ``torchrun`` launches (one process per device).

``torchrun --nproc_per_node N -m hourglass train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them,
picks ``nccl`` on CUDA and ``gloo`` on the CPU, and binds each process to its local GPU.
Without those variables everything runs as a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hourglass.devices import resolve_device

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_reduce_max", "barrier", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes.
        local_rank: rank on this node (the CUDA device index).
        device: the device this process trains on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group is in use."""
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def init_distributed(device: str | None = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``, ``"xpu[:N]"`` or ``"mps"``; under torchrun with
            CUDA (XPU) each process uses ``cuda:LOCAL_RANK`` (``xpu:LOCAL_RANK``) with NCCL (XCCL).
        timeout_s: collective timeout.

    Returns:
        The process's :class:`DistInfo`.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    base = resolve_device(device)
    if world_size <= 1:
        return DistInfo(device=base)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if base.type in ("cuda", "xpu"):  # one accelerator per process: cuda:LOCAL_RANK / xpu:LOCAL_RANK
        module, name = getattr(torch, base.type), "GPU" if base.type == "cuda" else "XPU"
        if local_rank >= module.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} has no {name} ({module.device_count()} visible); "
                f"launch at most one process per {name} (torchrun --nproc_per_node)"
            )
        base = torch.device(base.type, local_rank)
        module.set_device(base)
        backend = "nccl" if base.type == "cuda" else "xccl" if dist.is_xccl_available() else "gloo"
    elif base.type == "mps":
        raise ValueError(f"{world_size} processes on mps: a Mac has one MPS device and no collective backend for it; "
                         "run one process, or set runtime.device = \"cpu\" for several")
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": base} if backend == "nccl" else {}
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s), **kwargs,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=base, backend=backend)


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_max(value: float, info: DistInfo) -> float:
    """The maximum of ``value`` over all ranks (``value`` itself in a single process)."""
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], device=info.device, dtype=torch.float64 if info.backend == "gloo" else torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` on every rank (pickled by torch.distributed between our own processes)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
