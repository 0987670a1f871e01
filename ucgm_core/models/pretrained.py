"""Released networks -> this project's checkpoints: one entry point over the family converters.

:func:`convert_pretrained` reads a released (or UCGM-converted ``{model, ema}``) checkpoint of any registered
architecture, applies that family's converter (key renames, dropped training-only keys, EMA preferred), checks
every key and shape against our port built with the same constructor kwargs, and returns the loaded network.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from torch import nn

from .convert import CheckpointError, check_layout, load_checkpoint_file, pick_weights, strip_prefixes
from .registry import MODELS

__all__ = ["model_kwargs_for", "convert_pretrained"]


def model_kwargs_for(architecture: str, *, input_size: int, in_channels: int, num_classes: int,
                     **overrides: Any) -> Dict[str, Any]:
    """The full constructor kwargs of registry entry ``architecture`` (defaults, data shape, overrides)."""
    if architecture not in MODELS:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(MODELS))}")
    return {**MODELS[architecture].defaults, "input_size": input_size, "in_channels": in_channels,
            "num_classes": num_classes, **overrides}


def _family_state(architecture: str, path: str, kwargs: Dict[str, Any], allow_unsafe_pickle: bool) -> dict:
    if architecture.startswith("SiT-"):
        from .sit import convert_sit_checkpoint

        variant = "repae" if architecture.endswith("REPAE") else "repa"
        return convert_sit_checkpoint(path, variant, **kwargs)
    if architecture.startswith("LightningDiT"):
        from .lightningdit import convert_lightningdit_checkpoint

        return convert_lightningdit_checkpoint(path, **kwargs)
    if architecture.startswith("DDT"):
        from .ddt import convert_ddt_checkpoint

        return convert_ddt_checkpoint(path, **kwargs)
    if architecture.startswith("EDM2"):
        from .edm2 import convert_edm2_checkpoint

        return convert_edm2_checkpoint(path, size=kwargs, allow_unsafe_pickle=allow_unsafe_pickle)
    if architecture.startswith("SongUNet"):
        from .songunet import convert_songunet_checkpoint

        rest = {k: v for k, v in kwargs.items() if k != "num_classes"}
        return convert_songunet_checkpoint(path, kwargs["num_classes"], allow_unsafe_pickle, **rest)
    # our own architectures (TiT, UNet): a UCGM-format {model, ema} file or a bare state_dict
    return strip_prefixes(pick_weights(load_checkpoint_file(path), source=path))


def convert_pretrained(architecture: str, path: os.PathLike | str, model_kwargs: Dict[str, Any],
                       allow_unsafe_pickle: bool = False) -> nn.Module:
    """Our ``architecture`` network built with ``model_kwargs`` (see :func:`model_kwargs_for`) holding the
    weights of checkpoint ``path`` (EMA weights when the file has them). Raises
    :class:`~ucgm_core.models.convert.CheckpointError` naming the file and the offending keys."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    spec = MODELS[architecture]
    net = spec.builder(**model_kwargs)
    state = _family_state(architecture, path, dict(model_kwargs), allow_unsafe_pickle)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    check_layout(state, expected, source=f"{path} ({architecture})")
    net.load_state_dict(state, strict=True)
    return net.eval()
