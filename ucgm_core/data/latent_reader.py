"""Reading latent shards: the checked latent manifest and the latents of a split, checked sample by sample."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from .manifest import REBUILD_HINT, ShardIntegrityError, iter_split_samples, manifest_path, read_manifest
from .tarcodec import npy_array

__all__ = ["read_latent_manifest", "iter_latent_samples", "iter_latents"]


def read_latent_manifest(latent_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """The manifest of a latent split, checked: ``kind`` latents, a fingerprint of what made the latents,
    an integer ``latent_shape [C, h, w]`` and ``num_classes``. A manifest written before latents recorded their
    fingerprint is refused (its shards may come from another autoencoder): rebuild them."""
    info = read_manifest(latent_dir, split)
    path = manifest_path(latent_dir, split)
    if info.get("kind") != "latents":
        raise ValueError(f"{path} is not a latent manifest (kind={info.get('kind')!r}, expected 'latents')")
    if "fingerprint" not in info or "shard_info" not in info:
        raise ShardIntegrityError(
            f"{path}: latents without a fingerprint of what made them (written by an older "
            f"version; they may come from another autoencoder); {REBUILD_HINT['latents']}"
        )
    shape = info.get("latent_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ShardIntegrityError(f"{path}: latent_shape {shape!r}, expected [C, h, w] (positive integers)")
    if not (isinstance(info.get("num_classes"), int) and info["num_classes"] >= 1):
        raise ShardIntegrityError(f"{path}: num_classes {info.get('num_classes')!r}, expected an integer >= 1")
    return info


def iter_latent_samples(
    latent_dir: os.PathLike | str,
    split: str,
    flipped: bool = True,
    copy: bool = True,
    info: Optional[Dict[str, Any]] = None,
) -> Iterator[Tuple[str, np.ndarray, Optional[np.ndarray], int]]:
    """Yield ``(key, latent, latent_flip or None, label)`` of a latent split, every shard checked against the
    manifest (sha256, count: :func:`~ucgm_core.data.shards.iter_split_samples`), every latent's shape exactly
    the manifest's ``latent_shape`` (no broadcasting) and every label in ``[0, num_classes)``.
    ``copy=False`` yields read-only views of the shard bytes (for callers that copy them anyway)."""
    info = read_latent_manifest(latent_dir, split) if info is None else info
    mpath, shape, ncls = manifest_path(latent_dir, split), tuple(info["latent_shape"]), info["num_classes"]
    for s in iter_split_samples(latent_dir, split, info=info):
        missing = [f for f in ("latent.npy", "latent_flip.npy", "cls") if f not in s]
        if missing:
            raise ShardIntegrityError(
                f"{s['__shard__']}: sample {s['__key__']} lacks {missing}; {REBUILD_HINT['latents']}"
            )
        fields = ("latent.npy", "latent_flip.npy") if flipped else ("latent.npy",)
        arrays = [npy_array(s[f], copy=copy) for f in fields]
        for f, arr in zip(fields, arrays):
            if arr.shape != shape:
                raise ShardIntegrityError(
                    f"{s['__shard__']}: sample {s['__key__']}: {f} has shape {arr.shape}, the "
                    f"manifest {mpath} says latent_shape {list(shape)}"
                )
        label = int(s["cls"])
        if not 0 <= label < ncls:
            raise ShardIntegrityError(
                f"{s['__shard__']}: sample {s['__key__']} has label {label}, outside "
                f"[0, {ncls}) (num_classes of {mpath})"
            )
        yield s["__key__"], arrays[0], (arrays[1] if flipped else None), label


def iter_latents(
    latent_dir: os.PathLike | str, split: str, flipped: bool = True
) -> Iterator[Tuple[str, np.ndarray, Optional[np.ndarray], int]]:
    """Yield ``(key, latent [C,h,w], latent_flip [C,h,w] or None, label)`` in shard order (checked as
    :func:`iter_latent_samples`)."""
    return iter_latent_samples(latent_dir, split, flipped)
