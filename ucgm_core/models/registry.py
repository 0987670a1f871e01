"""Model registry: name -> :class:`~ucgm_core.models.spec.ModelSpec`; :func:`build_model` instantiates one."""

from __future__ import annotations

from typing import Any, Dict

from torch import nn

from .external import EXTERNAL_MODELS
from .spec import ModelSpec
from .tit import TIT_CONFIGS, TiT
from .unet import UNet


MODELS: Dict[str, ModelSpec] = {name: ModelSpec(TiT, dict(cfg)) for name, cfg in TIT_CONFIGS.items()}
MODELS.update(
    {
        # Small presets for the CPU default (Fashion-MNIST 28x28x1); see tests/models/test_models.py.
        "TiT-Tiny/2": ModelSpec(TiT, dict(depth=4, hidden_size=128, num_heads=2, patch_size=2)),
        "TiT-Tiny/4": ModelSpec(TiT, dict(depth=4, hidden_size=128, num_heads=2, patch_size=4)),
        "UNet-S": ModelSpec(UNet, dict(channels=(32, 64, 96), num_blocks=1, unshuffle=True)),
    }
)


def build_model(name: str, *, input_size: int, in_channels: int, num_classes: int, **overrides: Any) -> nn.Module:
    """Build registry entry ``name``; ``overrides`` replace its default constructor kwargs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    spec = MODELS[name]
    kwargs = {**spec.defaults, **overrides}
    return spec.builder(input_size=input_size, in_channels=in_channels, num_classes=num_classes, **kwargs)


MODELS.update(EXTERNAL_MODELS)  # the ported families (external.py)
