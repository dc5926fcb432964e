"""Non-leaking augmentation (Karras et al. 2020, "ADA"), as EDM (Karras et al. 2022) trains diffusion with it.

HDiT (Crowson et al. 2024, arXiv 2401.11605) applies it to FFHQ-1024 with probability 0.12 (Sec. 5.1 and
Table 7) and feeds the augmentation parameters to the mapping network (App. E.3).

Each geometric transform is applied with probability ``p`` (x-flip: with probability 1/2 whenever
augmentation is on), and the model is told what was applied through the 9-number conditioning

    aug_cond = [xflip, yflip, scale_exp, cos(rot) - 1, sin(rot), aniso * cos(a), aniso * sin(a), tx, ty]

(the layout of k-diffusion's ``KarrasAugmentationPipeline``), so that at sampling time, with
``aug_cond = 0``, it generates un-augmented images: the augmentations do not leak.

The transform, in pixel coordinates centred on the image (x right, y down), maps an input point to
an output point by ``M = F_x F_y S(2^(s_scale * scale_exp)) R(-rot) R(a) A R(-a) T(tx W s_t, ty H s_t)``
with ``A = diag(2^(s_aniso * aniso), 2^(-s_aniso * aniso))``; rot and a are uniform in [-pi, pi),
scale_exp, aniso, tx, ty standard normal (zero when their transform is not drawn). The image is
resampled with ``grid_sample`` (bicubic by default, reflection padding) and clamped to [-1, 1]. A
draw with no effect besides flips uses exact ``torch.flip``. With ``p = 0`` nothing at all is
done (no x-flip either) and ``aug_cond`` is all zeros, as in k-diffusion's training script.

Wiring: wrap any dataset in :class:`Augmented`; the random draws come from the key's draw seed
(see :mod:`hourglass.data._base`) so that augmentation is reproducible and resumable.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torch.utils.data import Dataset

from hourglass.data._base import mix_seed
from hourglass.spec import Spec

__all__ = [
    "Augmented",
    "AugmentParams",
    "KarrasAugmentSpec",
    "apply_augment",
    "augment_matrix",
    "karras_augment",
    "sample_augment_params",
]


class KarrasAugmentSpec(Spec):
    """What the Karras augmentation may do (probability per transform and its strengths)."""

    p: float = Field(0.0, ge=0.0, le=1.0, description="probability of each transform; 0 disables augmentation")
    xflip: bool = Field(True, description="x-flip with probability 1/2 (whenever p > 0)")
    yflip: bool = Field(True, description="y-flip (with probability p/2)")
    scale: bool = Field(True, description="isotropic scaling by 2^(scale_std * N(0, 1))")
    rotate: bool = Field(True, description="rotation by U(-pi, pi)")
    aniso: bool = Field(True, description="anisotropic scaling by 2^(aniso_std * N(0, 1)) along a random angle")
    translate: bool = Field(True, description="translation by translate_std * N(0, 1) of the image size")
    scale_std: float = Field(0.2, ge=0.0, description="std of the log2 isotropic scale")
    aniso_std: float = Field(0.2, ge=0.0, description="std of the log2 anisotropic scale")
    translate_std: float = Field(0.125, ge=0.0, description="std of the translation as a fraction of the size")
    interpolation: Literal["bicubic", "bilinear"] = Field("bicubic", description="resampling filter")


class AugmentParams(NamedTuple):
    """One draw of the augmentation (raw values, zero where a transform was not applied).

    Attributes:
        xflip: 0 or 1.
        yflip: 0 or 1.
        scale_exp: exponent; the scale is ``2 ** (scale_std * scale_exp)``.
        rot: rotation angle in radians.
        aniso_angle: direction of the anisotropic scaling, radians.
        aniso: exponent of the anisotropic scaling.
        tx: x translation in units of ``translate_std * W``.
        ty: y translation in units of ``translate_std * H``.
    """

    xflip: float = 0.0
    yflip: float = 0.0
    scale_exp: float = 0.0
    rot: float = 0.0
    aniso_angle: float = 0.0
    aniso: float = 0.0
    tx: float = 0.0
    ty: float = 0.0

    def aug_cond(self) -> Tensor:
        """The 9-number conditioning vector ``(9,)`` float32 (layout in the module docstring)."""
        return torch.tensor(
            [
                self.xflip,
                self.yflip,
                self.scale_exp,
                math.cos(self.rot) - 1.0,
                math.sin(self.rot),
                self.aniso * math.cos(self.aniso_angle),
                self.aniso * math.sin(self.aniso_angle),
                self.tx,
                self.ty,
            ],
            dtype=torch.float32,
        )

    def is_flip_only(self) -> bool:
        """True when the draw changes nothing but flips."""
        return self.scale_exp == 0.0 and self.rot == 0.0 and self.aniso == 0.0 and self.tx == 0.0 and self.ty == 0.0


def sample_augment_params(spec: KarrasAugmentSpec, generator: torch.Generator | None = None) -> AugmentParams:
    """Draw one augmentation.

    The same fixed sequence of random numbers is drawn whatever ``spec`` enables, so switching
    one transform off leaves the draws of the others unchanged.

    Args:
        spec: the augmentation settings.
        generator: RNG; torch's global RNG when None.

    Returns:
        The :class:`AugmentParams`; all zeros when ``spec.p == 0``.
    """
    u = torch.rand(12, generator=generator, dtype=torch.float64).tolist()
    n = torch.randn(5, generator=generator, dtype=torch.float64).tolist()
    if spec.p == 0:
        return AugmentParams()

    def applied(enabled: bool, draw: float) -> float:
        return 1.0 if enabled and draw < spec.p else 0.0

    do_y = applied(spec.yflip, u[1])
    do_s = applied(spec.scale, u[3])
    do_r = applied(spec.rotate, u[4])
    do_a = applied(spec.aniso, u[6])
    do_t = applied(spec.translate, u[8])
    return AugmentParams(
        xflip=float(u[0] < 0.5) if spec.xflip else 0.0,
        yflip=float(u[2] < 0.5) * do_y,
        scale_exp=n[0] * do_s,
        rot=(u[5] * 2.0 - 1.0) * math.pi * do_r,
        aniso_angle=(u[7] * 2.0 - 1.0) * math.pi * do_a,
        aniso=n[1] * do_a,
        tx=n[2] * do_t,
        ty=n[3] * do_t,
    )


def _rotation(theta: float) -> Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _diag(sx: float, sy: float) -> Tensor:
    return torch.diag(torch.tensor([sx, sy, 1.0], dtype=torch.float64))


def augment_matrix(params: AugmentParams, height: int, width: int, spec: KarrasAugmentSpec | None = None) -> Tensor:
    """Forward map ``M`` (input -> output point) in centred pixel coordinates.

    Args:
        params: one draw.
        height: ``H`` of the image.
        width: ``W`` of the image.
        spec: strengths (``scale_std``, ``aniso_std``, ``translate_std``); defaults when None.

    Returns:
        ``(3, 3)`` float64 homogeneous matrix.
    """
    spec = spec or KarrasAugmentSpec()
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2] = params.tx * spec.translate_std * width
    shift[1, 2] = params.ty * spec.translate_std * height
    scale = 2.0 ** (spec.scale_std * params.scale_exp)
    aniso = 2.0 ** (spec.aniso_std * params.aniso)
    mats = [
        _diag(1.0 - 2.0 * params.xflip, 1.0),
        _diag(1.0, 1.0 - 2.0 * params.yflip),
        _diag(scale, scale),
        _rotation(-params.rot),
        _rotation(params.aniso_angle),
        _diag(aniso, 1.0 / aniso),
        _rotation(-params.aniso_angle),
        shift,
    ]
    out = torch.eye(3, dtype=torch.float64)
    for m in mats:
        out = out @ m
    return out


def apply_augment(image: Tensor, params: AugmentParams, spec: KarrasAugmentSpec | None = None) -> tuple[Tensor, Tensor]:
    """Apply one drawn augmentation to an image.

    Args:
        image: ``(C, H, W)`` float in [-1, 1].
        params: the draw.
        spec: strengths and interpolation; defaults when None.

    Returns:
        ``image (C, H, W)`` in [-1, 1] (same dtype) and ``aug_cond (9,)`` float32.
    """
    spec = spec or KarrasAugmentSpec()
    if image.ndim != 3:
        raise ValueError(f"augmentation expects one image (C, H, W), got shape {tuple(image.shape)}")
    cond = params.aug_cond()
    if params.is_flip_only():
        dims = [d for d, on in ((-1, params.xflip), (-2, params.yflip)) if on]
        return (image.flip(dims) if dims else image), cond
    _, height, width = image.shape
    # grid_sample wants output -> input in normalised coordinates, where centred pixel
    # coordinates are (x W/2, y H/2) with align_corners=False: theta = D^-1 M^-1 D.
    to_pixels = torch.diag(torch.tensor([width / 2.0, height / 2.0, 1.0], dtype=torch.float64))
    inverse = torch.linalg.inv(augment_matrix(params, height, width, spec))
    theta = torch.linalg.inv(to_pixels) @ inverse @ to_pixels
    work = image.float() if image.dtype not in (torch.float32, torch.float64) else image
    grid = F.affine_grid(theta[None, :2].to(work.dtype), [1, *work.shape], align_corners=False)
    out = F.grid_sample(work[None], grid, mode=spec.interpolation, padding_mode="reflection", align_corners=False)
    return out[0].clamp(-1.0, 1.0).to(image.dtype), cond


def karras_augment(
    image: Tensor, spec: KarrasAugmentSpec, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw and apply one Karras augmentation.

    Args:
        image: ``(C, H, W)`` float in [-1, 1].
        spec: the augmentation settings.
        generator: RNG; torch's global RNG when None.

    Returns:
        ``image (C, H, W)`` and ``aug_cond (9,)``; with ``spec.p == 0`` the input image itself and zeros.
    """
    params = sample_augment_params(spec, generator)
    if spec.p == 0:
        return image, torch.zeros(9, dtype=torch.float32)
    return apply_augment(image, params, spec)


