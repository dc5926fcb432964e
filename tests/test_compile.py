"""torch.compile(fullgraph=True) of the model presets, and no host reads of device values in a forward.

The fast tests use the ``aot_eager`` backend (Dynamo + AOTAutograd, no code generation): they catch
every graph break and check the traced forward and backward against eager mode in a few seconds.
The inductor run is marked slow.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hourglass
from hourglass import create_model, debug, debug_checks
from hourglass.backends import BACKEND, use_backends
from hourglass.backends import _torch_neighborhood as tn
from hourglass.diffusion.denoiser import KarrasDenoiser, KarrasDenoiserSpec
from hourglass.registry import SAMPLER
from tests.conftest import unzero_

PRESETS = ["hdit_test", "dit_test", "uvit_test", "hdit_swin_test"]


def _inputs(model: torch.nn.Module, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, dict]:
    spec = model.spec
    x = torch.randn(batch, spec.in_channels, spec.input_size, spec.input_size)
    sigma = torch.linspace(0.5, 3.0, batch)
    cond = {"class_cond": torch.arange(batch) % (spec.num_classes + 1)} if spec.num_classes else {}
    return x, sigma, cond


def _forward_backward(call, params: dict[str, torch.nn.Parameter], x, sigma, cond):
    for p in params.values():
        p.grad = None
    out = call(x, sigma, **cond)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).mean().backward()
    return out.detach(), {name: p.grad.clone() for name, p in params.items() if p.grad is not None}


def _close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    """Within ``tol`` of ``want`` relative to its largest entry: traced code may reassociate sums."""
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item(), msg=lambda m: f"{what}: {m}")


def _check_compiled_matches_eager(name: str, backend: str, tol: float) -> None:
    torch._dynamo.reset()  # HDiT presets share one forward: start each from fresh Dynamo state
    model = unzero_(create_model(name))
    params = dict(model.named_parameters())
    x, sigma, cond = _inputs(model)
    want, want_grads = _forward_backward(model, params, x, sigma, cond)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    for _ in range(2):  # the second call runs the cached graph
        got, got_grads = _forward_backward(compiled, params, x, sigma, cond)
        _close(got, want, tol, "output")
        assert got_grads.keys() == want_grads.keys() == params.keys()
        for key, grad in want_grads.items():
            _close(got_grads[key], grad, tol, f"grad of {key}")


@pytest.mark.parametrize("name", PRESETS)
def test_fullgraph_aot_eager_matches_eager(name):
    _check_compiled_matches_eager(name, "aot_eager", tol=1e-5)


@pytest.mark.slow
def test_fullgraph_inductor_matches_eager():
    # inductor fuses and reorders reductions: ~1e-5 of the largest entry measured in float32
    _check_compiled_matches_eager("hdit_test", "inductor", tol=5e-5)


@pytest.mark.parametrize("name", ["dit_test", pytest.param("hdit_test", marks=pytest.mark.slow)])
def test_fullgraph_with_gradient_checkpointing(name):
    torch._dynamo.reset()
    model = unzero_(create_model(name)).set_gradient_checkpointing(True)
    x, sigma, cond = _inputs(model)
    x.requires_grad_(True)
    want = model(x, sigma, **cond)
    (want_grad,) = torch.autograd.grad(want.square().mean(), x)
    got = torch.compile(model, fullgraph=True, backend="aot_eager")(x, sigma, **cond)
    (got_grad,) = torch.autograd.grad(got.square().mean(), x)
    _close(got, want, 1e-5, "output")
    _close(got_grad, want_grad, 1e-5, "grad of x")


def test_compiled_denoiser_with_a_float_sigma():
    torch._dynamo.reset()
    model = unzero_(create_model("dit_test"))
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(), model)
    x, _, cond = _inputs(model)
    compiled = torch.compile(denoiser, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        _close(compiled(x, 1.5, **cond), denoiser(x, 1.5, **cond), 1e-5, "denoised")


class _CountingBackend:
    """A Dynamo backend that counts the graphs it compiles and runs them as they are."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs) -> torch.fx.GraphModule:
        self.graphs += 1
        return gm


def test_backend_choice_is_made_at_trace_time_and_guarded():
    """use_backends and the module's backend attribute recompile; the choice follows them."""
    torch._dynamo.reset()
    calls: list[str] = []
    saved = {name: BACKEND.get(f"global:{name}") for name in ("torch", "sdpa")}
    for name, old in saved.items():
        spy = dataclasses.replace(old, fn=lambda *a, fn=old.fn, name=name: (calls.append(name), fn(*a))[1])
        BACKEND.add(f"global:{name}", spy, override=True)
    try:
        _check_guarded_choice(calls)
    finally:
        for name, old in saved.items():
            BACKEND.add(f"global:{name}", old, override=True)


