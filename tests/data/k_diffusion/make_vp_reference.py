"""Write ``kdiff_vp_reference.safetensors``: k-diffusion's discrete-time VP (DDPM) wrappers and samplers on a tiny DiT.

Run once, by hand, with the real k-diffusion importable (it is **not** a dependency of hourglass and is never
downloaded at test time). From the repository root::

    pip install --no-deps --target /tmp/kdpkg k-diffusion==0.1.1.post1 torchsde torchdiffeq trampoline
    PYTHONPATH=/tmp/kdpkg:. python tests/data/k_diffusion/make_vp_reference.py

(``--no-deps --target`` keeps k-diffusion out of the environment; ``k_diffusion.sampling`` imports
``torchsde`` / ``torchdiffeq`` / ``scipy`` / ``tqdm`` and ``k_diffusion.utils`` ``PIL`` / ``safetensors`` /
``torchvision``, which the hourglass environment already has except the three installed above.) Only
``k_diffusion.external`` and ``k_diffusion.sampling`` are imported: the package's ``__init__`` (which pulls in
its training and evaluation code) is bypassed by registering an empty ``k_diffusion`` package whose
``__path__`` is the installed folder.

What is computed (everything in float64, CPU):

* **The network**: ``RefDiT`` of ``tests/test_interop_dit_uvit.py`` (plain torch, the official DiT
  ``models.py`` forward and parameter names; no hourglass code) at 4x8x8 latents, patch 2, width 32,
  depth 2, 2 heads, 10 classes (+ the "no class" row), learned sigma (8 output channels), with seed-0
  random weights (std 0.1). Its official-format **float32** state dict is stored (``model.<name>``, as a
  checkpoint would hold it, ``pos_embed`` the float32 sin-cos table); the reference runs it in float64
  (weights cast exactly, ``pos_embed`` recomputed in float64: ``RefDiT.to_float64``).
* **k-diffusion's wrapper** around it: ``DiscreteEpsDDPMDenoiser`` (eps) or ``DiscreteVDDPMDenoiser``
  (v; the same DiT's first 4 channels read as v, so the v maths are exercised on a real network) with
  ``alphas_cumprod`` (float64) of DiT's ``linear`` schedule (``gaussian_diffusion.get_beta_schedule``:
  ``linspace(1e-4, 0.02, 1000)``) or the ``scaled_linear`` schedule (latent diffusion's
  ``make_beta_schedule``: ``linspace(0.00085**0.5, 0.012**0.5, 1000)**2``), and ``quantize`` False/True.
  k-diffusion's wrapper calls ``inner_model(x * c_in, t, **kwargs)``; DiT returns 8 channels (eps and the
  learned variance), so the inner model is an adapter ``(x, t, y) -> dit(x, t, y)[:, :4]``, the usual way
  of wrapping DiT in k-diffusion (hourglass's ``ddpm`` denoiser drops the extra channels itself).
* **Samplers**: ``k_diffusion.sampling.sample_euler`` (no churn) and ``sample_dpmpp_2m`` over 12 steps of
  ``get_sigmas_karras(12, wrapper.sigma_min, wrapper.sigma_max, rho=7)`` (evaluated with float64 as the
  default dtype, so the schedule is float64), from stored initial noise ``randn * sigmas[0]``, with class
  labels ``y``.
* **Classifier-free guidance**: k-diffusion has no CFG wrapper, so this script combines the two calls as
  hourglass's ``CFGDenoiser`` does (``hourglass/diffusion/guidance.py``): one wrapper call over the doubled
  batch ``[x; x]`` with labels ``[y; 10]`` (10 = ``num_classes``, DiT's "no class" row), then
  ``D_uncond + scale * (D_cond - D_uncond)``, ``scale = 4``. (DiT's own ``forward_with_cfg`` guides eps,
  on its first 3 channels only; for eps prediction ``D = x - sigma eps`` is affine in eps, so guiding D
  is guiding eps on all channels.)

Keys (``<case>`` is ``<schedule>.<prediction>.q<0|1>``, e.g. ``linear.eps.q0``; ``<schedule>`` is
``linear`` or ``scaled_linear``):

* ``model.<name>``: the official-format DiT state dict (float32).
* ``<schedule>.alphas_cumprod`` (1000,): the alphas_cumprod given to k-diffusion.
* ``<schedule>.sigma_min_max`` (2,): the wrapper's ``sigma_min``, ``sigma_max``.
* ``grid.sigma`` (S,): noise levels (below, inside and above both schedules' ranges, some exactly on a
  table entry, some between the geometric and arithmetic means of neighbouring entries); ``<schedule>.q<0|1>.sigma_to_t`` (S,): ``wrapper.sigma_to_t(grid.sigma)`` (float64; with
  quantize the int64 index, stored as float64).
* ``grid.t`` (T,): timesteps in [0, 999], float32-exact (k-diffusion's ``t_to_sigma`` casts ``t`` to
  float32 first); ``<schedule>.t_to_sigma`` (T,): ``wrapper.t_to_sigma(grid.t)``.
* ``<schedule>.get_sigmas_10`` (11,), ``<schedule>.get_sigmas_38`` (39,): ``wrapper.get_sigmas(n)``, the
  schedule's own levels at ``t = linspace(999, 0, n)`` (whole-number ``t``), then 0.
* ``denoise.x_unit`` (4, 4, 8, 8) standard normal, ``denoise.y`` (4,) int64 (the last is 10, "no class"),
  ``<schedule>.denoise.sigma`` (4,); ``<case>.denoised`` (4, 4, 8, 8) = ``wrapper(x, sigma, y=y)`` with
  ``x = denoise.x_unit * sigma[:, None, None, None]``.
* ``sample.y`` (2,) int64, ``sample.noise`` (2, 4, 8, 8), ``<schedule>.sample.sigmas`` (13,): the Karras
  schedule, ``<schedule>.sample.x_init`` (2, 4, 8, 8) = ``sample.noise * sigmas[0]``;
  ``<case>.euler`` / ``<case>.dpmpp_2m`` (2, 4, 8, 8): final samples;
  ``<case>.euler_cfg4`` / ``<case>.dpmpp_2m_cfg4``: the same with CFG scale 4 (eps cases only).

Metadata: ``k_diffusion_version``, ``torch_version``, ``date``, ``generator`` (this script), ``config``
(JSON: the RefDiT sizes, the cases, steps, CFG scale and formula), ``keys`` (JSON: the list above, shortly).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = HERE / "kdiff_vp_reference.safetensors"

DIT = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10,
           learn_sigma=True)
SCHEDULES = ("linear", "scaled_linear")
PREDICTIONS = ("eps", "v")
STEPS = 12
GET_SIGMAS = (10, 38)  # 999 / (n - 1) is a whole number
CFG_SCALE = 4.0


def import_k_diffusion() -> tuple[types.ModuleType, types.ModuleType, str]:
    """``k_diffusion.external`` and ``k_diffusion.sampling`` without running the package's ``__init__``."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("k_diffusion is not importable: see this script's docstring (pip install --target, PYTHONPATH)")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    external = importlib.import_module("k_diffusion.external")
    sampling = importlib.import_module("k_diffusion.sampling")
    return external, sampling, importlib.metadata.version("k-diffusion")


