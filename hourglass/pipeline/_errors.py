"""The one error type of the sampling pipeline, and the argument checks that raise it."""

from __future__ import annotations

from typing import Any

__all__ = ["PipelineError", "positive_int", "check_strength"]


class PipelineError(ValueError):
    """A request the loaded model cannot serve: an unknown class, a strength outside (0, 1], an
    unreadable image, an option the sampler does not have, ... The message says what to change."""


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an integer >= 1, else a :class:`PipelineError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_strength(strength: Any) -> None:
    """Refuse an img2img/inpainting ``strength`` outside ``(0, 1]``."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise PipelineError(f"strength must be in (0, 1] (1 = the whole schedule), got {strength!r}")
