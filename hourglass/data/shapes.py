"""``shapes``: a procedural class-conditional dataset that needs no files.

Each item is one filled shape (circle, square, triangle, cross, star or ring) of random size,
position, rotation and colour on a random plain background. Item ``i`` is a pure function of
``(seed, split, i)``; its class is ``i mod len(classes)``, so classes are balanced exactly (counts
differ by at most one). The shape's coverage mask is drawn at 4x the target resolution and
box-averaged down (anti-aliasing), then the two colours are blended in float, so edges are smooth
and a small model learns recognisable shapes at 32x32 within minutes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import Field, field_validator
from torch import Tensor

from hourglass.data._base import ImageDataset, check_split, mix_seed, parse_resolution
from hourglass.registry import DATASET
from hourglass.spec import Spec

__all__ = ["SHAPE_NAMES", "ShapesDataset", "ShapesDatasetSpec", "render_shape"]

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
_SUPERSAMPLE = 4
_MIN_LUMA_CONTRAST = 0.25
_SPLIT_SALT = {"train": 0, "val": 1}
_LUMA = np.array([0.299, 0.587, 0.114])


class ShapesDatasetSpec(Spec):
    """Spec of :class:`ShapesDataset`."""

    type: Literal["shapes"] = "shapes"
    size: int = Field(10000, ge=1, description="number of items in each split")
    seed: int = Field(0, description="seed of the procedure; item i is a pure function of (seed, split, i)")
    classes: tuple[str, ...] = Field(
        SHAPE_NAMES,
        min_length=1,
        description=f"which shapes to draw (class ids follow this order); any of {', '.join(SHAPE_NAMES)}",
    )
    channels: Literal[1, 3] = Field(3, description="3: colour; 1: the luma of the same picture")
    min_radius: float = Field(
        0.18, gt=0.0, le=0.5, description="smallest circumradius, as a fraction of the shorter image side"
    )
    max_radius: float = Field(
        0.40, gt=0.0, le=0.5, description="largest circumradius, as a fraction of the shorter image side"
    )

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in SHAPE_NAMES]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; choose from {list(SHAPE_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"classes {list(value)} lists a shape twice; list each shape once")
        return value

    @field_validator("max_radius")
    @classmethod
    def _radius_order(cls, value: float, info) -> float:
        low = info.data.get("min_radius")
        if low is not None and value < low:
            raise ValueError(f"max_radius {value} is below min_radius {low}; make max_radius >= min_radius")
        return value


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` centred on ``(cx, cy)``, rotated by ``angle``."""
    if kind == "square":
        pts = [
            (r * math.cos(math.pi / 4 + k * math.pi / 2), r * math.sin(math.pi / 4 + k * math.pi / 2)) for k in range(4)
        ]
    elif kind == "triangle":
        pts = [
            (r * math.cos(-math.pi / 2 + k * 2 * math.pi / 3), r * math.sin(-math.pi / 2 + k * 2 * math.pi / 3))
            for k in range(3)
        ]
    elif kind == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            phi = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(phi), rad * math.sin(phi)))
    elif kind == "cross":
        a = 0.3 * r / math.sqrt(1 + 0.09)  # arm half-width; arm tips' corners lie on the circumcircle
        b = math.sqrt(r * r - a * a)
        pts = [
            (a, b),
            (a, a),
            (b, a),
            (b, -a),
            (a, -a),
            (a, -b),
            (-a, -b),
            (-a, -a),
            (-b, -a),
            (-b, a),
            (-a, a),
            (-a, b),
        ]
    else:
        raise ValueError(f"{kind!r} is not a polygon shape")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render_shape(
    kind: str,
    size: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    angle: float,
    foreground: np.ndarray,
    background: np.ndarray,
) -> np.ndarray:
    """Render one anti-aliased shape.

    Args:
        kind: one of :data:`SHAPE_NAMES`.
        size: ``(H, W)`` in pixels.
        center: ``(x, y)`` in pixels (0 is the left/top edge).
        radius: circumradius in pixels.
        angle: rotation in radians.
        foreground: ``(3,)`` colour in [0, 1].
        background: ``(3,)`` colour in [0, 1].

    Returns:
        ``(H, W, 3)`` float64 array in [0, 1].
    """
    if kind not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {kind!r}; choose from {list(SHAPE_NAMES)}")
    height, width = size
    k = _SUPERSAMPLE
    mask = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = center[0] * k, center[1] * k, radius * k
    if kind in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if kind == "ring":
            ri = 0.55 * r
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=255)
    alpha = np.asarray(mask.reduce(k), dtype=np.float64)[..., None] / 255.0
    return background * (1.0 - alpha) + foreground * alpha


