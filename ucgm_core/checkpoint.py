"""Model checkpoints written by the train / tune stages and read by sampling.

A checkpoint is a plain dict saved with ``torch.save`` and read back with ``weights_only=True``
(no code is unpickled)::

    {
      "format": "ucgm-checkpoint/1",
      "architecture": "UNet-S", "model_kwargs": {...}, "transport": "Linear",
      "num_classes": 10, "latent_shape": [C, h, w],
      "normalizer": {"mean": [1,C,1,1] | None, "std": ..., "multiplier": float},
      "autoencoder": "identity", "step": int,
      "model": online state_dict, "ema": EMA state_dict,
      "info": {...}  # spec, input hashes, timings
    }
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from .io import atomic_torch_save, sha256_file  # sha256_file re-exported
from .data.loader import LatentNormalizer
from .models import build_model

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "build_network", "checkpoint_normalizer", "sha256_file"]

FORMAT = "ucgm-checkpoint/1"


def save_checkpoint(
    path: os.PathLike | str,
    *,
    architecture: str,
    model_kwargs: Dict[str, Any],
    transport: str,
    num_classes: int,
    latent_shape,
    normalizer: LatentNormalizer,
    autoencoder: str,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    info: Optional[dict] = None,
) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "architecture": architecture,
        "model_kwargs": dict(model_kwargs),
        "transport": transport,
        "num_classes": int(num_classes),
        "latent_shape": [int(s) for s in latent_shape],
        "normalizer": {"mean": normalizer.mean, "std": normalizer.std, "multiplier": float(normalizer.multiplier)},
        "autoencoder": autoencoder,
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
        "info": info or {},
    }
    atomic_torch_save(payload, path)
    return path


def load_checkpoint(path: os.PathLike | str) -> dict:
    """Read a checkpoint (``weights_only=True``) and check its format and keys."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a {FORMAT} checkpoint (format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})"
        )
    missing = [
        k for k in ("architecture", "model_kwargs", "model", "ema", "normalizer", "num_classes") if k not in ckpt
    ]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks keys {missing}")
    return ckpt


def build_network(ckpt: dict, weights: str = "ema") -> nn.Module:
    """Instantiate the checkpoint's architecture and load its ``ema`` (default) or ``model`` weights."""
    if weights not in ("ema", "model", "online"):
        raise ValueError(f"weights must be 'ema' or 'online', got {weights!r}")
    net = build_model(ckpt["architecture"], **ckpt["model_kwargs"])
    net.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    return net.eval()


def checkpoint_normalizer(ckpt: dict) -> LatentNormalizer:
    n = ckpt["normalizer"]
    return LatentNormalizer(n.get("mean"), n.get("std"), float(n.get("multiplier", 1.0)))
