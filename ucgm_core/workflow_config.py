"""The workflow's configuration (kept for existing imports): every public name of :mod:`ucgm_core.config`.

The code lives in :mod:`ucgm_core.config` by concept: ``schema`` (validation and defaults), ``checks`` (the
cross-checks), ``samplers`` (sampler options) and ``workflow`` (experiments merged into one ``Workflow``).
"""

from __future__ import annotations

from .config.checks import DECLARED_SECTIONS, split_model_ref
from .config.samplers import sampler_option_names
from .config.schema import SCHEMA_PATH, ConfigError, load_config, validate_config
from .config.workflow import Workflow, deep_merge, load_workflow, source_stem

__all__ = [
    "ConfigError",
    "SCHEMA_PATH",
    "load_config",
    "validate_config",
    "sampler_option_names",
    "Workflow",
    "load_workflow",
    "split_model_ref",
    "deep_merge",
    "source_stem",
    "DECLARED_SECTIONS",
]
