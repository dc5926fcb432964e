"""Seeded noise that does not depend on the batch size.

Every sample of a batch draws its noise from its own ``torch.Generator`` seeded by that sample's
seed, so sample ``i`` of a batch with seeds ``[s_0, ..., s_{B-1}]`` is the same image as a batch of
one with seed ``[s_i]``. Two streams are derived from each seed: stream 0 for the initial noise
(:func:`initial_noise`, exactly ``torch.randn(shape, generator=torch.Generator().manual_seed(s))``)
and stream 1 for the noise that stochastic samplers add during sampling (:class:`NoiseSampler`),
so the two are independent.

Noise is always drawn in float32 and then cast, so changing the sampling dtype does not change
the random numbers beyond rounding. Generators live on the device given (default: the device of
the tensor being sampled); a CPU generator gives the same numbers on every machine at the cost of
a host-to-device copy per draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NoiseSampler", "initial_noise", "derive_seed"]

_MASK64 = (1 << 64) - 1


def derive_seed(seed: int, stream: int) -> int:
    """A seed for ``stream`` of ``seed``: ``seed`` itself for stream 0, else a SplitMix64 mix.

    Returns:
        an int in ``[0, 2^63)`` (what ``torch.Generator.manual_seed`` accepts everywhere).
    """
    if stream == 0:
        return seed
    z = (seed + stream * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, Tensor)) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a list of ints, one per sample, got {type(seeds).__name__}; "
                        "e.g. seeds=list(range(batch_size))")
    out = []
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise ValueError(f"seeds[{i}] = {s!r} is not an int in [0, 2^63)")
        out.append(int(s))
    if not out:
        raise ValueError("seeds is empty; give one seed per sample")
    return out


def _generators(seeds: list[int], stream: int, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(derive_seed(s, stream)) for s in seeds]


def initial_noise(
    seeds: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    generator_device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal starting noise, one seeded generator per sample.

    Scale it by ``sigma_max`` (``sigmas[0]``) at the call site: ``x = initial_noise(...) * sigmas[0]``.

    Args:
        seeds: one int per sample, ``B = len(seeds)``.
        shape: the shape of one sample, ``(C, H, W)``.
        device: the result's device (default CPU).
        dtype: the result's dtype.
        generator_device: where the generators run (default ``device``); ``"cpu"`` makes the
            numbers identical across machines.

    Returns:
        ``(B, C, H, W)``.
    """
    seeds = _check_seeds(seeds)
    shape = tuple(int(v) for v in shape)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen_device = torch.device(generator_device) if generator_device is not None else device
    gens = _generators(seeds, 0, gen_device)
    noise = torch.stack([torch.randn(shape, generator=g, device=gen_device, dtype=torch.float32) for g in gens])
    return noise.to(device=device, dtype=dtype)


class NoiseSampler:
    """Per-sample seeded noise for stochastic samplers (stream 1 of each seed).

    Call it with the current ``x``; it returns fresh standard normal noise shaped like ``x``. Each
    call advances every sample's generator, so a fresh ``NoiseSampler`` replays the same sequence.

    Args:
        seeds: one int per sample.
        device: where the generators run (default: the device of the first ``x`` it sees).
        stream: which derived stream of each seed to use (1 by default; 0 is the initial noise).
    """

    def __init__(
        self, seeds: Sequence[int], *, device: torch.device | str | None = None, stream: int = 1
    ) -> None:
        self.seeds = _check_seeds(seeds)
        if not isinstance(stream, int) or stream < 0:
            raise ValueError(f"stream must be a non-negative int, got {stream!r}")
        self.stream = stream
        self.device = torch.device(device) if device is not None else None
        self._gens: list[torch.Generator] | None = None

    def __call__(self, like: Tensor) -> Tensor:
        """Standard normal noise ``(B, ...)`` with the shape, dtype and device of ``like``."""
        if like.shape[0] != len(self.seeds):
            raise ValueError(
                f"this NoiseSampler has {len(self.seeds)} seeds but the batch has {like.shape[0]} samples; "
                "give one seed per sample"
            )
        if self._gens is None:
            self._gen_device = self.device if self.device is not None else like.device
            self._gens = _generators(self.seeds, self.stream, self._gen_device)
        noise = torch.stack([
            torch.randn(like.shape[1:], generator=g, device=self._gen_device, dtype=torch.float32)
            for g in self._gens
        ])
        return noise.to(device=like.device, dtype=like.dtype)

    def __repr__(self) -> str:
        return f"NoiseSampler(seeds={self.seeds}, stream={self.stream})"
