"""Backend resolution: precedence, errors users hit, auto fallback, probe caching."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading

import pytest
import torch

from hourglass.backends import (
    BACKENDS,
    BackendUnavailableError,
    _resolve,
    available_backends,
    clear_backend_cache,
    neighborhood_attention,
    resolve_backend,
    use_backends,
)

F32 = torch.float32


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    for kind in BACKENDS:
        monkeypatch.delenv(f"HOURGLASS_BACKEND_{kind.upper()}", raising=False)
    clear_backend_cache()
    yield
    clear_backend_cache()


def test_backend_table():
    assert BACKENDS == {
        "neighborhood": ("torch", "natten", "flex"),
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
    with pytest.raises(ValueError, match=r"unknown neighborhood backend 'nattn'.*torch, natten, flex.*'natten'\?"):
        resolve_backend("neighborhood", "cpu", F32, False, explicit="nattn")
    with pytest.raises(ValueError, match="known global backends: torch, sdpa, xformers"):
        with use_backends(**{"global": "flash"}):
            pass


def test_unknown_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("HOURGLASS_BACKEND_NEIGHBORHOOD", "cuda")
    with pytest.raises(ValueError, match="from the environment variable HOURGLASS_BACKEND_NEIGHBORHOOD"):
        resolve_backend("neighborhood", "cpu", F32, False)


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ValueError, match="known kinds: neighborhood, shifted_window, global"):
        resolve_backend("axial", "cpu", F32, False)
    with pytest.raises(ValueError, match="unknown attention kind 'local'"):
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
    assert list(avail) == ["torch", "natten", "flex"]
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


def test_auto_logs_what_it_skipped(monkeypatch, caplog):
    monkeypatch.setitem(_resolve.AUTO_ORDER, ("neighborhood", "cpu"), ("flex", "torch"))
    with caplog.at_level(logging.DEBUG, logger="hourglass.backends"):
        assert resolve_backend("neighborhood", "cpu", F32, True) == "torch"
    assert "skipped flex: flex_attention has no backward on CPU" in caplog.text
    assert resolve_backend("neighborhood", "cpu", F32, False) == "flex"


def test_auto_moves_on_when_a_backend_cannot_take_the_inputs(monkeypatch, caplog):
    monkeypatch.setitem(_resolve.AUTO_ORDER, ("neighborhood", "cpu"), ("natten", "torch"))
    monkeypatch.setitem(_resolve._probes, ("neighborhood", "natten"), lambda *a: None)
    q = torch.randn(1, 8, 8, 1, 12)  # natten needs head dims divisible by 8
    with caplog.at_level(logging.DEBUG, logger="hourglass.backends"):
        out = neighborhood_attention(q, q, q, 3)
    assert out.shape == q.shape
    assert "natten needs a head dim divisible by 8, got 12" in caplog.text
    with pytest.raises(BackendUnavailableError, match="natten needs a head dim divisible by 8"):
        neighborhood_attention(q, q, q, 3, backend="natten")


def test_probes_are_cached_per_key(monkeypatch):
    calls = []

    def probe(device_type, dtype, requires_grad):
        calls.append((device_type, dtype, requires_grad))
        return None

    monkeypatch.setitem(_resolve._probes, ("global", "torch"), probe)
    for _ in range(3):
        resolve_backend("global", "cpu", F32, False, explicit="torch")
    resolve_backend("global", "cpu", F32, True, explicit="torch")
    resolve_backend("global", "cpu", torch.float64, True, explicit="torch")
    assert calls == [("cpu", F32, False), ("cpu", F32, True), ("cpu", torch.float64, True)]


def test_a_probe_that_crashes_makes_the_backend_unavailable(monkeypatch):
    def probe(*args):
        raise OSError("broken shared library")

    monkeypatch.setitem(_resolve._probes, ("global", "sdpa"), probe)
    assert "probe failed: OSError: broken shared library" in available_backends("global")["sdpa"]
    assert resolve_backend("global", "cpu", F32, False) == "torch"  # auto falls back


def test_auto_veto_skips_a_backend_only_for_auto(monkeypatch, caplog):
    monkeypatch.setitem(_resolve._auto_vetoes, ("global", "sdpa"), lambda *a: "slow fallback here")
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
