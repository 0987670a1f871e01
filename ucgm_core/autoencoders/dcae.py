"""DC-AE f32c32 (``dcae_f32c32``) through :class:`diffusers.AutoencoderDC`: 32 latent channels, stride 32.

The original UCGM loads MIT-Han-Lab's ``dc-ae-f32c32-in-1.0`` (efficientvit's ``DCAE_HF``); its diffusers
port is ``mit-han-lab/dc-ae-f32c32-in-1.0-diffusers`` (the default ``source``). Encoding is deterministic
(``encode(x).latent`` of the image in ``[-1, 1]``), decoding returns ``clip((D(z) + 1) / 2, 0, 1)``.
diffusers' ``scaling_factor`` is not applied; UCGM normalises with per-channel mean/std, multiplier 1.0
(``default_normalize`` / ``default_multiplier``), outside this class.

``source`` is a local diffusers folder, a single weights file with ``config=`` (or a ``config.json``
beside it) or a hub id (local Hugging Face cache only unless ``allow_download=True``). A single file in
efficientvit's own key names is converted with diffusers' ``convert_autoencoder_dc_checkpoint_to_diffusers``
and then checked key by key like every other file (:class:`~ucgm_core.models.convert.CheckpointError`
naming the file and the offending keys). There is no built-in DC-AE config: a bare file needs ``config``.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from .base import Autoencoder, cast_module
from .sdvae import load_diffusers_autoencoder

__all__ = ["DCAE"]


def _convert_efficientvit(state: Dict[str, Tensor], layout, source: str) -> Dict[str, Tensor]:
    if not any(k.startswith(("encoder.project_in.", "encoder.stages.", "decoder.stages.")) for k in state):
        return state
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    return convert_autoencoder_dc_checkpoint_to_diffusers(dict(state))


class DCAE(Autoencoder):
    """``dcae_f32c32``: DC-AE via diffusers' ``AutoencoderDC`` (attribute ``vae``).

    Args:
        source: local diffusers folder, single weights file or hub id (default :attr:`default_source`).
        config: diffusers config (dict, ``config.json`` or folder) for a single weights file.
        subfolder: subfolder of ``source`` holding the autoencoder (e.g. ``"vae"`` of a pipeline).
        allow_download: allow fetching a hub id over the network (otherwise the local HF cache only).
        dtype: model dtype (float32 by default); latents and images come back as float32.
    """

    default_source = "mit-han-lab/dc-ae-f32c32-in-1.0-diffusers"
    default_normalize = True
    default_multiplier = 1.0
    default_latent_stats = None
    latent_channels = 32
    stride = 32

    def __init__(
        self,
        source: Optional[Union[str, os.PathLike]] = None,
        *,
        config=None,
        subfolder: Optional[str] = None,
        allow_download: bool = False,
        dtype: Union[str, torch.dtype] = "float32",
    ):
        super().__init__()
        from diffusers import AutoencoderDC

        vae = load_diffusers_autoencoder(
            AutoencoderDC,
            source if source is not None else self.default_source,
            config=config,
            subfolder=subfolder,
            allow_download=allow_download,
            convert_original=_convert_efficientvit,
        )
        self.vae = cast_module(vae, dtype)
        self.latent_channels = int(vae.config.latent_channels)
        self.stride = int(vae.spatial_compression_ratio)

    def _param(self) -> Tensor:
        return next(self.vae.parameters())

    def _check(self, x: Tensor, channels: int, factor: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"DCAE: expected {what} [B, {channels}, H, W] with H and W divisible by {factor}, got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        self._check(images, int(self.vae.config.in_channels), self.stride, "images")
        p = self._param()
        with self.compute(p.device):
            return self.vae.encode(images.to(device=p.device, dtype=p.dtype)).latent.float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        self._check(latents, self.latent_channels, 1, "latents")
        p = self._param()
        with self.compute(p.device):
            x = self.vae.decode(latents.to(device=p.device, dtype=p.dtype)).sample.float()
        return ((x + 1) / 2).clamp(0, 1)
