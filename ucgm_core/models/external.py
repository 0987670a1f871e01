"""Registry entries of the networks ported from other projects (released checkpoints load into them).

Each family module defines its network, its converter from the original checkpoint, and a dict of
:class:`~ucgm_core.models.spec.ModelSpec` entries; they are merged into ``MODELS`` here.
"""

from __future__ import annotations

from typing import Dict

from .ddt import DDT_MODELS
from .edm2 import EDM2_MODELS
from .lightningdit import LIGHTNINGDIT_MODELS
from .sit import SIT_MODELS
from .songunet import SONGUNET_MODELS
from .spec import ModelSpec

#: every family's entries; registration order = the order below (names are unique across families)
EXTERNAL_MODELS: Dict[str, ModelSpec] = {
    **SIT_MODELS,
    **LIGHTNINGDIT_MODELS,
    **DDT_MODELS,
    **EDM2_MODELS,
    **SONGUNET_MODELS,
}
