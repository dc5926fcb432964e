"""The one error type of the sampling pipeline."""

from __future__ import annotations

__all__ = ["PipelineError"]


class PipelineError(ValueError):
    """A request the loaded model cannot serve: an unknown class, a strength outside (0, 1], an
    unreadable image, an option the sampler does not have, ... The message says what to change."""
