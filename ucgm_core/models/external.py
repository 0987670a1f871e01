"""Registry entries of the networks ported from other projects (released checkpoints load into them).

Each family module defines its network, its converter from the original checkpoint, and a dict of
:class:`~ucgm_core.models.registry.ModelSpec` entries; they are merged into ``MODELS`` here.
"""

from __future__ import annotations

from typing import Dict

EXTERNAL_MODELS: Dict[str, object] = {}

# --- family registrations (one line each) ---
# --- end of family registrations ---
