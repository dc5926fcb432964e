"""Global attention backends agree with each other and with the definition."""

from __future__ import annotations

import pytest
import torch

from hourglass.backends import global_attention


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP stalls when other processes share the CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "shape,scale", [((2, 4, 6, 3, 8), 1.0), ((1, 5, 5, 1, 16), 0.25), ((1, 8, 8, 2, 64), 64**-0.5)]
)
def test_torch_matches_sdpa_forward_and_backward(shape, scale):
    q, k, v = (torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a = global_attention(q, k, v, scale=scale, backend="torch")
    b = global_attention(q, k, v, scale=scale, backend="sdpa")
    assert a.shape == q.shape
    assert (a - b).abs().max().item() < 1e-10
    g = torch.randn_like(a)
    for x, y in zip(torch.autograd.grad(a, (q, k, v), g), torch.autograd.grad(b, (q, k, v), g), strict=True):
        assert (x - y).abs().max().item() < 1e-10


def test_torch_matches_the_definition():
    q, k, v = (torch.randn(1, 3, 4, 1, 8) for _ in range(3))
    out = global_attention(q, k, v, scale=0.5, backend="torch")
    qs, ks, vs = (x.reshape(12, 8) for x in (q, k, v))
    want = torch.softmax(qs @ ks.T * 0.5, dim=-1) @ vs
    assert (out.reshape(12, 8) - want).abs().max().item() < 1e-5


def test_every_token_sees_every_token():
    q = torch.zeros(1, 4, 4, 1, 2)
    v = torch.arange(16.0).reshape(1, 4, 4, 1, 1).expand(1, 4, 4, 1, 2)
    out = global_attention(q, q, v)
    assert torch.allclose(out, torch.full_like(out, 7.5))


@pytest.mark.gpu
def test_cuda_backends_match_torch():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: xformers and the fused SDPA kernels are GPU backends")
    from hourglass.backends import available_backends

    q, k, v = (torch.randn(2, 8, 8, 2, 32, device="cuda", requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    ref = global_attention(q, k, v, 0.3, backend="torch")
    want = torch.autograd.grad(ref, (q, k, v), g)
    usable = [n for n, why in available_backends("global", "cuda", torch.float32, True).items() if why is None]
    assert "sdpa" in usable
    for name in usable:
        out = global_attention(q, k, v, 0.3, backend=name)
        assert (out - ref).abs().max().item() < 2e-3, name
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), want, strict=True):
            assert (a - b).abs().max().item() < 2e-3, name
