"""Plugins end to end: real entry points (a temporary ``*.dist-info`` on ``sys.path`` of a subprocess),
broken, strict and disabled plugins, the public plugin API and its component contract, and the
example plugins of ``plugins/`` when they are installed.

The tutorial (``docs/plugins.md``) is followed step by step in ``tests/test_plugins_tutorial.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

import hourglass.plugin as hp
from hourglass.registry import ATTENTION, FFN, SAMPLER, Registry, RegistryError

ROOT = Path(__file__).resolve().parents[1]

GOOD_PLUGIN = '''
"""A well-behaved test plugin: FFN ``tiny_ffn``."""
from typing import Literal

import torch.nn.functional as F
from torch import nn

from hourglass.plugin import Spec, register


class TinyMLPSpec(Spec):
    type: Literal["tiny_ffn"] = "tiny_ffn"


class TinyMLP(nn.Module):
    """A test plugin's FFN: ``Down(ReLU(Up(x)))``."""

    Spec = TinyMLPSpec

    def __init__(self, spec, *, width, d_ff, dropout=0.0, **_):
        super().__init__()
        self.spec = spec
        self.up_proj, self.down_proj = nn.Linear(width, d_ff), nn.Linear(d_ff, width)

    def forward(self, x):
        return self.down_proj(F.relu(self.up_proj(x)))


def setup():
    register("ffn", "tiny_ffn", TinyMLP)
'''

BROKEN_PLUGIN = '''
"""A test plugin that registers one of everything (and overrides a built-in), then fails."""
from typing import Literal

from hourglass.nn.ffn import GEGLU
from hourglass.plugin import Spec, register, register_backend, register_kernel, register_preset


class HalfSpec(Spec):
    type: Literal["half_ffn"] = "half_ffn"


class Half:
    """Registered before the plugin fails; must be rolled back."""

    Spec = HalfSpec


class LoudGEGLU(GEGLU):
    """Overrides the built-in geglu before the plugin fails; the built-in must come back."""


def setup():
    register("ffn", "half_ffn", Half)
    register("ffn", "geglu", LoudGEGLU, override=True)
    register_preset("half_test", "hdit", {"levels": [{"depth": 1, "width": 32}], "input_size": 8})
    register_kernel("half_kernel")
    register_backend("half_kernel", "torch", lambda q, k, v, scale: q)
    register_backend("global", "half_backend", lambda q, k, v, scale: q)
    raise RuntimeError("boom: broken on purpose")
