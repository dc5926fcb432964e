"""Backend resolution: precedence, errors users hit, auto fallback, probe caching, registration."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
import threading

import pytest
import torch

from hourglass.backends import (
    BACKEND,
    BACKENDS,
    KERNEL,
    BackendUnavailableError,
    available_backends,
    call_kernel,
    clear_backend_cache,
    neighborhood_attention,
    register_backend,
    register_kernel,
    resolve_backend,
    use_backends,
)
from hourglass.registry import RegistryError

F32 = torch.float32


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    for kernel in BACKENDS:
        monkeypatch.delenv(f"HOURGLASS_BACKEND_{kernel.upper()}", raising=False)
    clear_backend_cache()
    yield
    clear_backend_cache()


@pytest.fixture
def patch_backend():
    """``patch_backend(kernel, name, probe=..., auto=...)`` swaps fields of a registered backend for one test."""
    saved = []

    def patch(kernel: str, name: str, **changes):
        key = f"{kernel}:{name}"
        old = BACKEND.get(key)
        saved.append((key, old))
        BACKEND.add(key, dataclasses.replace(old, **changes), override=True)

    yield patch
    for key, old in reversed(saved):
        BACKEND.add(key, old, override=True)


def test_backend_table():
    built_in = {k: v for k, v in BACKENDS.items() if KERNEL.provider(k) == "hourglass"}  # plugins add more
    assert built_in == {
        "neighborhood": ("torch", "flex", "natten"),
        "shifted_window": ("torch", "flex"),
        "global": ("torch", "sdpa", "xformers"),
    }


def test_auto_on_cpu():
    assert resolve_backend("neighborhood", "cpu", F32, True) == "torch"
    assert resolve_backend("shifted_window", torch.device("cpu"), F32, False) == "torch"
    assert resolve_backend("global", "cpu", F32, True) == "sdpa"


def test_precedence_explicit_over_context_over_environment(monkeypatch):
    monkeypatch.setenv("HOURGLASS_BACKEND_GLOBAL", "torch")
    assert resolve_backend("global", "cpu", F32, False) == "torch"
    with use_backends(**{"global": "sdpa"}):
        assert resolve_backend("global", "cpu", F32, False) == "sdpa"
        assert resolve_backend("global", "cpu", F32, False, explicit="torch") == "torch"
        with use_backends(**{"global": None}):  # None drops the context choice: environment again
            assert resolve_backend("global", "cpu", F32, False) == "torch"
        assert resolve_backend("global", "cpu", F32, False) == "sdpa"
    assert resolve_backend("global", "cpu", F32, False, explicit="auto") == "sdpa"
    assert resolve_backend("global", "cpu", F32, False) == "torch"


def test_context_is_per_thread():
    seen = {}

    def other():
        seen["name"] = resolve_backend("global", "cpu", F32, False)

    with use_backends(**{"global": "torch"}):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert resolve_backend("global", "cpu", F32, False) == "torch"
    assert seen["name"] == "sdpa"


def test_unknown_backend_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown neighborhood backend 'nattn' \(did you mean 'natten'\?\); known neighborhood backends: torch, flex, natten"):
        resolve_backend("neighborhood", "cpu", F32, False, explicit="nattn")
    with pytest.raises(ValueError, match="known global backends: torch, sdpa, xformers"):
        with use_backends(**{"global": "flash"}):
            pass


def test_unknown_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("HOURGLASS_BACKEND_NEIGHBORHOOD", "cuda")
    with pytest.raises(ValueError, match="from the environment variable HOURGLASS_BACKEND_NEIGHBORHOOD"):
        resolve_backend("neighborhood", "cpu", F32, False)


def test_unknown_kernel_lists_known_kernels():
    with pytest.raises(ValueError, match="known kernels: .*global, neighborhood, shifted_window"):
        resolve_backend("no_such_kernel", "cpu", F32, False)
    with pytest.raises(ValueError, match="unknown attention kernel 'local'"):
        with use_backends(local="torch"):
            pass


def test_explicit_choice_that_cannot_run_says_why_and_what_can():
    with pytest.raises(BackendUnavailableError, match="flex_attention has no backward on CPU") as info:
        resolve_backend("neighborhood", "cpu", F32, True, explicit="flex")
    assert "Backends that can run here: torch" in str(info.value)
    with pytest.raises(BackendUnavailableError, match="xformers has no cpu operator"):
        resolve_backend("global", "cpu", F32, False, explicit="xformers")


def test_context_choice_that_cannot_run_is_raised_at_call_time():
    q = torch.randn(1, 8, 8, 1, 16, requires_grad=True)
    with use_backends(neighborhood="flex"):
        with pytest.raises(BackendUnavailableError, match=r"chosen by use_backends\(neighborhood=...\)"):
            neighborhood_attention(q, q, q, 3)
        with torch.no_grad():  # without gradients flex runs on CPU
            assert neighborhood_attention(q, q, q, 3).shape == q.shape


def test_available_backends_reports_reasons():
    avail = available_backends("neighborhood", "cpu", F32, requires_grad=True)
    assert list(avail) == ["torch", "flex", "natten"]
    assert avail["torch"] is None
    assert "backward" in avail["flex"]
    assert "backward" in avail["natten"] or "not importable" in avail["natten"]
    assert available_backends("global", "cpu")["sdpa"] is None


def test_missing_natten_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "natten", None)  # makes `import natten` raise ImportError
    reason = available_backends("neighborhood", "cpu", F32, False)["natten"]
    assert "natten is not importable" in reason and "pip install --no-build-isolation natten" in reason


@pytest.mark.skipif(importlib.util.find_spec("natten") is None, reason="natten is not importable")
def test_natten_forward_usable_on_cpu_but_not_backward():
    assert available_backends("neighborhood", "cpu", F32, False)["natten"] is None
    assert "backward failed on cpu" in available_backends("neighborhood", "cpu", F32, True)["natten"]


def test_auto_logs_what_it_skipped(patch_backend, caplog):
    patch_backend("neighborhood", "flex", auto={"cpu": -1})  # before torch on the CPU
    with caplog.at_level(logging.DEBUG, logger="hourglass.backends"):
        assert resolve_backend("neighborhood", "cpu", F32, True) == "torch"
    assert "skipped flex: flex_attention has no backward on CPU" in caplog.text
    assert resolve_backend("neighborhood", "cpu", F32, False) == "flex"


def test_auto_moves_on_when_a_backend_cannot_take_the_inputs(patch_backend, caplog):
    patch_backend("neighborhood", "natten", auto={"cpu": -1}, probe=None)
    q = torch.randn(1, 8, 8, 1, 12)  # natten needs head dims divisible by 8
    with caplog.at_level(logging.DEBUG, logger="hourglass.backends"):
        out = neighborhood_attention(q, q, q, 3)
    assert out.shape == q.shape
    assert "natten needs a head dim divisible by 8, got 12" in caplog.text
    with pytest.raises(BackendUnavailableError, match="natten needs a head dim divisible by 8"):
        neighborhood_attention(q, q, q, 3, backend="natten")


def test_probes_are_cached_per_key(patch_backend):
    calls = []

    def probe(device_type, dtype, requires_grad):
        calls.append((device_type, dtype, requires_grad))
        return None

    patch_backend("global", "torch", probe=probe)
    for _ in range(3):
        resolve_backend("global", "cpu", F32, False, explicit="torch")
    resolve_backend("global", "cpu", F32, True, explicit="torch")
    resolve_backend("global", "cpu", torch.float64, True, explicit="torch")
    assert calls == [("cpu", F32, False), ("cpu", F32, True), ("cpu", torch.float64, True)]


def test_a_probe_that_crashes_makes_the_backend_unavailable(patch_backend):
    def probe(*args):
        raise OSError("broken shared library")

    patch_backend("global", "sdpa", probe=probe)
    assert "probe failed: OSError: broken shared library" in available_backends("global")["sdpa"]
    assert resolve_backend("global", "cpu", F32, False) == "torch"  # auto falls back


def test_auto_veto_skips_a_backend_only_for_auto(patch_backend, caplog):
    patch_backend("global", "sdpa", auto_veto=lambda *a: "slow fallback here")
    with caplog.at_level(logging.DEBUG, logger="hourglass.backends"):
        assert resolve_backend("global", "cpu", F32, False) == "torch"
    assert "skipped sdpa: slow fallback here" in caplog.text
    assert resolve_backend("global", "cpu", F32, False, explicit="sdpa") == "sdpa"


@pytest.mark.skipif(importlib.util.find_spec("natten") is None, reason="natten is not importable")
def test_natten_without_compiled_kernels_is_not_auto_on_cuda(monkeypatch):
    import natten

    from hourglass.backends import _natten

    monkeypatch.setattr(natten, "HAS_LIBNATTEN", False)
    assert "HAS_LIBNATTEN=False" in _natten._auto_veto("cuda", F32, True)
    assert _natten._auto_veto("cpu", F32, False) is None


@pytest.fixture
def axial_kernel():
    """A kernel registered the way a plugin registers one (removed afterwards)."""

    register_kernel("axial_test", doc="test kernel")  # stand-in maths: each backend marks its output
    register_backend("axial_test", "torch", lambda q, k, v, scale: q * scale, auto={"*": 0})
    register_backend("axial_test", "fast", lambda q, k, v, scale: q * scale + 1, auto={"cuda": 0})
    yield
    for key in ("axial_test:torch", "axial_test:fast"):
        BACKEND.unregister(key)
    KERNEL.unregister("axial_test")


def test_a_registered_kernel_resolves_pins_and_lists_like_a_built_in(axial_kernel):
    assert BACKENDS["axial_test"] == ("torch", "fast")
    assert resolve_backend("axial_test", "cpu", F32, True) == "torch"  # "fast" has no CPU rank: never auto there
    assert resolve_backend("axial_test", "cpu", F32, True, explicit="fast") == "fast"
    q = torch.ones(1, 2, 2, 1, 4)
    assert torch.equal(call_kernel("axial_test", q, q, q, scale=2.0), 2 * q)
    with use_backends(axial_test="fast"):
        assert torch.equal(call_kernel("axial_test", q, q, q, scale=2.0), 3 * q)


def test_a_backend_of_an_unknown_kernel_is_refused():
    with pytest.raises(RegistryError, match="no kernel 'nope' is registered; register it first"):
        register_backend("nope", "torch", lambda *a: None)


def test_registering_a_backend_clears_the_auto_cache(axial_kernel):
    assert resolve_backend("axial_test", "cpu", F32, False) == "torch"
    register_backend("axial_test", "cpu_fast", lambda q, k, v, s: q, auto={"cpu": -1})
    try:
        assert resolve_backend("axial_test", "cpu", F32, False) == "cpu_fast"
    finally:
        BACKEND.unregister("axial_test:cpu_fast")
    assert resolve_backend("axial_test", "cpu", F32, False) == "torch"
