"""The workflow's configuration, split by concept.

* :mod:`ucgm_core.config.schema`   - JSON-schema validation and defaults (``validate_config``, ``load_config``,
  ``SCHEMA_PATH``, :class:`ConfigError`);
* :mod:`ucgm_core.config.checks`   - the cross-checks a schema cannot see (architectures, classes, resolutions,
  training, snapshots, sources, declarations);
* :mod:`ucgm_core.config.samplers` - sampler option names and values;
* :mod:`ucgm_core.config.workflow` - the experiments merged into one :class:`Workflow` (``load_workflow``).
"""

from .checks import DECLARED_SECTIONS, split_model_ref
from .samplers import sampler_option_names
from .schema import SCHEMA_PATH, ConfigError, load_config, validate_config
from .workflow import Workflow, deep_merge, load_workflow, source_stem

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
