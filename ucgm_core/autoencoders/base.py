"""The autoencoder interface every latent space implements.

``encode`` maps images in ``[-1, 1]`` of shape ``[B, C, H, W]`` to latents of shape
``[B, latent_channels, H // stride, W // stride]``; ``decode`` maps latents back to images in
``[0, 1]``. Latent normalisation (mean/std/multiplier) lives outside, in the data loader.

Compute settings (:meth:`Autoencoder.set_compute`, or ``precision`` / ``tf32`` among the keyword
arguments of :func:`ucgm_core.autoencoders.get_autoencoder`, i.e. ``autoencoders.<name>.kwargs`` of the
config): ``precision`` ``"fp32"`` (default) or ``"bf16"`` runs the network's encode and decode under bf16
autocast (weights stay as they are, latents and images come back float32); ``tf32`` (default True)
allows TF32 matmuls and convolutions while the network runs on a CUDA device (no effect on the CPU).
"""

from __future__ import annotations

import abc
import contextlib
from itertools import chain
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import accel


class Autoencoder(nn.Module, abc.ABC):
    """Abstract autoencoder; subclasses set ``latent_channels`` and ``stride``."""

    latent_channels: int
    stride: int
    precision: str = "fp32"
    tf32: bool = True

    def set_compute(self, precision: Optional[str] = None, tf32: Optional[bool] = None) -> "Autoencoder":
        """Set ``precision`` (``"fp32"`` or ``"bf16"``) and/or ``tf32``; returns ``self``."""
        if precision is not None:
            self.precision = accel.check_precision(precision)
        if tf32 is not None:
            self.tf32 = bool(tf32)
        return self

    def compute(self, device: torch.device) -> contextlib.ExitStack:
        """The context the network runs in on ``device``: bf16 autocast and TF32 as set."""
        device = torch.device(device)
        stack = contextlib.ExitStack()
        stack.enter_context(accel.autocast(self.precision, device))
        if device.type == "cuda":
            stack.enter_context(accel.tf32(self.tf32))
        return stack

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in ``[-1, 1]`` -> latents ``[B, latent_channels, H/stride, W/stride]``."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Latents ``[B, latent_channels, h, w]`` -> images ``[B, C, h*stride, w*stride]`` in ``[0, 1]``."""

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:  # round trip, for convenience
        return self.decode(self.encode(images))


def cast_module(model: nn.Module, dtype: Union[str, torch.dtype]) -> nn.Module:
    """``model`` in floating dtype ``dtype`` (untouched when already there: diffusers warns on every cast)."""
    dt = torch_dtype(dtype)
    if any(t.is_floating_point() and t.dtype != dt for t in chain(model.parameters(), model.buffers())):
        model = model.to(dt)
    return model


def torch_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """A torch dtype from a dtype or its name ("float32", "torch.bfloat16")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value