def _check_guarded_choice(calls: list[str]) -> None:
    model = create_model("dit_test")
    x, sigma, cond = _inputs(model)
    counter = _CountingBackend()
    compiled = torch.compile(model, fullgraph=True, backend=counter)

    def run() -> tuple[set[str], int]:
        calls.clear()
        with torch.no_grad():
            compiled(x, sigma, **cond)
        return set(calls), counter.graphs

    assert run() == ({"sdpa"}, 1)  # auto on CPU
    with use_backends(**{"global": "torch"}):
        assert run() == ({"torch"}, 2)
    assert run() == ({"sdpa"}, 2)  # the first graph again
    for layer in model.layers:
        layer.attn.backend = "torch"
    assert run() == ({"torch"}, 3)


@pytest.mark.parametrize("size,kernel_size,tiles", [((8, 8), 3, None), ((13, 7), 4, None), ((31, 17), 7, (6, 5)),
                                                    ((64, 64), 5, None), ((9, 12), 2, (2, 3))])
def test_traced_chunk_mask_matches_the_cached_bias(size, kernel_size, tiles):
    th, tw = tiles or tn.choose_tiles(*size, kernel_size)
    least = kernel_size // 2 + 1
    geo = tn._geometry(*size, kernel_size, max(th, least), max(tw, least))
    chunks = tn._chunks(3, geo, 4, "cpu") + [(0, 1, y, y + 1) for y in range(geo.rows.n_tiles)]
    for _, _, y0, y1 in chunks:
        bias = tn._chunk_bias(geo, y0, y1, torch.float32, torch.device("cpu"))
        assert torch.equal(tn._traced_chunk_allowed(geo, y0, y1, torch.device("cpu")), bias == 0)
        assert bool((bias[bias != 0] == float("-inf")).all())


# -- host reads ----------------------------------------------------------------------------------
class _HostReads(TorchDispatchMode):
    """Records every op that hands a tensor's value to Python (``bool(t)``, ``t.item()``, ``torch.equal``)."""

    OPS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.OPS:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def accelerator_like(monkeypatch):
    """Treat CPU tensors as an accelerator's: value checks would be a synchronisation there."""
    monkeypatch.setattr(debug, "_HOST_DEVICES", frozenset())
    monkeypatch.delenv(debug.DEBUG_ENV, raising=False)


@pytest.mark.parametrize("name", PRESETS)
def test_forward_and_sampler_steps_read_no_values_on_an_accelerator(name, accelerator_like):
    model = create_model(name).eval()
    x, sigma, cond = _inputs(model)
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(), model)
    sampler = SAMPLER.build("dpmpp_3m_sde")
    with torch.no_grad():
        model(x, sigma, **cond)  # warm the kernels' caches (geometry is built once, on the host)
        with _HostReads() as reads:
            model(x, sigma, **cond)
            denoiser(x, sigma, **cond)
            denoiser.loss(x, torch.randn_like(x), sigma, **cond)
            sampler(denoiser, x * 10, [10.0, 3.0, 1.0, 0.3, 0.0], extra_args=cond)  # floats: no read at all
    assert reads.seen == []


def test_host_read_detector_sees_the_cpu_value_checks():
    model = create_model("dit_test")
    x, sigma, cond = _inputs(model)
    with torch.no_grad(), _HostReads() as reads:
        model(x, sigma, **cond)
    assert len(reads.seen) == 2  # sigma and class_cond, checked since CPU reads cost no sync


def test_value_checks_run_on_cpu_and_in_debug_mode(accelerator_like, monkeypatch):
    model = create_model("hdit_test")
    x, bad_sigma = torch.randn(1, 3, 32, 32), torch.tensor([-1.0])
    bad_class = torch.tensor([11])
    # "accelerator" tensors: values are not read (a bad class id would fail inside the embedding)
    assert torch.isnan(model(x, bad_sigma, class_cond=torch.tensor([0]))).all()
    with debug_checks(), pytest.raises(ValueError, match="finite and > 0"):
        model(x, bad_sigma, class_cond=torch.tensor([0]))
    monkeypatch.setenv(debug.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 10\]"):
        model(x, torch.tensor([1.0]), class_cond=bad_class)
    with debug_checks(False):  # the context manager overrides the environment
        model(x, bad_sigma, class_cond=torch.tensor([0]))
    denoiser = KarrasDenoiser(KarrasDenoiserSpec(), model)
    with pytest.raises(ValueError, match="positive and finite"):
        denoiser(x, bad_sigma, class_cond=torch.tensor([0]))
    monkeypatch.undo()  # real CPU tensors again: always checked, no debug mode needed
    with pytest.raises(ValueError, match="finite and > 0"):
        model(x, bad_sigma, class_cond=torch.tensor([0]))


def test_debug_checks_is_public():
    assert hourglass.debug_checks is debug_checks and "debug_checks" in hourglass.__all__
