"""Errors of :mod:`hourglass.evaluation` (user-fixable problems, printed without a traceback by the CLI)."""

from __future__ import annotations

__all__ = ["EvaluationError", "FeatureNetworkUnavailable"]


class EvaluationError(ValueError):
    """A problem with the evaluation's input: a missing or empty folder, too few images, a bad setting."""


class FeatureNetworkUnavailable(EvaluationError):
    """No usable feature network (Inception weights) was found; the message says what to install or pass."""