@DATASET.register("shapes")
class ShapesDataset(ImageDataset):
    """Procedural shapes (circle, square, triangle, cross, star, ring) on plain backgrounds.

    Built as ``DATASET.build({"type": "shapes"}, resolution=32, split="train")``. Splits ``"train"``
    and ``"val"`` draw from disjoint streams of the same procedure (``size`` items each).
    Items: ``image (C, H, W)`` in [-1, 1], ``class_cond ()`` = index into ``spec.classes``,
    ``aug_cond (9,)`` zeros.

    Args:
        spec: the :class:`ShapesDatasetSpec`.
        resolution: ``H`` = ``W`` as an int, or ``(H, W)``; every side at least 8.
        split: ``"train"`` or ``"val"``.
    """

    Spec = ShapesDatasetSpec

    @classmethod
    def classes_of(cls, spec: ShapesDatasetSpec) -> int:
        """One class per shape of ``spec.classes``."""
        return len(spec.classes)

    @classmethod
    def class_names_of(cls, spec: ShapesDatasetSpec) -> list[str]:
        """``spec.classes`` (the shape names, in class-id order)."""
        return list(spec.classes)

    @classmethod
    def channels_of(cls, spec: Any) -> int:
        """``spec.channels``."""
        return spec.channels

    def __init__(self, spec: ShapesDatasetSpec, *, resolution: int | tuple[int, int], split: str = "train") -> None:
        self.spec = spec = ShapesDatasetSpec.model_validate(spec)
        self.resolution = parse_resolution(resolution, minimum=8, what="shapes dataset")
        self.split = check_split(split, tuple(_SPLIT_SALT), "the shapes dataset")
        self.channels = spec.channels
        self.class_names = list(spec.classes)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return self.spec.size

    def parameters(self, index: int) -> dict:
        """The random choices of item ``index`` (a pure function of seed, split and index).

        Returns:
            dict with ``kind``, ``label``, ``center`` (x, y px), ``radius`` (px), ``angle`` (rad),
            ``foreground`` and ``background`` (``(3,)`` in [0, 1]).
        """
        spec = self.spec
        rng = np.random.default_rng(mix_seed(spec.seed, _SPLIT_SALT[self.split], index))
        height, width = self.resolution
        label = index % self.num_classes
        short = min(height, width)
        radius = rng.uniform(spec.min_radius, spec.max_radius) * short
        cx = rng.uniform(radius, width - radius)
        cy = rng.uniform(radius, height - radius)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        background = rng.uniform(0.0, 1.0, 3)
        for _ in range(100):  # rejection sampling for a visible shape, also after conversion to grey
            foreground = rng.uniform(0.0, 1.0, 3)
            if abs(float(_LUMA @ (foreground - background))) >= _MIN_LUMA_CONTRAST:
                break
        else:
            foreground = 1.0 - background
        return {
            "kind": spec.classes[label],
            "label": label,
            "center": (cx, cy),
            "radius": radius,
            "angle": angle,
            "foreground": foreground,
            "background": background,
        }

    def load(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """Render item ``index`` (``generator`` is unused: the item is fixed by the seed)."""
        p = self.parameters(index)
        rgb = render_shape(
            p["kind"], self.resolution, p["center"], p["radius"], p["angle"], p["foreground"], p["background"]
        )
        if self.channels == 1:
            rgb = rgb @ _LUMA[:, None]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(torch.float32)
        return (image * 2 - 1).clamp(-1, 1), p["label"]
