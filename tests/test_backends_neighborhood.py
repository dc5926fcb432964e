"""Neighborhood attention backends against NATTEN and an independent dense-mask oracle."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from hourglass.backends import BackendUnavailableError, _flex, neighborhood_attention
from hourglass.backends._torch_neighborhood import choose_tiles, neighborhood_attention_torch

HAS_NATTEN = importlib.util.find_spec("natten") is not None
needs_natten = pytest.mark.skipif(not HAS_NATTEN, reason="natten is not importable (pip install natten==0.21.7)")


def dense_neighborhood(q, k, v, kernel_size, dilation, scale):
    """Brute force: an (N, N) mask built query by query from the NATTEN rule, then softmax."""
    b, n_h, n_w, heads, d = q.shape

    def axis_mask(n):
        m = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            members = list(range(i % dilation, n, dilation))  # i's sub-grid along this axis
            pos = members.index(i)
            start = pos - kernel_size // 2
            start = max(0, min(start, len(members) - kernel_size))  # shift the window inside
            for j in members[start : start + kernel_size]:
                m[i, j] = True
        return m

    mr, mc = axis_mask(n_h), axis_mask(n_w)
    mask = (mr[:, None, :, None] & mc[None, :, None, :]).reshape(n_h * n_w, n_h * n_w)
    assert (mask.sum(-1) == kernel_size**2).all()

    def seq(x):
        return x.reshape(b, n_h * n_w, heads, d).transpose(1, 2)

    s = (seq(q) @ seq(k).transpose(-1, -2)) * scale
    o = s.masked_fill(~mask, float("-inf")).softmax(-1) @ seq(v)
    return o.transpose(1, 2).reshape(b, n_h, n_w, heads, d)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP stalls when other processes share the CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _qkv(shape, dtype=torch.float32, grad=False):
    return [torch.randn(shape, dtype=dtype, requires_grad=grad) for _ in range(3)]


def _natten(q, k, v, kernel_size, dilation, scale):
    natten = pytest.importorskip("natten")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return natten.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, scale=scale)


GRIDS = [(9, 14, 2, 16), (16, 11, 1, 32), (12, 12, 3, 8), (10, 13, 2, 64)]  # H, W, heads, D
CASES = [(g, ks, d) for g in GRIDS for ks in range(2, 10) for d in (1, 2, 3) if ks * d <= min(g[:2])]


@needs_natten
@pytest.mark.parametrize("grid,kernel_size,dilation", CASES, ids=lambda x: str(x))
def test_torch_matches_natten_forward(grid, kernel_size, dilation):
    n_h, n_w, heads, d = grid
    q, k, v = _qkv((2, n_h, n_w, heads, d))
    ref = _natten(q, k, v, kernel_size, dilation, 0.3)
    out = neighborhood_attention(q, k, v, kernel_size, dilation, scale=0.3, backend="torch")
    assert out.shape == q.shape
    assert (out - ref).abs().max().item() < 1e-5


@needs_natten
@pytest.mark.parametrize("tiles", [(4, 4), (5, 8), (8, 8), (9, 16)])
def test_torch_matches_natten_for_any_tile_shape(tiles):
    q, k, v = _qkv((1, 17, 23, 2, 16))
    ref = _natten(q, k, v, 7, 1, 1.0)
    out = neighborhood_attention_torch(q, k, v, 7, 1, 1.0, tiles=tiles)
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "n_h,n_w,kernel_size,dilation,tiles",
    [
        (9, 14, 3, 1, None),
        (7, 8, 4, 1, None),
        (11, 10, 3, 2, None),
        (16, 11, 5, 2, (4, 4)),
        (9, 9, 2, 3, None),
        (13, 6, 6, 1, (7, 3)),
    ],
)
def test_torch_matches_dense_oracle_forward_and_backward(n_h, n_w, kernel_size, dilation, tiles):
    q, k, v = _qkv((2, n_h, n_w, 2, 8), torch.float64, grad=True)
    out = neighborhood_attention_torch(q, k, v, kernel_size, dilation, 0.7, tiles=tiles)
    ref = dense_neighborhood(q, k, v, kernel_size, dilation, 0.7)
    assert (out - ref).abs().max().item() < 1e-10
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() < 1e-10


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (4, 1), (3, 2)])
def test_torch_gradcheck(kernel_size, dilation):
    q, k, v = _qkv((1, 7, 9, 1, 3), torch.float64, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: neighborhood_attention(a, b, c, kernel_size, dilation, 0.9, backend="torch"),
        (q, k, v),
        fast_mode=True,
    )


def test_torch_grad_only_for_inputs_that_need_it():
    q, k, v = _qkv((1, 8, 8, 2, 8))
    k.requires_grad_()
    neighborhood_attention(q, k, v, 3, backend="torch").square().sum().backward()
    assert q.grad is None and v.grad is None and k.grad is not None and k.grad.abs().sum() > 0


def test_torch_accepts_non_contiguous_inputs_and_leaves_them_alone():
    base = torch.randn(1, 10, 12, 3, 2, 16)
    q, k, v = base.unbind(3)  # strided views of one tensor
    before = base.clone()
    out = neighborhood_attention(q, k, v, 5, scale=2.0, backend="torch")
    ref = dense_neighborhood(q, k, v, 5, 1, 2.0)
    assert (out - ref).abs().max().item() < 1e-5
    assert torch.equal(base, before)


def test_torch_bfloat16_close_to_float32():
    q, k, v = _qkv((1, 12, 12, 2, 16))
    ref = neighborhood_attention(q, k, v, 5, backend="torch")
    out = neighborhood_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 5, backend="torch")
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max().item() < 5e-2


def test_torch_memory_is_linear_in_tokens():
    """No (N, N) buffer: on a 96 x 96 grid (an N x N fp32 matrix is 340 MB) every single
    allocation of forward + backward stays a small multiple of q."""
    q, k, v = _qkv((1, 96, 96, 1, 8), grad=True)
    with torch.profiler.profile(profile_memory=True) as prof:
        neighborhood_attention(q, k, v, 7, backend="torch").sum().backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest < 32 * q.numel() * q.element_size()


def test_choose_tiles_respects_minimum_side():
    for ks in range(2, 12):
        th, tw = choose_tiles(32, 32, ks)
        assert min(th, tw) >= ks // 2 + 1


@pytest.mark.parametrize(
    "n_h,n_w,kernel_size,dilation", [(9, 14, 3, 1), (16, 11, 4, 2), (20, 20, 7, 1), (17, 19, 5, 3)]
)
def test_flex_layout_forward_matches_torch_on_cpu(n_h, n_w, kernel_size, dilation):
    q, k, v = _qkv((2, n_h, n_w, 2, 16))
    ref = neighborhood_attention(q, k, v, kernel_size, dilation, 0.5, backend="torch")
    with torch.no_grad():
        out = neighborhood_attention(q, k, v, kernel_size, dilation, 0.5, backend="flex")
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("n_h,n_w,kernel_size,dilation", [(9, 30, 3, 1), (20, 20, 7, 1), (40, 17, 5, 3)])
def test_flex_block_mask_covers_every_allowed_pair(n_h, n_w, kernel_size, dilation):
    """Eager flex ignores block sparsity; the compiled kernel relies on it, so check it here."""
    layout = _flex._neighborhood_layout(n_h, n_w, kernel_size, dilation, torch.device("cpu"))
    n = layout.seq_len
    idx = torch.arange(n)
    allowed = layout.block_mask.mask_mod(0, 0, idx[:, None], idx[None, :])
    blocks = layout.block_mask.to_dense()[0, 0].bool()
    covered = blocks.repeat_interleave(_flex.BLOCK, 0).repeat_interleave(_flex.BLOCK, 1)[:n, :n]
    assert not (allowed & ~covered).any()
    real = layout.perm.new_zeros(n, dtype=torch.bool)
    real[layout.inverse] = True
    assert (allowed[real].sum(-1) == kernel_size**2).all()


def test_kernel_too_large_for_grid_is_explained():
    q, k, v = _qkv((1, 8, 12, 1, 8))
    with pytest.raises(ValueError, match=r"kernel_size \* dilation = 3 \* 3 = 9 exceeds the 8 x 12 token grid"):
        neighborhood_attention(q, k, v, 3, dilation=3)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"kernel_size": 1}, "kernel_size must be an integer >= 2"),
        ({"kernel_size": 3, "dilation": 0}, "dilation must be an integer >= 1"),
        ({"kernel_size": 3.0}, "kernel_size must be an integer"),
    ],
)
def test_bad_arguments_are_explained(kwargs, msg):
    q, k, v = _qkv((1, 8, 8, 1, 8))
    with pytest.raises(ValueError, match=msg):
        neighborhood_attention(q, k, v, **kwargs)


def test_bad_shapes_are_explained():
    q, k, v = _qkv((1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"must have shape \(B, H, W, heads, D\)"):
        neighborhood_attention(q, k, v, 3)
    q, k, v = _qkv((1, 8, 8, 1, 8))
    with pytest.raises(ValueError, match="the same shape"):
        neighborhood_attention(q, k[:, :4], v, 3)


@needs_natten
def test_natten_backward_on_cpu_is_refused_with_reason():
    q, k, v = _qkv((1, 8, 8, 1, 16), grad=True)
    with pytest.raises(BackendUnavailableError, match="natten backward failed on cpu") as info:
        neighborhood_attention(q, k, v, 3, backend="natten")
    assert "Backends that can run here: torch" in str(info.value)
    with torch.no_grad():  # forward alone is fine
        out = neighborhood_attention(q, k, v, 3, backend="natten")
    assert (out - neighborhood_attention(q, k, v, 3, backend="torch")).abs().max() < 1e-5


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: natten/flex training kernels run on GPUs only")
    return torch.device("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["natten", "flex"])
@pytest.mark.parametrize("n_h,n_w,kernel_size,dilation", [(16, 16, 7, 1), (24, 20, 5, 2), (32, 32, 4, 1)])
def test_cuda_backend_matches_torch_forward_and_backward(backend, n_h, n_w, kernel_size, dilation):
    device = _cuda_or_skip()
    if backend == "natten" and not HAS_NATTEN:
        pytest.skip("natten is not importable")
    q, k, v = (torch.randn(2, n_h, n_w, 2, 32, device=device, requires_grad=True) for _ in range(3))
    g = torch.randn(2, n_h, n_w, 2, 32, device=device)
    ref = neighborhood_attention(q, k, v, kernel_size, dilation, 0.5, backend="torch")
    want = torch.autograd.grad(ref, (q, k, v), g)
    out = neighborhood_attention(q, k, v, kernel_size, dilation, 0.5, backend=backend)
    got = torch.autograd.grad(out, (q, k, v), g)
    assert (out - ref).abs().max().item() < 2e-3
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() < 2e-3
