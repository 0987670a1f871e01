"""The baseline rows' samplers, exact to the originals (one function per original sampler).

The paper compares UCGM-S with each model's own sampler at its own NFE. These functions reproduce those
samplers operation by operation (grid, dtype, call convention, guidance batching, update order, last step,
noise draws); ``tests/sampling/test_baseline_samplers.py`` checks each against what the original computed
(``tests/fixtures/baseline_samplers/``).

=======================  ==========================================================  ==================
name                     original                                                    network
=======================  ==========================================================  ==================
``edm2_heun``            NVlabs/edm2 ``generate_images.py`` ``edm_sampler``           EDM denoiser
``edm_heun``             NVlabs/edm ``generate.py`` ``edm_sampler`` (float64)         EDM denoiser
``repae_sde``            REPA-E ``samplers.py`` ``euler_maruyama_sampler``            velocity, t=1 noise
``repae_ode``            REPA-E ``samplers.py`` ``euler_sampler``                     velocity, t=1 noise
``repa_sde``             REPA ``samplers.py`` ``euler_maruyama_sampler``              velocity, t=1 noise
``repa_ode``             REPA ``samplers.py`` ``euler_sampler``                       velocity, t=1 noise
``lightningdit_euler``   LightningDiT ``sample_ode`` (torchdiffeq Euler) + CFG        velocity, t=0 noise
``ddt_euler``            DDT ``EulerSampler``                                         velocity, t=0 noise
=======================  ==========================================================  ==================

Shared signature and network conventions: :mod:`.base`; pipeline models in those conventions:
:mod:`.adapters`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

from .adapters import edm_denoiser, flow_velocity, original_network
from .base import CONVENTIONS, OriginalInfo, OriginalSampleResult, merged_options
from .edm import edm2_heun, edm_heun, karras_sigma_grid
from .flow import ddt_euler, ddt_grid, lightningdit_cfg_drift, lightningdit_euler, lightningdit_grid
from .sit import repa_ode, repa_sde, repae_ode, repae_sde, sit_ode_grid, sit_sde_grid

ORIGINAL_SAMPLERS: Dict[str, Callable] = {
    fn.original.name: fn
    for fn in (edm2_heun, edm_heun, repae_sde, repae_ode, repa_sde, repa_ode, lightningdit_euler, ddt_euler)
}


def original_info(sampler: Callable) -> Optional[OriginalInfo]:
    """The :class:`OriginalInfo` of an original sampler, None for any other sampler."""
    return getattr(sampler, "original", None)


def paper_nfe(sampler: Callable, steps: int, options: Optional[Mapping[str, Any]] = None) -> int:
    """NFE of a row of an original sampler as the papers count it (e.g. 63 for EDM2's 32 steps, 500 for
    "250 x 2"); see :class:`OriginalInfo`."""
    info = original_info(sampler)
    if info is None:
        raise ValueError(f"{getattr(sampler, '__name__', sampler)!r} is not an original sampler")
    return int(info.paper_nfe(int(steps), merged_options(sampler, options)))


__all__ = [
    "CONVENTIONS",
    "OriginalInfo",
    "OriginalSampleResult",
    "ORIGINAL_SAMPLERS",
    "original_info",
    "paper_nfe",
    "original_network",
    "edm_denoiser",
    "flow_velocity",
    "edm2_heun",
    "edm_heun",
    "karras_sigma_grid",
    "repae_sde",
    "repae_ode",
    "repa_sde",
    "repa_ode",
    "sit_sde_grid",
    "sit_ode_grid",
    "lightningdit_euler",
    "lightningdit_grid",
    "lightningdit_cfg_drift",
    "ddt_euler",
    "ddt_grid",
]
