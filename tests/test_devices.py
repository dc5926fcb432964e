"""Devices: cuda, xpu, mps and cpu where PyTorch has them; ``auto``; errors that list what the machine has.

The machines that run these tests have a CPU only, so other devices are simulated by replacing
:func:`hourglass.devices.device_count`; the attention kernels are resolved for mps and xpu by device
type (no tensor needs to live there to pick a backend).
"""

from __future__ import annotations

import pytest
import torch

import hourglass.devices as devices
from hourglass.backends import backend_names, kernel_names, resolve_backend
from hourglass.devices import available_devices, resolve_device, resolve_dtype


@pytest.fixture
def machine(monkeypatch):
    """``machine(cuda=2, mps=1)`` makes this process see those devices (plus the CPU)."""

    def fake(**counts: int) -> None:
        monkeypatch.setattr(devices, "device_count", lambda t: 1 if t == "cpu" else counts.get(t, 0))

    return fake


@pytest.mark.parametrize(("counts", "expected"), [
    ({}, "cpu"), ({"mps": 1}, "mps"), ({"xpu": 2, "mps": 1}, "xpu"), ({"cuda": 1, "xpu": 1, "mps": 1}, "cuda"),
])
def test_auto_takes_the_first_present_of_cuda_xpu_mps_cpu(machine, counts, expected):
    machine(**counts)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device(None) == torch.device(expected)


def test_every_device_present_is_listed(machine):
    machine(cuda=2, mps=1)
    assert available_devices() == ["cuda:0", "cuda:1", "mps", "cpu"]
    machine(xpu=1)
    assert available_devices() == ["xpu:0", "cpu"]


def test_a_missing_device_names_the_ones_this_machine_has(machine):
    machine(cuda=2)
    with pytest.raises(ValueError, match=r"'mps' was requested but this machine has no mps device.*cuda:0, cuda:1, cpu"):
        resolve_device("mps")
    with pytest.raises(ValueError, match=r"'cuda:2' does not exist: this machine has 2 cuda device"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=r"'tpu' is not a device torch knows.*cuda:0, cuda:1, cpu"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match=r"'hpu' is not supported.*cuda:0"):
        resolve_device("hpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("meta").type == "meta"


def test_on_this_machine_the_error_lists_its_own_devices():
    missing = [t for t in ("mps", "xpu") if not devices.device_available(t)]
    if not missing:
        pytest.skip("this machine has both mps and xpu")
    with pytest.raises(ValueError, match=", ".join(available_devices())):
        resolve_device(missing[0])


@pytest.mark.parametrize(("counts", "expected"), [
    ({"cuda": 1}, "bfloat16"), ({"xpu": 1}, "bfloat16"), ({"mps": 1}, "float32"), ({}, "float32"),
])
def test_auto_dtype_is_bfloat16_on_cuda_and_xpu_only(machine, counts, expected):
    machine(**counts)
    assert resolve_dtype("auto", "auto") == expected
    assert resolve_dtype("float32", "auto") == "float32"


@pytest.mark.parametrize("device_type", ["mps", "xpu"])
def test_every_attention_kernel_has_a_pure_pytorch_backend_there(device_type):
    for kernel in kernel_names():
        name = resolve_backend(kernel, device_type, torch.float32, requires_grad=True)
        assert name in backend_names(kernel)
        assert name not in ("natten", "flex", "xformers"), (kernel, name)  # CUDA-only libraries


def test_the_recipe_rule_accepts_every_device_type_and_lists_this_machines_devices():
    from hourglass.recipe import RecipeError, loads_recipe
    from tests._tiny import tiny_recipe_text

    for ok in ("auto", "cpu", "cuda", "cuda:1", "xpu", "xpu:3", "mps"):
        assert loads_recipe(tiny_recipe_text(), [f'runtime.device="{ok}"']).runtime.device == ok
    with pytest.raises(RecipeError, match=rf"runtime.device.*'tpu'.*this machine has {', '.join(available_devices())}"):
        loads_recipe(tiny_recipe_text(), ['runtime.device="tpu"'])


def test_several_processes_on_mps_are_refused(machine, monkeypatch):
    from hourglass.train.distributed import init_distributed

    machine(mps=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one MPS device"):
        init_distributed("mps")


def test_rng_states_are_restored_only_onto_the_same_devices(machine, monkeypatch):
    restored = []
    monkeypatch.setattr(torch.xpu, "set_rng_state_all", lambda states: restored.append(len(states)))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state: restored.append("mps"))
    saved = {f"xpu.{i}": torch.zeros(8, dtype=torch.uint8) for i in range(2)} | {"mps.0": torch.zeros(8, dtype=torch.uint8)}
    machine(xpu=2)
    devices.set_device_rng_states(saved)
    assert restored == [2]  # both XPUs; this machine has no MPS
    machine(xpu=1, mps=1)
    devices.set_device_rng_states(saved)
    assert restored == [2, "mps"]  # one XPU here for two saved states: left alone


def test_a_local_rank_past_the_last_xpu_is_refused(machine, monkeypatch):
    from hourglass.train.distributed import init_distributed

    machine(xpu=1)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match=r"LOCAL_RANK 1 has no XPU \(1 visible\); launch at most one process per XPU"):
        init_distributed("xpu")