def alphas_cumprod(name: str, n: int = 1000) -> torch.Tensor:
    """DiT's linear (gaussian_diffusion.get_beta_schedule) and latent diffusion's scaled-linear betas, float64."""
    if name == "linear":
        scale = 1000 / n
        betas = np.linspace(scale * 0.0001, scale * 0.02, n, dtype=np.float64)
    else:
        betas = np.linspace(0.00085**0.5, 0.012**0.5, n, dtype=np.float64) ** 2
    return torch.from_numpy(np.cumprod(1.0 - betas, axis=0))


class FirstChannels(torch.nn.Module):
    """The inner model given to k-diffusion: DiT's eps (or v) channels, its learned-variance channels dropped."""

    def __init__(self, dit: torch.nn.Module, channels: int) -> None:
        super().__init__()
        self.dit, self.channels = dit, channels

    def forward(self, x, t, y):
        return self.dit(x, t, y)[:, : self.channels]


def main() -> None:
    external, sampling, kd_version = import_k_diffusion()
    sys.path.insert(0, str(ROOT))
    from tests.test_interop_dit_uvit import RefDiT  # plain torch: the official DiT forward

    torch.manual_seed(0)
    ref = RefDiT(**DIT).randomize(seed=0).eval()
    official = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}  # float32, as released
    dit = ref.to_float64()
    c = DIT["in_channels"]
    inner = FirstChannels(dit, c)
    f64 = torch.float64

    out: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in official.items()}
    g = torch.Generator().manual_seed(1234)
    size = DIT["input_size"]
    out["denoise.x_unit"] = torch.randn(4, c, size, size, generator=g, dtype=f64)
    out["denoise.y"] = torch.tensor([0, 3, 9, DIT["num_classes"]], dtype=torch.int64)
    out["sample.noise"] = torch.randn(2, c, size, size, generator=g, dtype=f64)
    out["sample.y"] = torch.tensor([1, 7], dtype=torch.int64)
    t_grid = torch.cat([torch.tensor([0.0, 0.25, 1.0, 1.5, 17.0, 500.0, 998.5, 999.0]),
                        (torch.rand(24, generator=g) * 999).float()]).double()
    out["grid.t"] = t_grid

    sigma_parts = [torch.tensor([1e-4, 0.01, 0.5, 1.0, 2.0, 14.0, 100.0, 157.0, 1e3], dtype=f64)]
    for name in SCHEDULES:  # exact table entries of both schedules
        table = ((1 - alphas_cumprod(name)) / alphas_cumprod(name)) ** 0.5
        sigma_parts.append(table[[0, 1, 10, 500, 998, 999]])
        # between the geometric and the arithmetic mean of neighbouring steps: nearest in log sigma (k-diffusion's
        # quantize) and nearest in sigma round these differently
        lo, hi = table[[0, 1, 2, 5]], table[[1, 2, 3, 6]]
        sigma_parts.append(((lo * hi).sqrt() + (lo + hi) / 2) / 2)
    sigma_parts.append(torch.exp(torch.empty(24, dtype=f64).uniform_(-6, 6, generator=g)))
    out["grid.sigma"] = torch.cat(sigma_parts)

    def with_cfg(model):
        def guided(x, sigma, y):
            uncond = torch.full_like(y, DIT["num_classes"])
            d_cond, d_uncond = model(torch.cat([x, x]), torch.cat([sigma, sigma]), y=torch.cat([y, uncond])).chunk(2)
            return d_uncond + CFG_SCALE * (d_cond - d_uncond)
        return guided

    for name in SCHEDULES:
        abar = alphas_cumprod(name)
        out[f"{name}.alphas_cumprod"] = abar
        probe = external.DiscreteEpsDDPMDenoiser(inner, abar, quantize=False)
        sigma_min, sigma_max = float(probe.sigma_min), float(probe.sigma_max)
        out[f"{name}.sigma_min_max"] = torch.tensor([sigma_min, sigma_max], dtype=f64)
        out[f"{name}.t_to_sigma"] = probe.t_to_sigma(t_grid).double()
        for n in GET_SIGMAS:  # t = linspace(999, 0, n): whole numbers (exact in k-diffusion's float32 t)
            out[f"{name}.get_sigmas_{n}"] = probe.get_sigmas(n).double()
        for q in (False, True):
            out[f"{name}.q{int(q)}.sigma_to_t"] = probe.sigma_to_t(out["grid.sigma"], quantize=q).double()

        sig = torch.tensor([sigma_min * 1.5, 0.7, 5.3, sigma_max * 0.9], dtype=f64)
        out[f"{name}.denoise.sigma"] = sig
        x_den = out["denoise.x_unit"] * sig.view(-1, 1, 1, 1)
        default = torch.get_default_dtype()
        torch.set_default_dtype(f64)  # get_sigmas_karras builds its ramp in the default dtype
        try:
            sigmas = sampling.get_sigmas_karras(STEPS, sigma_min, sigma_max, rho=7.0)
        finally:
            torch.set_default_dtype(default)
        assert sigmas.dtype == f64
        out[f"{name}.sample.sigmas"] = sigmas
        x_init = out["sample.noise"] * sigmas[0]
        out[f"{name}.sample.x_init"] = x_init

        for pred in PREDICTIONS:
            cls = external.DiscreteEpsDDPMDenoiser if pred == "eps" else external.DiscreteVDDPMDenoiser
            for q in (False, True):
                case = f"{name}.{pred}.q{int(q)}"
                wrapper = cls(inner, abar, quantize=q).eval()
                with torch.no_grad():
                    out[f"{case}.denoised"] = wrapper(x_den, sig, y=out["denoise.y"])
                    for sname, fn in (("euler", sampling.sample_euler), ("dpmpp_2m", sampling.sample_dpmpp_2m)):
                        out[f"{case}.{sname}"] = fn(wrapper, x_init.clone(), sigmas, extra_args={"y": out["sample.y"]},
                                                    disable=True)
                        if pred == "eps":
                            out[f"{case}.{sname}_cfg4"] = fn(with_cfg(wrapper), x_init.clone(), sigmas,
                                                             extra_args={"y": out["sample.y"]}, disable=True)
                for k in (f"{case}.denoised", f"{case}.euler", f"{case}.dpmpp_2m"):
                    assert out[k].dtype == f64 and torch.isfinite(out[k]).all(), k

    config = {
        "ref_dit": DIT, "weights": "RefDiT.randomize(seed=0): randn * 0.1, pos_embed the fixed sin-cos table",
        "schedules": list(SCHEDULES), "predictions": list(PREDICTIONS), "quantize": [False, True],
        "timesteps": 1000, "steps": STEPS, "karras_rho": 7.0, "cfg_scale": CFG_SCALE,
        "cfg": "D_uncond + scale * (D_cond - D_uncond), uncond label = num_classes (10), one call on [x; x]",
        "inner_model": "(x, t, y) -> RefDiT(x, t, y)[:, :4] in float64",
        "denoise_x": "denoise.x_unit * <schedule>.denoise.sigma[:, None, None, None]",
    }
    keys = {
        "model.<name>": "official-format DiT state dict (float32)",
        "<schedule>.alphas_cumprod": "float64 alphas_cumprod given to k-diffusion",
        "<schedule>.sigma_min_max": "wrapper.sigma_min, wrapper.sigma_max",
        "grid.sigma / <schedule>.q<0|1>.sigma_to_t": "wrapper.sigma_to_t(grid.sigma, quantize=q)",
        "grid.t / <schedule>.t_to_sigma": "wrapper.t_to_sigma(grid.t) (grid.t float32-exact)",
        "<schedule>.get_sigmas_<n>": "wrapper.get_sigmas(n), n = 10, 38",
        "<case>.denoised": "wrapper(denoise.x_unit * sigma, <schedule>.denoise.sigma, y=denoise.y)",
        "<case>.euler / .dpmpp_2m": "sample_euler / sample_dpmpp_2m(wrapper, <schedule>.sample.x_init, "
                                    "<schedule>.sample.sigmas, extra_args={'y': sample.y})",
        "<case>.euler_cfg4 / .dpmpp_2m_cfg4": "the same through the CFG combine, scale 4 (eps cases)",
        "<case>": "<schedule>.<eps|v>.q<0|1>",
    }
    metadata = {
        "k_diffusion_version": kd_version, "torch_version": torch.__version__,
        "date": datetime.date.today().isoformat(), "generator": "tests/data/k_diffusion/make_vp_reference.py",
        "config": json.dumps(config), "keys": json.dumps(keys),
    }
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT), metadata=metadata)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} tensors) with k-diffusion {kd_version}")


if __name__ == "__main__":
    main()
