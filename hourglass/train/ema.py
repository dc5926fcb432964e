"""Exponential moving average of the weights with a warm-up.

HDiT (Crowson et al. 2024, arXiv 2401.11605) evaluates the EMA weights with decay 0.9999 (Sec. 5.1 and
Table 7); the warm-up is that of the authors' k-diffusion trainer (``EMAWarmup``).

The decay after ``t`` updates is ``min(decay_max, 1 - (1 + t)^(-power))``: the first update
copies the weights (decay 0), then the average lengthens as training goes on. ``power = 0.75``
is what k-diffusion's 256-px ``image_transformer_v2`` configs use (about 0.999 at 10k steps, 0.9999 at
215k); ``2/3``, in its smaller configs, is the other common value.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_decay", "EMA"]


def ema_decay(step: int, power: float = 0.75, decay_max: float = 0.9999) -> float:
    """EMA decay after ``step`` earlier updates: ``min(decay_max, 1 - (1 + step)^(-power))``.

    Args:
        step: number of EMA updates made before this one (0 for the first).
        power: warm-up power, > 0 (0.75 in the paper, 2/3 is common too).
        decay_max: upper bound of the decay, in [0, 1).

    Returns:
        The decay in ``[0, decay_max]``.

    Raises:
        ValueError: for a negative step, a non-positive power or ``decay_max`` outside [0, 1).
    """
    if step < 0:
        raise ValueError(f"EMA step must be >= 0, got {step}")
    if power <= 0:
        raise ValueError(f"EMA power must be > 0 (0.75 or 2/3 are usual), got {power}")
    if not 0.0 <= decay_max < 1.0:
        raise ValueError(f"EMA decay_max must lie in [0, 1) (0.9999 is usual), got {decay_max}")
    return min(decay_max, 1.0 - (1.0 + step) ** (-power))


class EMA:
    """An averaged copy of a model, updated after every optimizer step.

    Parameters are averaged (``ema = decay * ema + (1 - decay) * param``); buffers are copied.
    The copy is in eval mode and needs no gradients.

    Args:
        model: the trained model (the raw module, not a DDP or compiled wrapper).
        power: warm-up power of :func:`ema_decay`.
        decay_max: upper bound of the decay.

    Attributes:
        model: the averaged ``nn.Module``.
    """

    def __init__(self, model: nn.Module, power: float = 0.75, decay_max: float = 0.9999) -> None:
        ema_decay(0, power, decay_max)  # validates the arguments
        self.power = power
        self.decay_max = decay_max
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay(self, step: int) -> float:
        """The decay used by the update after ``step`` earlier updates."""
        return ema_decay(step, self.power, self.decay_max)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Average ``model``'s weights into the EMA copy.

        Args:
            model: the trained model, with the same parameter and buffer names as the copy.
            step: number of updates made before this one.

        Returns:
            The decay that was used.
        """
        decay = self.decay(step)
        params = dict(model.named_parameters())
        for name, ema_param in self.model.named_parameters():
            ema_param.lerp_(params[name].detach().to(ema_param.dtype), 1.0 - decay)
        buffers = dict(model.named_buffers())
        for name, ema_buffer in self.model.named_buffers():
            ema_buffer.copy_(buffers[name])
        return decay

    def __repr__(self) -> str:
        return f"EMA(power={self.power}, decay_max={self.decay_max})"
