"""U-ViT's conditioning tokens (Bao et al. 2023).

U-ViT has no conditioning vector and no adaptive norms: the noise level and the class enter as
extra tokens in front of the patch tokens and reach the image through attention. The tokens, in
order: class (if ``num_classes > 0``), time, augmentation (if enabled), extra conditioning (if
``mapping_cond_dim > 0``).

The time token is U-ViT's ``timestep_embedding(t, width)`` (cosines then sines, max period
10000), optionally followed by an MLP ``Linear(d -> 4d), SiLU, Linear(4d -> d)`` (U-ViT's
``mlp_time_embed``, off in its ImageNet configs). With ``time_input = "log_sigma"`` (default) the
model receives the noise level and the token embeds ``time_scale * ln(sigma) / 4`` (EDM's continuous
``c_noise``); with ``time_input = "timestep"`` it receives U-ViT's own timestep (the discrete
``n`` in ``[1, 1000]``, or ``999 t`` of its continuous-time models) and embeds
``time_scale * t``, as U-ViT does (see :mod:`hourglass.nn.dit_mapping`).
"""

from __future__ import annotations

from functools import reduce

import torch
from torch import Tensor, nn

from hourglass.nn.dit_mapping import augmentation_applied, embedded_time, timestep_embedding
from hourglass.nn.mapping import AUG_COND_DIM, FourierFeatures

__all__ = ["UViTConditionTokens"]


class UViTConditionTokens(nn.Module):
    """The extra tokens of U-ViT: ``(B,) sigma [+ class, aug, extra] -> (B, n_tokens, width)``.

    Args:
        width: token channels.
        num_classes: real classes; the table has ``num_classes + 1`` rows (the last is the
            "no class" of classifier-free guidance). 0: no class token.
        mapping_cond_dim: width of an extra conditioning vector, embedded as one more token by
            ``Linear(mapping_cond_dim -> width)``. 0: none.
        augment: add a token ``Linear(Fourier(aug_cond))`` for Karras augmentation.
        mlp_time_embed: pass the sinusoidal time embedding through U-ViT's time MLP.
        time_input: ``"log_sigma"`` (the forward's ``sigma`` is a noise level) or ``"timestep"`` (a
            timestep, embedded as is).
        time_scale: the embedded value is ``time_scale * ln(sigma) / 4`` (or ``time_scale * t``).
        max_period: longest period of the sinusoidal embedding.
    """

    def __init__(
        self,
        width: int,
        *,
        num_classes: int = 0,
        mapping_cond_dim: int = 0,
        augment: bool = False,
        mlp_time_embed: bool = False,
        time_input: str = "log_sigma",
        time_scale: float = 1.0,
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        self.width = width
        self.time_input = time_input
        self.num_classes = num_classes
        self.mapping_cond_dim = mapping_cond_dim
        self.time_scale = time_scale
        self.max_period = max_period
        self.class_emb = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.time_mlp = (
            nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width))
            if mlp_time_embed
            else None
        )
        self.aug_emb = FourierFeatures(AUG_COND_DIM, width) if augment else None
        self.aug_proj = nn.Linear(width, width, bias=False) if augment else None
        self.cond_proj = nn.Linear(mapping_cond_dim, width) if mapping_cond_dim else None

    @property
    def n_tokens(self) -> int:
        """How many tokens :meth:`forward` returns."""
        return 1 + sum(m is not None for m in (self.class_emb, self.aug_emb, self.cond_proj))

    def forward(
        self,
        sigma: Tensor,
        class_cond: Tensor | None = None,
        aug_cond: Tensor | None = None,
        mapping_cond: Tensor | None = None,
    ) -> Tensor:
        """The condition tokens.

        Args:
            sigma: ``(B,)`` noise levels (> 0), or timesteps (>= 0) with ``time_input = "timestep"``.
            class_cond: ``(B,)`` int64 in ``[0, num_classes]``; required when ``num_classes > 0``.
            aug_cond: ``(B, 9)`` (zeros if None); without ``augment`` only all zeros (no
                augmentation) is accepted, and ignored.
            mapping_cond: ``(B, mapping_cond_dim)``.
        Returns:
            ``(B, n_tokens, width)`` in the order class, time, aug, extra.
        Raises:
            ValueError: for conditioning these tokens were not built to take.
        """
        tokens = []
        if self.class_emb is not None:
            if class_cond is None:
                raise ValueError(f"this U-ViT has {self.num_classes} classes: pass class_cond (B,)")
            tokens.append(self.class_emb(class_cond))
        elif class_cond is not None:
            raise ValueError("class_cond was given but the model is unconditional (num_classes = 0)")
        time = timestep_embedding(embedded_time(sigma, self.time_input, self.time_scale), self.width, self.max_period)
        if self.time_mlp is not None:
            time = self.time_mlp(time.to(self.time_mlp[0].weight.dtype))
        tokens.append(time)
        if self.aug_emb is not None:
            if aug_cond is None:
                aug_cond = sigma.new_zeros((sigma.shape[0], AUG_COND_DIM))
            tokens.append(self.aug_proj(self.aug_emb(aug_cond.to(self.aug_proj.weight.dtype))))
        elif aug_cond is not None and augmentation_applied(aug_cond):
            raise ValueError(
                "aug_cond describes applied augmentations but this U-ViT has no augmentation token; "
                "set model.augment = true (or train without augmentation: data.augment.p = 0)"
            )
        if self.cond_proj is not None:
            if mapping_cond is None:
                raise ValueError(f"this U-ViT takes mapping_cond of width {self.mapping_cond_dim}: pass it")
            tokens.append(self.cond_proj(mapping_cond.to(self.cond_proj.weight.dtype)))
        return _stack(tokens)

    def extra_repr(self) -> str:
        return (
            f"width={self.width}, num_classes={self.num_classes}, n_tokens={self.n_tokens}, "
            f"time_mlp={self.time_mlp is not None}, time_input={self.time_input}"
        )


def _stack(tokens: list[Tensor]) -> Tensor:
    """``n`` tensors ``(B, width)`` -> ``(B, n, width)`` in their promoted dtype (autocast mixes them)."""
    dtype = reduce(torch.promote_types, [t.dtype for t in tokens])
    return torch.stack([t.to(dtype) for t in tokens], dim=1)
