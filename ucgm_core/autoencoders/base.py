"""The autoencoder interface every latent space implements.

``encode`` maps images in ``[-1, 1]`` of shape ``[B, C, H, W]`` to latents of shape
``[B, latent_channels, H // stride, W // stride]``; ``decode`` maps latents back to images in
``[0, 1]``. Latent normalisation (mean/std/multiplier) lives outside, in the data loader.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn


class Autoencoder(nn.Module, abc.ABC):
    """Abstract autoencoder; subclasses set ``latent_channels`` and ``stride``."""

    latent_channels: int
    stride: int

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in ``[-1, 1]`` -> latents ``[B, latent_channels, H/stride, W/stride]``."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Latents ``[B, latent_channels, h, w]`` -> images ``[B, C, h*stride, w*stride]`` in ``[0, 1]``."""

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:  # round trip, for convenience
        return self.decode(self.encode(images))