'''


def _fake_distribution(site: Path, dist: str, entry_point: str, module: str, source: str) -> None:
    """Write ``module.py`` and an installed-distribution record (what pip writes) into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hourglass.plugins]\n{entry_point} = {module}:setup\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding one good and one broken plugin distribution."""
    _fake_distribution(tmp_path, "hg-test-good", "goodplug", "hg_test_good", GOOD_PLUGIN)
    _fake_distribution(tmp_path, "hg-test-broken", "broken", "hg_test_broken", BROKEN_PLUGIN)
    return tmp_path


def _python(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that sees the plugins of ``site``."""
    full_env = {**os.environ, "HOURGLASS_NO_PROGRESS": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))
    for name in ("HOURGLASS_STRICT_PLUGINS", "HOURGLASS_DISABLE_PLUGINS"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


_REPORT = """
import contextlib, io, json, warnings
from hourglass.cli import main

def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}
"""


def test_broken_plugin_warns_with_its_name_and_everything_else_keeps_working(site):
    proc = _python(site, _REPORT + textwrap.dedent("""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import timm  # imported first: presets reach timm's registry the moment they are registered
            from hourglass.backends import BACKENDS, KERNEL
            from hourglass.registry import FFN, PRESET, plugin_statuses
            names = FFN.names()
        from hourglass.plugin import check_component
        report = {
            "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
            "ffn": names,
            "provider": FFN.provider("tiny_ffn"),
            "statuses": {s.name: [s.status, s.distribution, s.components, s.error] for s in plugin_statuses()},
            "checks": check_component("ffn", "tiny_ffn"),
            "plugins": cli("plugins"),
            "list": cli("list", "ffn"),
            "unknown": cli("build", "recipes/quickstart.toml", "--set", "model.ffn.type=half_ffn"),
            "geglu": FFN.get("geglu").__name__,
            "presets": PRESET.names(),
            "timm": timm.list_models("h*_test"),
            "kernels": KERNEL.names(),
            "global_backends": list(BACKENDS["global"]),
        }
        print(json.dumps(report))
    """))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (warning,) = report["warnings"]
    assert "plugin 'broken'" in warning and "boom: broken on purpose" in warning and "unaffected" in warning
    assert "tiny_ffn" in report["ffn"] and "half_ffn" not in report["ffn"]  # rolled back
    assert report["geglu"] == "GEGLU"  # the overridden built-in is back
    assert "half_test" not in report["presets"] and "hdit_test" in report["presets"]
    assert "half_test" not in report["timm"] and "hdit_test" in report["timm"]  # timm forgot it too
    assert "half_kernel" not in report["kernels"] and "half_backend" not in report["global_backends"]
    assert {"geglu", "swiglu", "gelu_mlp"} <= set(report["ffn"])
    assert report["provider"] == "hg-test-good"
    assert report["statuses"]["goodplug"] == ["loaded", "hg-test-good", ["ffn:tiny_ffn"], None]
    status, dist, components, error = report["statuses"]["broken"]
    assert (status, dist, components) == ("failed", "hg-test-broken", []) and "RuntimeError: boom" in error
    assert report["checks"] == ["spec", "forward", "gradients", "state_dict", "meta"]
    plugins = report["plugins"]
    assert plugins["code"] == 0 and "failed" in plugins["out"] and "broken: RuntimeError: boom" in plugins["out"]
    assert "goodplug" in plugins["out"] and "ffn:tiny_ffn" in plugins["out"]
    listed = report["list"]
    assert listed["code"] == 0 and any(line.split() == ["tiny_ffn", "hg-test-good"] for line in listed["out"].splitlines())
    unknown = report["unknown"]
    assert unknown["code"] == 2 and "unknown ffn 'half_ffn'" in unknown["err"]
    assert "Plugins that failed: broken (RuntimeError: boom" in unknown["err"]


def test_strict_mode_fails_naming_the_plugin(site):
    proc = _python(site, _REPORT + textwrap.dedent("""
        from hourglass.registry import FFN, PluginError
        try:
            FFN.names()
        except PluginError as exc:
            print("PluginError:", exc)
        print(json.dumps(cli("--strict-plugins", "list", "ffn")))
    """), HOURGLASS_STRICT_PLUGINS="1")
    assert proc.returncode == 0, proc.stderr
    assert "PluginError: strict plugin mode is on" in proc.stdout and "'broken'" in proc.stdout and "boom" in proc.stdout
    assert "strict plugin mode is on" in proc.stdout
    flag = json.loads(proc.stdout.strip().splitlines()[-1])
    assert flag["code"] == 2 and "plugin 'broken' (hg-test-broken) failed" in flag["err"]


def test_disabled_plugin_is_skipped_by_entry_point_or_distribution_name_and_reloads_cleanly(site):
    """Disable by entry-point name, then (forced reload) by distribution name. The good plugin's
    entry point runs twice: `register` is idempotent for the same object."""
    proc = _python(site, _REPORT + textwrap.dedent("""
        import os
        from hourglass.registry import FFN, load_plugins
        reports = []
        for disabled in ("broken", "hg-test-broken"):
            os.environ["HOURGLASS_DISABLE_PLUGINS"] = f"unrelated, {disabled}"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                statuses = load_plugins(force=True)
                names = FFN.names()
            reports.append({
                "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
                "ffn": names,
                "statuses": {s.name: [s.status, s.components] for s in statuses},
                "provider": FFN.provider("tiny_ffn"),
                "class": id(FFN.get("tiny_ffn")),
                "plugins": cli("plugins")["out"],
            })
        print(json.dumps(reports))
    """))
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout.strip().splitlines()[-1])
    for report in (first, second):
        assert report["warnings"] == []
        assert report["statuses"]["broken"] == ["disabled", []]
        assert report["statuses"]["goodplug"] == ["loaded", ["ffn:tiny_ffn"]]
        assert "tiny_ffn" in report["ffn"] and "half_ffn" not in report["ffn"]
        assert report["provider"] == "hg-test-good"
        assert any(line.split()[:1] == ["broken"] and "disabled" in line for line in report["plugins"].splitlines())
    assert first["class"] == second["class"]


# -- the public API -------------------------------------------------------------------------------
def test_public_api_exports_are_importable_and_documented():
    for name in hp.__all__:
        obj = getattr(hp, name)
        if callable(obj) and not isinstance(obj, Registry):
            assert (obj.__doc__ or "").strip(), f"hourglass.plugin.{name} has no docstring"
    assert hp.ATTENTION is ATTENTION and hp.REGISTRIES["sampler"] is SAMPLER
    assert hp.PLUGIN_GROUP == "hourglass.plugins"
    assert issubclass(hp.SelfAttention, nn.Module) and issubclass(hp.AttentionSpec, hp.Spec)


def test_get_registry_and_register_rules():
    assert hp.get_registry("ffn") is FFN and hp.get_registry(FFN) is FFN
    with pytest.raises(RegistryError, match="unknown component family 'fnn'; known families: .*ffn"):
        hp.get_registry("fnn")

    class DemoSpec(hp.Spec):
        type: Literal["demo"] = "demo"

    class Demo:
        """Demo."""

        Spec = DemoSpec

    class Other(Demo):
        """Another class under the same name."""

    widgets = Registry("widget")
    assert hp.register(widgets, "demo")(Demo) is Demo
    assert hp.register(widgets, "demo", Demo) is Demo  # the same object again: allowed
    with pytest.raises(RegistryError, match="already registered"):
        hp.register(widgets, "demo", Other)
    hp.register(widgets, "demo", Other, override=True)
    assert widgets.get("demo") is Other
    with pytest.raises(RegistryError, match=r"Literal\['other'\]"):
        hp.register(widgets, "other", Demo)


# -- check_component: it passes the built-ins and catches broken components -----------------------
@pytest.mark.parametrize("family,name", [("ffn", "geglu"), ("norm", "ada_rms_norm"), ("skip", "lerp"),
                                         ("pos_emb", "axial_rope"), ("attention", "none"), ("sampler", "heun"),
                                         ("sampler", "dpmpp_3m_sde"), ("weighting", "soft_min_snr")])
def test_check_component_passes_builtins(family, name):
    checks = hp.check_component(family, name, width=64)
    assert checks[0] == "spec"
    if family == "ffn":
        assert checks == ["spec", "forward", "gradients", "state_dict", "meta"]
    if family == "sampler":
        assert checks == ["spec", "sampler"]


class _MLPSpec(hp.Spec):
    type: Literal["bad"] = "bad"


class _MLP(nn.Module):
    """A correct MLP; the subclasses below each break one rule."""

    Spec = _MLPSpec

    def __init__(self, spec, *, width, d_ff, dropout=0.0):
        super().__init__()
        self.spec = spec
        self.up, self.down = nn.Linear(width, d_ff), nn.Linear(d_ff, width)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class _WrongShape(_MLP):
    """Drops the last channel."""

    def forward(self, x):
        return super().forward(x)[..., :-1]


class _UnusedParameter(_MLP):
    """Holds a parameter that forward never uses."""

    def __init__(self, spec, **context):
        super().__init__(spec, **context)
        self.unused = nn.Parameter(torch.ones(3))


class _StateOutsideStateDict(_MLP):
    """Keeps a random tensor outside the state_dict."""

    def __init__(self, spec, **context):
        super().__init__(spec, **context)
        self.offset = torch.randn(context["width"])

    def forward(self, x):
        return super().forward(x) + self.offset


class _Undocumented(_MLP):
    pass


_Undocumented.__doc__ = None


@pytest.mark.parametrize("cls,match", [
    (_Undocumented, "'spec' check: the component class has no docstring"),
    (_WrongShape, r"'forward' check: output shape \(2, 8, 8, 63\), expected \(2, 8, 8, 64\)"),
    (_UnusedParameter, "'gradients' check: parameter unused got no gradient"),
    (_StateOutsideStateDict, "'state_dict' check: a copy loaded from its state_dict computes something else"),
])
def test_check_component_catches_broken_modules(cls, match):
    registry = Registry("ffn")  # a private registry of the ffn family: same harness, no global state
    registry.add("bad", cls)
    with pytest.raises(hp.ComponentCheckError, match=match):
        hp.check_component(registry, "bad", width=64)


class _SamplerSpec(hp.SamplerSpec):
    type: Literal["bad_sampler"] = "bad_sampler"


class _IgnoresTheDenoiser(hp.Sampler):
    """Returns its input: the samples keep the initial noise."""

    Spec = _SamplerSpec

    def solve(self, run, x, sigmas):
        for i in run.steps():
            run.report(x, i, sigmas[i], sigmas[i], x)
        return x


class _HiddenNoise(hp.Sampler):
    """Draws noise although it claims to be deterministic."""

    Spec = _SamplerSpec

    def solve(self, run, x, sigmas):
        for i in run.steps():
            denoised = run.model(x, sigmas[i])
            run.report(x, i, sigmas[i], sigmas[i], denoised)
            x = denoised + run.noise(x) * sigmas[i + 1]
        return x


@pytest.mark.parametrize("cls,match", [
    (_IgnoresTheDenoiser, "samples of mean .* and std"),
    (_HiddenNoise, "`stochastic` property is False but it drew noise"),
])
def test_check_component_catches_broken_samplers(cls, match):
    registry = Registry("sampler")
    registry.add("bad_sampler", cls)
    with pytest.raises(hp.ComponentCheckError, match=match):
        hp.check_component(registry, "bad_sampler")


def test_check_component_input_errors():
    with pytest.raises(RegistryError, match="unknown ffn 'gelgu'"):
        hp.check_component("ffn", "gelgu")
    with pytest.raises(ValueError, match="grid must be two even sides"):
        hp.check_component("ffn", "geglu", grid=(7, 7))


# -- the example plugins of plugins/ (installed by CI) ---------------------------------------------
def _installed(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_examples = pytest.mark.skipif(
    not (_installed("hourglass-dinat") and _installed("hourglass-extras")),
    reason="the example plugins are not installed: pip install -e plugins/hourglass-dinat -e plugins/hourglass-extras",
)


@needs_examples
def test_example_plugins_are_loaded_with_their_components():
    statuses = {s.name: s for s in hp.plugin_statuses()}
    assert statuses["dinat"].status == "loaded" and statuses["dinat"].distribution == "hourglass-dinat"
    assert statuses["dinat"].components == ["attention:dinat"]
    assert statuses["extras"].status == "loaded"
    assert {"ffn:relu2", "sampler:dpmpp_2s_ancestral", "attention:axial", "kernel:axial",
            "backend:axial:torch"} <= set(statuses["extras"].components)
    assert ATTENTION.provider("dinat") == "hourglass-dinat"
    assert FFN.provider("relu2") == SAMPLER.provider("dpmpp_2s_ancestral") == "hourglass-extras"


@needs_examples
def test_example_plugin_components_are_in_the_parametrised_component_tests():
    from tests import test_components

    ids = {case.id for case in test_components.CASES}
    assert {"attention:dinat", "ffn:relu2", "sampler:dpmpp_2s_ancestral"} <= ids


@needs_examples
def test_cli_lists_the_example_plugins_and_builds_their_recipes(capsys):
    from hourglass.cli import main

    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["dinat"]["status"] == rows["extras"]["status"] == "loaded"
    assert rows["extras"]["distribution"] == "hourglass-extras" and "ffn:relu2" in rows["extras"]["components"]
    assert main(["list", "attention"]) == 0
    assert ["dinat", "hourglass-dinat"] in [line.split() for line in capsys.readouterr().out.splitlines()]
    for plugin in ("hourglass-dinat", "hourglass-extras"):
        assert main(["build", str(ROOT / "plugins" / plugin / "recipe.toml")]) == 0, capsys.readouterr().err
        assert "total" in capsys.readouterr().out
