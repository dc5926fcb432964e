"""Shifted-window attention against a dense implementation of the rule of k-diffusion's HDiT code.

The rule (documented in :func:`hourglass.backends.shifted_window_attention`) is that of the authors'
``apply_window_attention`` / ``make_shifted_window_masks``; the HDiT paper (Crowson et al. 2024,
arXiv 2401.11605) ablates Swin attention in Sec. 5.2, Table 1, step B1.
"""

from __future__ import annotations

import pytest
import torch

from hourglass.backends import shifted_window_attention


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP stalls when other processes share the CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dense_shifted_window(q, k, v, s, shift, scale):
    """Roll, then one (N, N) mask written pair by pair from the rule, then roll back."""
    b, n_h, n_w, heads, d = q.shape
    q, k, v = (torch.roll(x, shifts=(shift, shift), dims=(1, 2)) for x in (q, k, v))
    n = n_h * n_w
    mask = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        ai, aj = divmod(a, n_w)
        for c in range(n):
            ci, cj = divmod(c, n_w)
            if (ai // s, aj // s) != (ci // s, cj // s):
                continue  # different windows
            ok = True
            if ai // s == 0:  # first window row: both or neither in the first `shift` rows
                ok &= (ai % s < shift) == (ci % s < shift)
            if aj // s == 0:  # first window column: same with columns
                ok &= (aj % s < shift) == (cj % s < shift)
            mask[a, c] = ok

    def seq(x):
        return x.reshape(b, n, heads, d).transpose(1, 2)

    att = (seq(q) @ seq(k).transpose(-1, -2) * scale).masked_fill(~mask, float("-inf")).softmax(-1)
    o = (att @ seq(v)).transpose(1, 2).reshape(b, n_h, n_w, heads, d)
    return torch.roll(o, shifts=(-shift, -shift), dims=(1, 2))


def _qkv(shape, dtype=torch.float32, grad=False):
    return [torch.randn(shape, dtype=dtype, requires_grad=grad) for _ in range(3)]


CASES = [(8, 8, 4, 0), (8, 8, 4, 2), (12, 8, 4, 2), (8, 16, 8, 4), (12, 12, 4, 1), (6, 6, 3, 1), (16, 16, 8, 4)]


@pytest.mark.parametrize("n_h,n_w,window,shift", CASES)
def test_torch_matches_dense_forward_and_backward(n_h, n_w, window, shift):
    q, k, v = _qkv((2, n_h, n_w, 2, 4), torch.float64, grad=True)
    out = shifted_window_attention(q, k, v, window, shift, scale=0.8, backend="torch")
    ref = dense_shifted_window(q, k, v, window, shift, 0.8)
    assert out.shape == q.shape
    assert (out - ref).abs().max().item() < 1e-10
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() < 1e-10


def test_shift_zero_is_plain_windows():
    q, k, v = _qkv((1, 8, 8, 1, 4))
    out = shifted_window_attention(q, k, v, 4, 0, backend="torch")
    # top-left window computed on its own
    w = [x[:, :4, :4].reshape(1, 16, 4) for x in (q, k, v)]
    ref = ((w[0] @ w[1].transpose(-1, -2)).softmax(-1) @ w[2]).reshape(1, 4, 4, 1, 4)
    assert (out[:, :4, :4] - ref).abs().max().item() < 1e-5


def test_shift_changes_the_result():
    q, k, v = _qkv((1, 8, 8, 1, 4))
    a = shifted_window_attention(q, k, v, 4, 0, backend="torch")
    b = shifted_window_attention(q, k, v, 4, 2, backend="torch")
    assert (a - b).abs().max().item() > 1e-3


@pytest.mark.parametrize("n_h,n_w,window,shift", [(8, 8, 4, 2), (16, 8, 8, 4), (12, 12, 4, 1), (8, 16, 8, 0)])
def test_flex_forward_matches_torch_on_cpu(n_h, n_w, window, shift):
    q, k, v = _qkv((2, n_h, n_w, 2, 16))
    ref = shifted_window_attention(q, k, v, window, shift, 0.5, backend="torch")
    with torch.no_grad():
        out = shifted_window_attention(q, k, v, window, shift, 0.5, backend="flex")
    assert (out - ref).abs().max().item() < 1e-5


def test_window_must_divide_the_grid():
    q, k, v = _qkv((1, 12, 10, 1, 4))
    with pytest.raises(ValueError, match="window_size 4 must divide the 12 x 10 token grid"):
        shifted_window_attention(q, k, v, 4, 2)


@pytest.mark.parametrize("shift", [-1, 4, 2.0])
def test_shift_out_of_range_is_explained(shift):
    q, k, v = _qkv((1, 8, 8, 1, 4))
    with pytest.raises(ValueError, match=r"shift must be an integer in \[0, window_size=4\)"):
        shifted_window_attention(q, k, v, 4, shift)


@pytest.mark.gpu
@pytest.mark.parametrize("shift", [0, 4])
def test_cuda_flex_matches_torch_forward_and_backward(shift):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: compiled flex_attention trains on GPUs only")
    q, k, v = (torch.randn(2, 16, 24, 2, 32, device="cuda", requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    ref = shifted_window_attention(q, k, v, 8, shift, 0.5, backend="torch")
    out = shifted_window_attention(q, k, v, 8, shift, 0.5, backend="flex")
    assert (out - ref).abs().max().item() < 2e-3
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
        assert (a - b).abs().max().item() < 2e-3
