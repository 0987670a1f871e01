"""The extractor stage's library calls (``workflow/scripts/extractor.py`` maps its flags onto one of them):
:func:`train_shard_classifier` trains the dataset classifier on an image shard folder's train split (test
accuracy on its test split, written beside it as ``<out>.json``); :func:`prepare_inception_weights` checks and
copies local Inception weights, or fetches torch-fidelity's (sha256 checked)."""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np
import torch

from ..data.shards import load_images
from . import inception
from .classifier import train_classifier

__all__ = ["train_shard_classifier", "prepare_inception_weights"]

Log = Callable[[str], None]


def _nchw(images: np.ndarray) -> torch.Tensor:
    """Shard images (uint8 NHWC) as the classifier takes them (NCHW)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def train_shard_classifier(images_dir: str, out: str, *, steps: int, seed: int, log: Log = print) -> dict:
    """Train the classifier extractor on ``images_dir``'s train split, test it on the test split, save it to
    ``out`` (and its record to ``<out>.json``); returns that record."""
    x, y = load_images(images_dir, "train")
    xt, yt = load_images(images_dir, "test")
    log(f"training the classifier extractor on {len(y)} images ({steps} steps)")
    train_classifier(
        _nchw(x),
        torch.from_numpy(y),
        out,
        seed=seed,
        steps=steps,
        test_images=_nchw(xt),
        test_labels=torch.from_numpy(yt),
        extra_info={"images": os.path.abspath(images_dir)},
        verbose=True,
    )
    with open(out + ".json") as f:
        info = json.load(f)
    log(f"classifier written to {out}: {info}")
    return info


def prepare_inception_weights(out: str, weights: Optional[str] = None, *, log: Log = print) -> str:
    """``weights`` (a local file: checked, copied atomically, the copy's sha256 verified) or, without it,
    torch-fidelity's own weights (downloaded, sha256 checked) at ``out``; returns ``out``.

    Raises ``SystemExit`` naming ``extractor.weights`` when the local file is missing or not valid weights."""
    if weights:
        if not os.path.isfile(weights):
            raise SystemExit(f"extractor.weights: {weights} does not exist")
        try:  # checked (sha256, weights_only), copied atomically, the copy's sha256 verified
            info = inception.copy_inception_weights(weights, out)
        except ValueError as e:
            raise SystemExit(f"extractor.weights: {e}") from None
        log(f"{weights}: {info['provenance']}")
    else:
        inception.torch_fidelity_weights(out)
    log(
        f"inception weights at {out}; sha256 {inception.sha256_file(out)}; "
        f"logits (IS) available: {inception.weights_have_logits(out)}"
    )
    return out
