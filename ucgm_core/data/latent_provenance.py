"""What made the latents: the fingerprint of a latent split and the record kept beside each latent shard.

:func:`latents_fingerprint` hashes the autoencoder name and keyword arguments, the sha256 of the weights files
they name, the sha256 of the image manifest (which lists every image shard's sha256), the resolution, dtype
and layout. Each latent shard ``{split}-{i:06d}.tar`` gets a record ``{split}-{i:06d}.tar.json`` (its sample
count, sha256, size and the fingerprint, written after the shard); a resume reuses a shard only when
:func:`stale_reason` finds nothing wrong with it, and a merge only when :func:`check_merged_record` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..io import atomic_write_bytes, sha256_file
from .manifest import ShardIntegrityError, manifest_path, read_manifest, rebuild_hint

__all__ = [
    "LATENT_FORMAT",
    "latents_fingerprint",
    "record_path",
    "stale_reason",
    "write_record",
    "check_merged_record",
    "fingerprint_name",
]


#: Layout of the latent shards' samples; part of the fingerprint (a new layout never reuses old shards).
LATENT_FORMAT = 1


def _path_digest(value: Any) -> Optional[str]:
    """sha256 of a file named by an autoencoder keyword argument; for a folder (a diffusers model), one sha256
    over its files' relative paths and sha256s; None when the value names nothing on disk (a hub id, a number)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(path).as_posix()} {sha256_file(f)}\n".encode())
        return h.hexdigest()
    return None


def latents_fingerprint(
    image_dir: os.PathLike | str,
    split: str,
    autoencoder_name: str,
    autoencoder_kwargs: Optional[Dict[str, Any]],
    dtype: str,
) -> Dict[str, Any]:
    """What the latents of ``split`` are made from: ``{"fingerprint": sha256 hex, "made_from": {...}}``, with
    the autoencoder's registry name and keyword arguments, the sha256 of every keyword argument that names a
    file or folder (the weights), the sha256 of the image manifest (which records every image shard's sha256),
    the images' resolution and channels, the stored dtype and the latent layout (plain + flipped).
    Latent shards with another fingerprint are re-encoded on resume, never reused.

    The image manifest must record its shards' counts and hashes (version 2): latents are not built from
    shards that cannot be checked."""
    image_dir = Path(image_dir)
    src = read_manifest(image_dir, split)
    if "shard_info" not in src:
        raise ShardIntegrityError(
            f"{manifest_path(image_dir, split)}: an image manifest without per-shard counts and "
            f"sha256 (written before they were recorded); {rebuild_hint(src)}"
        )
    kwargs = json.loads(json.dumps(autoencoder_kwargs or {}, sort_keys=True, default=str))
    made_from = {
        "format": LATENT_FORMAT,
        "autoencoder": autoencoder_name,
        "autoencoder_kwargs": kwargs,
        "autoencoder_files_sha256": {k: d for k, v in sorted(kwargs.items()) if (d := _path_digest(v)) is not None},
        "source_manifest_sha256": sha256_file(manifest_path(image_dir, split)),
        "source_resolution": src.get("resolution"),
        "source_channels": src.get("channels"),
        "latent_dtype": np.dtype(dtype).name,
        "latent_layout": "latent.npy, latent_flip.npy (horizontal flip), cls",
    }
    digest = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()
    return {"fingerprint": digest, "made_from": made_from}


def record_path(shard: Path) -> Path:
    """The record beside a latent shard: ``{split}-{index:06d}.tar.json``."""
    return shard.with_name(shard.name + ".json")


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """``key old -> new`` for the keys of two ``made_from`` dicts that differ."""
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def stale_reason(target: Path, fingerprint: Dict[str, Any]) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """Why the latent shard ``target`` cannot be reused (None if it can), and its record."""
    rec_path = record_path(target)
    if not rec_path.is_file():
        return f"no record {rec_path.name} of what made it (an older version or an interrupted job wrote it)", None
    try:
        rec = json.loads(rec_path.read_text())
        made_from, digest = rec["made_from"], rec["fingerprint"]
        size, sha, count = int(rec["size"]), str(rec["sha256"]), int(rec["num_samples"])
    except (ValueError, KeyError, TypeError) as e:
        return f"its record {rec_path.name} is unreadable ({type(e).__name__}: {e})", None
    if digest != fingerprint["fingerprint"]:
        why = _differences(made_from, fingerprint["made_from"]) or "other inputs"
        return f"made from other inputs (fingerprint {digest[:16]}, now {fingerprint['fingerprint'][:16]}: {why})", None
    found_size = target.stat().st_size
    if found_size != size:
        return f"{found_size} bytes, its record says {size} (cut or rewritten)", None
    found = sha256_file(target)
    if found != sha:
        return f"sha256 {found}, its record says {sha} (corrupt or rewritten)", None
    return None, {"name": target.name, "num_samples": count, "sha256": sha, "size": size}


def write_record(shard_record: Dict[str, Any], out_dir: Path, fingerprint: Dict[str, Any]) -> None:
    """Write the record of a freshly written latent shard (after the shard itself: a crash in between leaves a
    shard without a record, which a resume re-encodes)."""
    rec = {**shard_record, **fingerprint}
    atomic_write_bytes(
        record_path(out_dir / shard_record["name"]), (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode()
    )


def check_merged_record(
    shard: Path, record: Dict[str, Any], fingerprint: str, part_manifest: os.PathLike | str
) -> None:
    """A shard listed by a part must still be the one that part wrote: its record beside it carries the parts'
    fingerprint and the sha256 the part manifest lists (a later job with other inputs may have replaced it)."""
    rec_path = record_path(shard)
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{rec_path}: the record of a shard listed by {part_manifest} is unreadable "
            f"({type(e).__name__}: {e}); rerun that part"
        ) from None
    if rec.get("fingerprint") != fingerprint or rec.get("sha256") != record["sha256"]:
        raise ValueError(
            f"{shard}: made from fingerprint {str(rec.get('fingerprint'))[:16]} with sha256 "
            f"{rec.get('sha256')}, but {part_manifest} lists fingerprint {fingerprint[:16]} and sha256 "
            f"{record['sha256']} (replaced since); rerun that part"
        )


def fingerprint_name(autoencoder: Any, autoencoder_name: str) -> str:
    """The autoencoder's name in the fingerprint: the registry name, else the class of an instance (a library
    caller that passes neither a name nor an instance gets "")."""
    from_class = (
        ""
        if callable(autoencoder) and not hasattr(autoencoder, "encode")
        else f"{type(autoencoder).__module__}.{type(autoencoder).__qualname__}"
    )
    return autoencoder_name or from_class
