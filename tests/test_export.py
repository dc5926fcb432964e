"""Export: ``torch.export`` programs and ONNX files of the test presets, checked against eager PyTorch.

Every model has random weights with its zero-initialised layers filled (``unzero_``), so no output is
trivially zero. The dynamic-batch exports are traced at batch 2 and run at batches 1 and 3. ONNX
export of a tiny model takes 5-15 s on 2 CPU cores (torch's decompositions and graph optimiser), so the
per-preset ONNX tests are marked slow; the attention kernels' own ONNX test is fast.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch

from hourglass import create_model
from hourglass.backends import BACKEND
from hourglass.backends import _torch_neighborhood as tn
from hourglass.backends._torch_neighborhood import neighborhood_attention_torch
from hourglass.backends._window import shifted_window_torch
from hourglass.cli import main
from hourglass.export import (
    ExportError,
    ExportFailed,
    check_onnx,
    example_inputs,
    export_backends,
    export_onnx,
    export_program,
)
from hourglass.registry import DENOISER
from tests.conftest import unzero_

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["hdit_test", "hdit_swin_test", "dit_test", "uvit_test"]
TOLERANCE = 1e-4  # issue #16: onnxruntime within 1e-4 of eager
INSTALL = r"pip install onnx onnxscript onnxruntime \(the onnx extra"  # what a missing package error says

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _model(name: str, **overrides: object) -> torch.nn.Module:
    return unzero_(create_model(name, **overrides)).eval()


def _eager(net: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return net(**inputs)


def _onnxruntime(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == sorted(inputs)
    (out,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    return torch.from_numpy(out)


# -- torch.export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "hdit_test", *(pytest.param(n, marks=pytest.mark.slow) for n in PRESETS if n != "hdit_test")])
def test_exported_program_matches_eager_at_other_batch_sizes(name):
    model = _model(name)
    program = export_program(model)  # traced at batch 2, dynamic batch
    for batch in (1, 3):
        inputs = example_inputs(model, batch, seed=batch)
        x, sigma = inputs.pop("x"), inputs.pop("sigma")
        with torch.no_grad():
            got = program.module()(x, sigma, **inputs)
            want = model(x, sigma, **inputs)  # eager on its auto backends (sdpa for global on CPU)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE)


def test_a_static_batch_program_takes_only_its_batch():
    model = _model("dit_test")
    program = export_program(model, batch=1, dynamic_batch=False)
    inputs = example_inputs(model, 1)
    x, sigma = inputs.pop("x"), inputs.pop("sigma")
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x, sigma, **inputs), model(x, sigma, **inputs),
                                   rtol=0, atol=TOLERANCE)
        with pytest.raises(Exception, match="x"):
            program.module()(torch.cat([x, x]), torch.cat([sigma, sigma]), class_cond=inputs["class_cond"].repeat(2))
    with pytest.raises(ExportError, match="batch >= 2.*dynamic_batch=False"):
        export_program(model, batch=1)


@pytest.mark.parametrize("size,kernel_size,dilation", [((8, 8), 3, 1), ((13, 7), 4, 1), ((31, 17), 7, 1),
                                                        ((9, 12), 2, 1), ((12, 10), 3, 2), ((4, 4), 3, 1)])
def test_exported_neighborhood_kernel_equals_eager_for_any_batch(size, kernel_size, dilation):
    """The export path computes the same tiles, halos and masks as the eager kernel: equal bit for bit.

    The geometry caches are emptied first, so the geometry is built while torch.export traces; eager calls
    after it still work (a geometry cached with fake tensors in it would break them).
    """
    tn._axis.cache_clear()
    tn._cached_geometry.cache_clear()

    class Kernel(torch.nn.Module):
        def forward(self, q, k, v):
            return neighborhood_attention_torch(q, k, v, kernel_size, dilation, 0.5)

    def qkv(batch):
        return [torch.randn(batch, *size, 2, 8) for _ in range(3)]

    b = torch.export.Dim("batch")
    program = torch.export.export(Kernel(), tuple(qkv(2)), dynamic_shapes=({0: b},) * 3, strict=False)
    for batch in (1, 2, 5):
        args = qkv(batch)
        assert torch.equal(program.module()(*args), neighborhood_attention_torch(*args, kernel_size, dilation, 0.5))


def test_attention_kernels_run_in_onnxruntime_without_nan(tmp_path):
    """The reference neighborhood (tiled, -inf masks) and shifted-window (SDPA with a mask) kernels in ONNX."""

    class Kernels(torch.nn.Module):
        def forward(self, q, k, v):
            return (neighborhood_attention_torch(q, k, v, 3, 1, 0.7) + shifted_window_torch(q, k, v, 4, 2, 0.7)
                    + neighborhood_attention_torch(q, k, v, 4, 2, 0.7))

    q, k, v = (torch.randn(2, 8, 8, 2, 16) for _ in range(3))
    b = torch.export.Dim("batch")
    program = torch.export.export(Kernels(), (q, k, v), dynamic_shapes=({0: b},) * 3, strict=False)
    torch.onnx.export(program, (), str(tmp_path / "k.onnx"), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(tmp_path / "k.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (2, 3):
        args = [torch.randn(batch, 8, 8, 2, 16) * 4 for _ in range(3)]
        (got,) = session.run(None, dict(zip(names, (a.numpy() for a in args), strict=True)))
        got = torch.from_numpy(got)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, Kernels()(*args), rtol=0, atol=TOLERANCE)  # outputs up to ~10


# -- backends -------------------------------------------------------------------------------------
def test_export_pins_reference_backends_then_restores_pins_and_mode():
    """Whatever the modules are pinned to (natten here), the export runs the reference; the pins come back."""
    calls: list[str] = []
    saved = {name: BACKEND.get(f"global:{name}") for name in ("torch", "sdpa")}
    for name, old in saved.items():
        spy = dataclasses.replace(old, fn=lambda *a, fn=old.fn, name=name: (calls.append(name), fn(*a))[1])
        BACKEND.add(f"global:{name}", spy, override=True)
    try:
        model = _model("dit_test").train()
        for layer in model.layers:
            layer.attn.backend = "xformers"  # cannot even run on CPU
        export_program(model)
        assert set(calls) == {"torch"}
        assert [layer.attn.backend for layer in model.layers] == ["xformers", "xformers"] and model.training
        calls.clear()
        export_program(model, backends={"global": "sdpa"})
        assert set(calls) == {"sdpa"}
    finally:
        for name, old in saved.items():
            BACKEND.add(f"global:{name}", old, override=True)


@pytest.mark.parametrize("backends,message", [
    ({"neighborhood": "natten"},
     r"neighborhood backend 'natten' \(chosen for encoder\.0\.0\.attn\) cannot be exported.*with 'torch'"),
    ({"neighborhood": "flex"}, r"neighborhood backend 'flex' .*cannot be exported"),
    ({"global": "xformers"}, r"global backend 'xformers' \(chosen for middle\.0\.attn\).*'torch' or 'sdpa'"),
    ({"globl": "torch"}, r"no attention kernel is called 'globl' \(did you mean 'global'\?\)"),
    ({"neighborhood": "nattn"}, r"unknown neighborhood backend 'nattn' \(did you mean 'natten'\?\)"),
])
def test_a_backend_that_cannot_export_is_named_with_the_fix(backends, message, tmp_path):
    model = _model("hdit_test")
    with pytest.raises(ExportError, match=message):
        export_program(model, backends=backends)
    with pytest.raises(ExportError, match=message):
        export_onnx(model, tmp_path / "never.onnx", backends=backends)
    assert not list(tmp_path.iterdir())
    assert {m.backend for m in model.modules() if hasattr(m, "kernel") and m.kernel} == {None}


def test_export_backends_lists_the_kernels_used():
    assert export_backends(_model("hdit_test")) == {"global": "torch", "neighborhood": "torch"}
    assert export_backends(_model("hdit_swin_test")) == {"global": "torch", "shifted_window": "torch"}
    assert export_backends(_model("dit_test"), {"global": "auto", "neighborhood": "natten"}) == {"global": "torch"}


def test_what_cannot_be_exported_says_why(monkeypatch):
    model = _model("dit_test")
    with pytest.raises(ExportError, match="backbone .* or a denoiser around one, got Linear"):
        export_program(torch.nn.Linear(2, 2))
    with pytest.raises(ExportError, match="denoiser=True exports the preconditioning"):
        export_program(model, denoiser=True)
    with pytest.raises(ExportError, match="opset must be an integer from 18"):
        export_onnx(model, "never.onnx", opset=17)
    with pytest.raises(ExportError, match="batch must be a positive integer"):
        example_inputs(model, 0)
    for package in ("onnx", "onnxscript"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, package, None)  # as if not installed
            with pytest.raises(ExportError, match=rf"needs the {package} package .*{INSTALL}"):
                export_onnx(model, "never.onnx")
    with pytest.raises(ExportError, match=r"needs the onnxruntime package .*" + INSTALL):
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        check_onnx(model, "never.onnx")


def test_example_inputs_follow_the_spec():
    model = create_model("hdit_test", mapping_cond_dim=5)
    inputs = example_inputs(model, 12)
    assert {k: tuple(v.shape) for k, v in inputs.items()} == {
        "x": (12, 3, 32, 32), "sigma": (12,), "class_cond": (12,), "mapping_cond": (12, 5)}
    assert bool((inputs["sigma"] > 0).all()) and inputs["class_cond"].dtype == torch.int64
    assert set(inputs["class_cond"].tolist()) == set(range(11))  # every class and the "no class" id
    assert list(example_inputs(create_model("hdit_swin_test"), 2)) == ["x", "sigma"]


# -- ONNX -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_onnx_matches_eager_in_onnxruntime(name, tmp_path):
    model = _model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx")  # batch 2, dynamic
    assert path == tmp_path / f"{name}.onnx" and path.is_file()
    for batch in (1, 3):
        inputs = example_inputs(model, batch, seed=10 + batch)
        got, want = _onnxruntime(path, inputs), _eager(model, inputs)
        assert torch.isfinite(got).all() and want.abs().max() > 0.1  # not trivially zero
        torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE)
    check = check_onnx(model, path, batch=4)
    assert check.inputs["x"][0] == 4 and check.max_abs_error <= TOLERANCE


@pytest.mark.slow
def test_onnx_of_the_denoiser_and_what_the_check_catches(tmp_path):
    model = _model("hdit_test")
    denoiser = DENOISER.build({"type": "karras", "sigma_data": 0.7}, model=model)
    path = export_onnx(denoiser, tmp_path / "d.onnx", denoiser=True, opset=20)
    inputs = example_inputs(model, 3)
    torch.testing.assert_close(_onnxruntime(path, inputs), _eager(denoiser, inputs), rtol=0, atol=TOLERANCE)
    assert check_onnx(denoiser, path, denoiser=True).max_abs_error <= TOLERANCE
    with pytest.raises(ExportError, match="computes 'denoised', so check it with denoiser=True"):
        check_onnx(model, path)
    with torch.no_grad():
        model.patch_out.proj.weight.add_(1e-3)  # the file no longer matches the model
    with pytest.raises(ExportFailed, match="differs from eager PyTorch by up to"):
        check_onnx(denoiser, path, denoiser=True)
    with pytest.raises(ExportError, match="takes inputs"):
        check_onnx(_model("hdit_swin_test"), export_onnx(_model("dit_test"), tmp_path / "dit.onnx"))


@pytest.mark.parametrize("schedule", ["linear", "continuous_linear"])
def test_onnx_of_a_ddpm_denoiser_on_a_timestep_dit(tmp_path, schedule):
    """Official DiT checkpoints run under the ddpm denoiser: its sigma -> timestep map exports too."""
    model = _model("dit_test", mapping={"type": "dit", "time_input": "timestep"}, out_channels=8)
    denoiser = DENOISER.build({"type": "ddpm", "schedule": schedule}, model=model)
    path = export_onnx(denoiser, tmp_path / "ddpm.onnx", denoiser=True)
    inputs = example_inputs(model, 3)
    inputs["sigma"] = torch.tensor([0.02, 1.7, 80.0])  # between the schedule's steps, across its range
    got, want = _onnxruntime(path, inputs), _eager(denoiser, inputs)
    assert got.shape == inputs["x"].shape  # the learned-sigma channels dropped
    # D = x - sigma eps reaches ~10^2 at sigma = 80: float32 rounding there is ~1e-4 absolute, 1e-6 relative
    torch.testing.assert_close(got, want, rtol=1e-5, atol=TOLERANCE)


# -- the command ----------------------------------------------------------------------------------
def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_exports_a_run_that_onnxruntime_runs(tmp_path, capsys):
    from hourglass.recipe import build_model, dump_recipe, load_recipe, plain_data
    from hourglass.train.checkpoint import checkpoint_path, save_checkpoint

    recipe = load_recipe(ROOT / "recipes" / "quickstart.toml")
    model = unzero_(build_model(recipe, device="cpu"))
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}
    save_checkpoint(checkpoint_path(tmp_path / "run", 7), step=7, model=model.state_dict(), ema=ema,
                    recipe_toml=dump_recipe(recipe), model_spec=plain_data(model.spec.model_dump()))
    out = tmp_path / "out" / "model.onnx"
    code, text, err = _run(capsys, "export-onnx", str(tmp_path / "run"), str(out), "--no-ema")
    assert code == 0, err
    assert "step 7" in text and "raw" in text and "F(x, sigma, class_cond)" in text
    assert re.search(r"checked in onnxruntime .* at batch 3: x \(3, 1, 32, 32\).*max \|onnxruntime - eager\| = ", text)
    inputs = example_inputs(model, 5)
    torch.testing.assert_close(_onnxruntime(out, inputs), _eager(model, inputs), rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_cli_exports_a_preset_denoiser_with_a_static_batch(tmp_path, capsys):
    out = tmp_path / "uvit.onnx"
    code, text, err = _run(capsys, "export-onnx", "uvit_test", str(out), "--denoiser", "--static-batch",
                           "--batch", "1", "--backend", "global=sdpa")
    assert code == 0, err
    assert "random weights, seed 0" in text and "D(x, sigma, class_cond)" in text and "global=sdpa" in text
    assert "at batch 1: x (1, 3, 16, 16)" in text and "-> denoised (1, 3, 16, 16)" in text
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == [(1, 3, 16, 16), (1,), (1,)]
    torch.manual_seed(0)  # the command's model: the preset with seed 0, zero-initialised layers filled
    denoiser = DENOISER.build("karras", model=unzero_(create_model("uvit_test")).eval())
    inputs = example_inputs(denoiser, 1, seed=4)
    got, want = _onnxruntime(out, inputs), _eager(denoiser, inputs)
    assert (want - _eager(denoiser.inner_model, inputs)).abs().max() > 0.1  # D is not F
    torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("argv,message", [
    (["hdit_test", "out.onx"], r"must end in \.onnx"),
    (["hdit_tst", "out.onnx"], r"neither a recipe file nor a model preset\. Did you mean 'hdit_test'"),
    (["runs/nothing", "out.onnx"], r"runs/nothing does not exist"),
    (["hdit_test", "out.onnx", "--batch", "1"], r"--batch 1 with a dynamic batch.*--static-batch"),
    (["hdit_test", "out.onnx", "--batch", "0", "--static-batch"], r"--batch must be a positive integer"),
    (["hdit_test", "out.onnx", "--opset", "17"], r"opset must be an integer from 18"),
    (["hdit_test", "out.onnx", "--ema"], r"--ema chooses a checkpoint's weights"),
    (["hdit_test", "out.onnx", "--backend", "neighborhood=natten"],
     r"neighborhood backend 'natten' \(chosen for encoder\.0\.0\.attn\) cannot be exported"),
    (["hdit_test", "out.onnx", "--backend", "global"], r"--backend takes KERNEL=NAME"),
    (["hdit_test", "out.onnx", "--tolerance", "0"], r"--tolerance must be > 0"),
])
def test_cli_user_mistakes_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "export-onnx", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("hourglass export-onnx: error: "), err
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_without_onnxruntime_names_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = _run(capsys, "export-onnx", "dit_test", str(tmp_path / "m.onnx"))
    assert code == 2 and "pip install onnx onnxscript onnxruntime (the onnx extra" in err and "--no-check" in err


# -- the docs page --------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_page_python_examples_run(tmp_path, monkeypatch, capsys):
    """The Python blocks of docs/export.md run as written (in a scratch folder) and print what they say."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "export.md").read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/export.md", "exec"), {})  # noqa: S102 - our own docs
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "torch.Size([3, 3, 32, 32])" and float(printed[1]) <= TOLERANCE
    assert printed[-1] == "(4, 3, 32, 32)"
    assert {p.name for p in tmp_path.iterdir()} == {"hdit_test.onnx", "hdit_test_denoiser.onnx"}
