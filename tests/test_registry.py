"""The registry: registration rules, lookups, error text and plugin discovery."""

from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings
from typing import Literal

import pytest

from hourglass import registry as reg
from hourglass.registry import ATTENTION, FFN, PluginError, Registry, RegistryError
from hourglass.spec import Spec


class _DemoSpec(Spec):
    type: Literal["demo"] = "demo"
    size: int = 3


class _Demo:
    Spec = _DemoSpec

    def __init__(self, spec, **context):
        self.spec, self.context = spec, context


def test_register_get_build_names_describe():
    r = Registry("widget")
    r.register("demo")(_Demo)
    assert r.names() == ["demo"]
    assert r.get("demo") is _Demo
    built = r.build({"type": "demo", "size": 5}, width=7)
    assert built.spec.size == 5 and built.context == {"width": 7}
    assert r.build("demo").spec.size == 3
    info = r.describe("demo")
    assert info["fields"]["size"]["default"] == 3 and info["provider"] == "hourglass"


def test_duplicate_refused_unless_override():
    class _Other(_Demo):
        """Another class with the same spec."""

    r = Registry("widget")
    r.add("demo", _Demo)
    r.add("demo", _Demo)  # the very same class again (an entry point that runs twice): no conflict
    with pytest.raises(RegistryError, match="already registered"):
        r.add("demo", _Other)
    r.add("demo", _Other, override=True)
    assert r.get("demo") is _Other


def test_spec_type_must_match_name():
    r = Registry("widget")
    with pytest.raises(RegistryError, match="Literal\\['other'\\]"):
        r.add("other", _Demo)

    class NoSpec:
        pass

    with pytest.raises(RegistryError, match="needs a pydantic 'Spec'"):
        r.add("nospec", NoSpec)


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(RegistryError) as err:
        FFN.get("gegl")
    text = str(err.value)
    assert "unknown ffn 'gegl'" in text and "geglu" in text and "Did you mean 'geglu'?" in text
    assert "swiglu" in text


def test_bad_field_is_a_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="kernel_size"):
        reg.ATTENTION.validate({"type": "neighborhood", "kernel_size": "big"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        reg.ATTENTION.validate({"type": "neighborhood", "kernal_size": 7})


class _FakeDist:
    def __init__(self, name):
        self.metadata = {"Name": name}
        self.version = "9.9"


class _FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"fake:{name}", target
        self.dist = _FakeDist(f"dist-{name}")

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def fake_plugins(monkeypatch):
    """Install fake entry points and reload plugins; restore the registries afterwards."""
    saved = {fam: (dict(r._entries), dict(r._providers)) for fam, r in reg.REGISTRIES.items()}
    saved_status = list(reg._plugin_statuses)

    def install(*eps):
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: list(eps))
        return reg.load_plugins(force=True)

    yield install
    for fam, (entries, providers) in saved.items():
        reg.REGISTRIES[fam]._entries, reg.REGISTRIES[fam]._providers = entries, providers
    reg._plugin_statuses[:] = saved_status


def _good_plugin():
    class GoodSpec(Spec):
        type: Literal["good_ffn"] = "good_ffn"

    class Good:
        Spec = GoodSpec

        def __init__(self, spec, **ctx):
            pass

    FFN.add("good_ffn", Good)


def _half_broken_plugin():
    class HalfSpec(Spec):
        type: Literal["half_ffn"] = "half_ffn"

    class Half:
        Spec = HalfSpec

    FFN.add("half_ffn", Half)
    raise RuntimeError("boom after registering")


def test_failing_plugin_warns_names_itself_and_rolls_back(fake_plugins):
    with pytest.warns(RuntimeWarning, match="plugin 'broken'.*boom after registering"):
        statuses = fake_plugins(_FakeEntryPoint("good", _good_plugin), _FakeEntryPoint("broken", _half_broken_plugin))
    by_name = {s.name: s for s in statuses}
    assert by_name["good"].status == "loaded" and by_name["good"].components == ["ffn:good_ffn"]
    assert by_name["broken"].status == "failed" and "boom" in by_name["broken"].error
    assert "good_ffn" in FFN.names() and "half_ffn" not in FFN.names()
    assert FFN.provider("good_ffn") == "dist-good"
    assert "geglu" in FFN.names()  # built-ins unaffected
    with pytest.raises(RegistryError, match="Plugins that failed: broken"):
        FFN.get("nope")


def test_import_error_plugin_and_strict_mode(fake_plugins, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fake_plugins(_FakeEntryPoint("missing", ImportError("No module named 'nothere'")))
    assert any("missing" in str(w.message) for w in caught)
    monkeypatch.setenv("HOURGLASS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="strict.*'missing'"):
        fake_plugins(_FakeEntryPoint("missing", ImportError("No module named 'nothere'")))


def test_disabled_plugin_is_skipped(fake_plugins, monkeypatch):
    monkeypatch.setenv("HOURGLASS_DISABLE_PLUGINS", "good")
    statuses = fake_plugins(_FakeEntryPoint("good", _good_plugin))
    assert statuses[0].status == "disabled" and "good_ffn" not in FFN.names()


def test_module_plugin_is_imported(fake_plugins):
    module = types.ModuleType("fake_plugin_module")
    sys.modules["fake_plugin_module"] = module
    statuses = fake_plugins(_FakeEntryPoint("mod", module))
    assert statuses[0].status == "loaded"


def test_an_attention_kind_must_name_a_registered_kernel():
    from hourglass.nn.attention import AttentionSpec, SelfAttention

    class _OopsSpec(AttentionSpec):
        type: Literal["oops_test"] = "oops_test"

    class NoKernel(SelfAttention):
        """Forgot its kernel: would be built as no attention."""

        Spec = _OopsSpec

    class UnknownKernel(NoKernel):
        """Names a kernel nobody registered."""

        kernel = "no_such_kernel"

    with pytest.raises(RegistryError, match="declares no kernel"):
        ATTENTION.add("oops_test", NoKernel)
    with pytest.raises(RegistryError, match="its kernel 'no_such_kernel' is not registered"):
        ATTENTION.add("oops_test", UnknownKernel)
    assert "oops_test" not in ATTENTION
