"""Sampler registry: every sampler shares ``(network, noise, transport, *, steps, ...) -> SampleResult``."""

from __future__ import annotations

from typing import Callable, Dict

from .baselines import euler_maruyama_sample, euler_sample, heun_sample
from .common import SampleResult
from .ucgm import ucgm_sample

Sampler = Callable[..., SampleResult]

SAMPLERS: Dict[str, Sampler] = {
    "ucgm": ucgm_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "euler_maruyama": euler_maruyama_sample,
}


def get_sampler(name: str) -> Sampler:
    """Look a sampler up by name; raises ``ValueError`` listing the known names."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}: expected one of {sorted(SAMPLERS)}") from None


__all__ = ["Sampler", "SAMPLERS", "get_sampler"]
