"""ucgm_core: Unified Continuous Generative Models (UCGM-T trainer, UCGM-S sampler).

The package is split by concept:

* :mod:`ucgm_core.transports` - the unified path coefficients and their inversion;
* :mod:`ucgm_core.training`   - the UCGM-T objective, teacher and EMA;
* :mod:`ucgm_core.sampling`   - the UCGM-S sampler, baselines and per-image noise;
* :mod:`ucgm_core.models`     - networks (TiT, small U-Net) and the model registry;
* :mod:`ucgm_core.data`, :mod:`ucgm_core.autoencoders`, :mod:`ucgm_core.metrics` - the pipeline stages.
"""

__version__ = "0.1.0"
