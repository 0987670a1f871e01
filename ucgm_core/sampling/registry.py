"""Sampler registry: every sampler shares ``(network, noise, transport, *, steps, ...) -> SampleResult``.

``ucgm`` and the generic baselines (``euler``, ``heun``, ``euler_maruyama``) take a bound network
``(x, t_native) -> F``; the originals' samplers (:mod:`.originals`: ``edm2_heun``, ``edm_heun``,
``repae_sde``, ``repae_ode``, ``repa_sde``, ``repa_ode``, ``lightningdit_euler``, ``ddt_euler``) take the
network in their original's own parametrisation ``(x, t, y)`` plus ``labels`` and ``null_label``, and
carry ``fn.original`` (:class:`~.originals.OriginalInfo`).
"""

from __future__ import annotations

from typing import Callable, Dict

from .baselines import euler_maruyama_sample, euler_sample, heun_sample
from .common import SampleResult
from .originals import ORIGINAL_SAMPLERS
from .ucgm import ucgm_sample

Sampler = Callable[..., SampleResult]

SAMPLERS: Dict[str, Sampler] = {
    "ucgm": ucgm_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "euler_maruyama": euler_maruyama_sample,
    **ORIGINAL_SAMPLERS,
}

#: What each sampler is, in one line (the tables' ``sampler_source`` column).
SAMPLER_SOURCES: Dict[str, str] = {
    "ucgm": "UCGM-S (ucgm_core.sampling.ucgm)",
    "euler": "generic Euler, uniform time grid (ucgm_core.sampling.baselines)",
    "heun": "generic Heun, uniform time grid (ucgm_core.sampling.baselines)",
    "euler_maruyama": "generic Euler-Maruyama, uniform time grid (ucgm_core.sampling.baselines)",
    **{name: fn.original.describe for name, fn in ORIGINAL_SAMPLERS.items()},
}


def get_sampler(name: str) -> Sampler:
    """Look a sampler up by name; raises ``ValueError`` listing the known names."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}: expected one of {sorted(SAMPLERS)}") from None


def sampler_source(name: str) -> str:
    """:data:`SAMPLER_SOURCES` entry of a registered sampler."""
    get_sampler(name)
    return SAMPLER_SOURCES[name]


__all__ = ["Sampler", "SAMPLERS", "SAMPLER_SOURCES", "get_sampler", "sampler_source"]
