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
    generate   images by global index (per-image seeds and labels), decoded and quantised
    shard_writer  the sampling stage's call: :func:`write_shard` of a :class:`ShardRequest` (imported on first
               use, so that importing a sampler does not import checkpoints, models and autoencoders)
"""

import importlib

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
    "SamplerSpec",
    "ShardRequest",
    "write_shard",
]

_LAZY = {"SamplerSpec": "shard_writer", "ShardRequest": "shard_writer", "write_shard": "shard_writer"}


def __getattr__(name: str):
    """The stage-level names of :data:`_LAZY`, imported from their module on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
