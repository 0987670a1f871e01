"""Released networks -> this project's checkpoints: one entry point over the family converters.

:func:`convert_pretrained` reads a released (or UCGM-converted ``{model, ema}``) checkpoint of any registered
architecture, applies that family's converter (key renames, dropped training-only keys, EMA preferred), checks
every key and shape against our port built with the same constructor kwargs, and returns the loaded network.
:func:`import_pretrained` is the workflow's ``pretrained`` stage: it wraps that network, with the experiment's
latent geometry and normalisation, into a checkpoint of this project (``model`` and ``ema``, step 0).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ..autoencoders import get_autoencoder
from ..checkpoint import save_checkpoint
from ..data.datasets import get_dataset
from ..data.loader import LatentNormalizer
from ..io import sha256_file
from .convert import CheckpointError, check_layout, load_checkpoint_file, pick_weights, strip_prefixes
from .registry import MODELS

__all__ = ["model_kwargs_for", "convert_pretrained", "latent_geometry", "pretrained_normalizer", "import_pretrained"]


def model_kwargs_for(
    architecture: str, *, input_size: int, in_channels: int, num_classes: int, **overrides: Any
) -> Dict[str, Any]:
    """The full constructor kwargs of registry entry ``architecture`` (defaults, data shape, overrides)."""
    if architecture not in MODELS:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(MODELS))}")
    return {
        **MODELS[architecture].defaults,
        "input_size": input_size,
        "in_channels": in_channels,
        "num_classes": num_classes,
        **overrides,
    }


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


def convert_pretrained(
    architecture: str, path: os.PathLike | str, model_kwargs: Dict[str, Any], allow_unsafe_pickle: bool = False
) -> nn.Module:
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


def latent_geometry(
    autoencoder: str, ae_kwargs: Mapping[str, Any], resolution: int, image_channels: int
) -> Tuple[int, int]:
    """(channels, size) of the latents of ``resolution`` images under ``autoencoder`` (ValueError when the
    resolution is not a multiple of the autoencoder's stride)."""
    if autoencoder == "identity":
        return image_channels, resolution
    ae = get_autoencoder(autoencoder, **ae_kwargs)
    if resolution % ae.stride:
        raise ValueError(f"--resolution {resolution} is not a multiple of {autoencoder}'s stride {ae.stride}")
    return ae.latent_channels, resolution // ae.stride


def pretrained_normalizer(
    channels: int,
    multiplier: float,
    *,
    normalize: bool,
    latent_stats: Optional[Mapping],
    stats: Optional[str],
    autoencoder: str,
) -> LatentNormalizer:
    """The experiment's latent normalisation: the multiplier alone (``normalize`` false), fixed per-channel
    ``latent_stats`` ({"mean": [...], "std": [...]}, one value per latent channel), or the ``stats`` file."""
    if not normalize:
        return LatentNormalizer(None, None, multiplier)
    if latent_stats:
        mean, std = (torch.tensor(latent_stats[k], dtype=torch.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
        if mean.shape[1] != channels:
            raise ValueError(f"--latent-stats has {mean.shape[1]} channels, the {autoencoder} latents {channels}")
        return LatentNormalizer(mean, std, multiplier)
    return LatentNormalizer.from_stats(stats, multiplier, True)


def import_pretrained(
    weights: str,
    out: str,
    *,
    architecture: str,
    overrides: Mapping[str, Any],
    dataset: str,
    resolution: int,
    num_classes: Optional[int],
    autoencoder: str,
    ae_kwargs: Mapping[str, Any],
    normalize: bool,
    latent_stats: Optional[Mapping],
    stats: Optional[str],
    multiplier: float,
    sha256: Optional[str],
    allow_unsafe_pickle: bool,
) -> Dict[str, Any]:
    """Convert released ``weights`` of ``architecture`` and write them as a checkpoint at ``out`` (atomically).

    The latent shape is the autoencoder's (``resolution`` / stride, its latent channels); ``num_classes`` is the
    dataset's when None, and ``overrides["num_classes"]`` wins over both (e.g. 1: an unconditional network).
    ``sha256`` verifies the weights file first. Raises ValueError (CheckpointError for an unreadable or
    mismatching file) naming the file or option. Returns what was written: parameters, latent shape, transport,
    conversion seconds."""
    got = sha256_file(weights) if sha256 else None
    if sha256 and got != sha256.lower():
        raise ValueError(f"{weights}: sha256 {got} differs from the configured {sha256}")
    if architecture not in MODELS:
        raise ValueError(f"--architecture {architecture!r}: unknown; known: {', '.join(sorted(MODELS))}")
    ds = get_dataset(dataset)
    channels, size = latent_geometry(autoencoder, ae_kwargs, resolution, ds.channels)
    overrides = dict(overrides)
    num_classes = int(overrides.pop("num_classes", num_classes or ds.num_classes))
    kwargs = model_kwargs_for(architecture, input_size=size, in_channels=channels, num_classes=num_classes, **overrides)
    normalizer = pretrained_normalizer(
        channels, multiplier, normalize=normalize, latent_stats=latent_stats, stats=stats, autoencoder=autoencoder
    )
    t0 = time.time()
    try:
        net = convert_pretrained(architecture, weights, kwargs, allow_unsafe_pickle=allow_unsafe_pickle)
    except CheckpointError as e:
        raise CheckpointError(f"cannot import {weights} as {architecture}: {e}") from None
    model_kwargs = {"input_size": size, "in_channels": channels, "num_classes": num_classes, **overrides}
    save_checkpoint(
        out,
        architecture=architecture,
        model_kwargs=model_kwargs,
        transport=MODELS[architecture].transport,
        num_classes=num_classes,
        latent_shape=[channels, size, size],
        normalizer=normalizer,
        autoencoder=autoencoder,
        step=0,
        model=net,
        ema=net,
        info={"pretrained": str(weights), "weights_sha256": sha256_file(weights)},
    )
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "latent_shape": [channels, size, size],
        "transport": MODELS[architecture].transport,
        "seconds": time.time() - t0,
    }
