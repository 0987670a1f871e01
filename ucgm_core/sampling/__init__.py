"""Samplers: UCGM-S (``ucgm``), the ODE/SDE baselines, time grids, guidance and noise sources.

Modules:
    schedule   Kumaraswamy warp and the UCGM-S / uniform time grids
    ucgm       UCGM-S (method doc, Sec. 2)
    baselines  Euler, EDM-style Heun and Euler-Maruyama on the probability-flow dynamics
    originals  the baseline rows' own samplers, exact to the originals (EDM, EDM2, REPA, REPA-E,
               LightningDiT, DDT), and adapters of pipeline models to their network conventions
    guidance   classifier-free guidance as a bound network
    noise      global, per-image and replayed noise sources
    registry   ``SAMPLERS``, ``SAMPLER_SOURCES`` and ``get_sampler``
"""

from .baselines import euler_maruyama_sample, euler_sample, heun_sample
from .common import Network, SampleResult
from .guidance import guided
from .noise import GlobalRandn, NoiseSource, PerImageNoise, ReplayNoise, per_image_seed, per_image_seeds
from .originals import ORIGINAL_SAMPLERS, OriginalSampleResult, original_info, original_network, paper_nfe
from .registry import SAMPLER_SOURCES, SAMPLERS, get_sampler, sampler_source
from .schedule import UCGMGrid, kumaraswamy, ucgm_time_grid, uniform_time_grid
from .ucgm import ucgm_sample

__all__ = [
    "Network",
    "SampleResult",
    "ucgm_sample",
    "euler_sample",
    "heun_sample",
    "euler_maruyama_sample",
    "guided",
    "GlobalRandn",
    "NoiseSource",
    "PerImageNoise",
    "ReplayNoise",
    "per_image_seed",
    "per_image_seeds",
    "SAMPLERS",
    "SAMPLER_SOURCES",
    "get_sampler",
    "sampler_source",
    "ORIGINAL_SAMPLERS",
    "OriginalSampleResult",
    "original_info",
    "original_network",
    "paper_nfe",
    "UCGMGrid",
    "kumaraswamy",
    "ucgm_time_grid",
    "uniform_time_grid",
]
