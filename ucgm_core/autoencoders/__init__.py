"""Autoencoder registry: ``get_autoencoder(name, **kw)`` -> :class:`~.base.Autoencoder`.

Entries are ``"module:Class"`` strings imported on first use, so heavy back-ends (diffusers VAEs)
cost nothing until asked for. Add one with :func:`register_autoencoder`.
"""

from __future__ import annotations

import importlib
from typing import Dict

from .base import Autoencoder

_REGISTRY: Dict[str, str] = {
    "identity": "ucgm_core.autoencoders.identity:IdentityAutoencoder",
    "sdvae_ema_f8c4": "ucgm_core.autoencoders.sdvae:SDVAEftEMA",
    "sdvae_mse_f8c4": "ucgm_core.autoencoders.sdvae:SDVAEftMSE",
    "sdvae_f8c4": "ucgm_core.autoencoders.sdvae:SDVAEftMSE",  # the original's extraction key (ft-MSE)
    "edm2_sdvae_f8c4": "ucgm_core.autoencoders.sdvae:EDM2SDVAE",
    "vavae_f16d32": "ucgm_core.autoencoders.vavae:VAVAE",
    "e2evavae_f16d32": "ucgm_core.autoencoders.vavae:E2EVAVAE",
    "dcae_f32c32": "ucgm_core.autoencoders.dcae:DCAE",
}


def register_autoencoder(name: str, target: str) -> None:
    """Register ``name`` -> ``"package.module:ClassName"``."""
    _REGISTRY[name] = target


def available_autoencoders() -> list:
    return sorted(_REGISTRY)


def get_autoencoder(name: str, **kw) -> Autoencoder:
    """Instantiate the autoencoder registered as ``name`` with keyword arguments ``kw``.

    ``precision`` (``"fp32"`` / ``"bf16"``) and ``tf32`` (bool) among ``kw`` are compute settings of
    every autoencoder (:meth:`Autoencoder.set_compute`), not constructor arguments.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown autoencoder {name!r}; known: {available_autoencoders()}")
    compute = {k: kw.pop(k) for k in ("precision", "tf32") if k in kw}
    module, _, cls = _REGISTRY[name].partition(":")
    ae = getattr(importlib.import_module(module), cls)(**kw)
    return ae.set_compute(**compute) if compute else ae


__all__ = ["Autoencoder", "get_autoencoder", "register_autoencoder", "available_autoencoders"]
