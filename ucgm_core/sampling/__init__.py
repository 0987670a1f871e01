"""Samplers: UCGM-S (``ucgm``), the ODE/SDE baselines, time grids, guidance and noise sources.

Modules:
    schedule   Kumaraswamy warp and the UCGM-S / uniform time grids
    ucgm       UCGM-S (method doc, Sec. 2)
    baselines  Euler, EDM-style Heun and Euler-Maruyama on the probability-flow dynamics
    guidance   classifier-free guidance as a bound network
    noise      global, per-image and replayed noise sources
    registry   ``SAMPLERS`` and ``get_sampler``
"""

from .baselines import euler_maruyama_sample, euler_sample, heun_sample
from .common import Network, SampleResult
from .guidance import guided
from .noise import GlobalRandn, NoiseSource, PerImageNoise, ReplayNoise, per_image_seed, per_image_seeds
from .registry import SAMPLERS, get_sampler
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
    "get_sampler",
    "UCGMGrid",
    "kumaraswamy",
    "ucgm_time_grid",
    "uniform_time_grid",
]