class Augmented(Dataset):
    """A dataset whose images get Karras non-leaking augmentation and its ``aug_cond``.

    Forwards ``num_classes``, ``channels``, ``resolution``, ``class_names`` and ``len`` of the
    wrapped dataset. Keys are like the built-in datasets': an ``(index, draw)`` pair (as sent by
    :func:`hourglass.data.loader.create_dataloader`) makes the augmentation a pure function of
    ``(seed, draw)``; a plain int draws from torch's global RNG.

    Args:
        dataset: a dataset with the item contract of :class:`hourglass.data.ImageDataset`.
        spec: a :class:`KarrasAugmentSpec` (or a dict of its fields).
        seed: mixed into every draw, so two seeds give different augmentations of the same batches.

    Items: ``{"image": (C, H, W), "class_cond": (), "aug_cond": (9,)}``.
    """

    def __init__(self, dataset: Dataset, spec: KarrasAugmentSpec | dict | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.spec = KarrasAugmentSpec.model_validate(spec or {})
        self.seed = int(seed)
        self.uses_draw_keys = True

    @property
    def num_classes(self) -> int:
        """Classes of the wrapped dataset (0: unconditional)."""
        return self.dataset.num_classes  # type: ignore[attr-defined]

    @property
    def channels(self) -> int:
        """``C`` of the wrapped dataset."""
        return self.dataset.channels  # type: ignore[attr-defined]

    @property
    def resolution(self) -> tuple[int, int]:
        """``(H, W)`` of the wrapped dataset."""
        return self.dataset.resolution  # type: ignore[attr-defined]

    @property
    def class_names(self) -> list[str]:
        """Class names of the wrapped dataset."""
        return self.dataset.class_names  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> dict[str, Tensor]:
        """Item for ``key`` with the augmented image and its ``aug_cond (9,)``."""
        if isinstance(key, (tuple, list)) and len(key) == 2:
            index, draw = key
            inner = getattr(self.dataset, "uses_draw_keys", False)
            return self.augment(self.dataset[(index, self.inner_draw(draw)) if inner else index], draw)
        return self.augment(self.dataset[key], None)

    @staticmethod
    def inner_draw(draw: int) -> int:
        """The draw seed the wrapped dataset gets for the item of draw seed ``draw``."""
        return mix_seed(draw, 1)

    def augment(self, item: dict[str, Tensor], draw: int | None) -> dict[str, Tensor]:
        """Augment the wrapped dataset's ``item`` (``image (C, H, W)``) with the choices of ``draw``.

        Args:
            item: an item of the wrapped dataset.
            draw: the key's draw seed (None: torch's global RNG).

        Returns:
            The item with the augmented ``image (C, H, W)`` and its ``aug_cond (9,)``.
        """
        generator = None if draw is None else torch.Generator().manual_seed(mix_seed(self.seed, draw, 2))
        image, cond = karras_augment(item["image"], self.spec, generator)
        return {**item, "image": image, "aug_cond": cond}

    def __repr__(self) -> str:
        return f"Augmented({self.dataset!r}, p={self.spec.p}, seed={self.seed})"
