"""Registry entries of the networks ported from other projects (released checkpoints load into them).

Each family module defines its network, its converter from the original checkpoint, and a dict of
:class:`~ucgm_core.models.spec.ModelSpec` entries; they are merged into ``MODELS`` here.
"""

from __future__ import annotations

from typing import Dict

from .spec import ModelSpec

EXTERNAL_MODELS: Dict[str, ModelSpec] = {}

# --- family registrations (one line each) ---
from .sit import SIT_MODELS; EXTERNAL_MODELS.update(SIT_MODELS)  # noqa: E402,E702
from .lightningdit import LIGHTNINGDIT_MODELS; EXTERNAL_MODELS.update(LIGHTNINGDIT_MODELS)  # noqa: E402,E702
from .ddt import DDT_MODELS; EXTERNAL_MODELS.update(DDT_MODELS)  # noqa: E402,E702
from .edm2 import EDM2_MODELS; EXTERNAL_MODELS.update(EDM2_MODELS)  # noqa: E402,E702
from .songunet import SONGUNET_MODELS; EXTERNAL_MODELS.update(SONGUNET_MODELS)  # noqa: E402,E702
# --- end of family registrations ---
