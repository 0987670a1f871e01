"""Pixel-space "autoencoder" (the original's ``idae_f1c3``): latents are the pixels in [-1, 1]."""

from __future__ import annotations

from torch import Tensor

from .base import Autoencoder


class IdentityAutoencoder(Autoencoder):
    """``encode(x) = x`` (in ``[-1, 1]``); ``decode(z) = clip((z + 1) / 2, 0, 1)``; stride 1."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.latent_channels = int(channels)
        self.stride = 1

    def encode(self, images: Tensor) -> Tensor:
        if images.shape[1] != self.latent_channels:
            raise ValueError(f"expected {self.latent_channels} channels, got {tuple(images.shape)}")
        return images.clone()

    def decode(self, latents: Tensor) -> Tensor:
        return ((latents + 1) / 2).clamp(0, 1)
