"""Shard manifests (``{split}.json``, version 2) and reading a split checked against its manifest.

A manifest lists a split's shards in order and, per shard (``shard_info``), its sample count, sha256 and size.
:func:`read_manifest` checks the shards' presence and sizes; :func:`iter_split_samples` checks each shard's
sha256 before it is read and its count after, so a shard cut at a member boundary (a valid, shorter tar) or
rewritten since is an error naming the shard, the expected and the found value, never a silently smaller
split. Version-1 manifests (before ``shard_info``) are read with counts derived from ``samples_per_shard``.
Manifests are written atomically, last (after every shard they list).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from ..io import atomic_write_bytes, sha256_file
from .tarcodec import iter_samples

__all__ = [
    "MANIFEST_VERSION",
    "manifest_path",
    "write_manifest",
    "ShardIntegrityError",
    "REBUILD_HINT",
    "rebuild_hint",
    "read_manifest",
    "shard_paths",
    "shard_records",
    "verify_shard",
    "iter_split_samples",
    "split_fingerprint",
]


#: 2: per-shard ``shard_info`` (name, num_samples, sha256, size). Version 1 manifests (no shard_info) are read
#: with per-shard counts derived from ``samples_per_shard`` (every shard but the last is full).
MANIFEST_VERSION = 2


def manifest_path(shard_dir: os.PathLike | str, split: str) -> Path:
    """Where the manifest of ``split`` lies: ``<shard_dir>/{split}.json``."""
    return Path(shard_dir) / f"{split}.json"


def write_manifest(shard_dir: os.PathLike | str, split: str, info: Dict[str, Any]) -> Path:
    """Atomically write ``{split}.json`` (adds ``version`` and ``split``); ``info`` must carry ``shard_info``
    (per shard: name, num_samples, sha256, size), which readers check the shards against."""
    path = manifest_path(shard_dir, split)
    if "shard_info" not in info:
        raise ValueError(f"{path}: a manifest needs shard_info (name, num_samples, sha256, size per shard)")
    _check_shard_info(path, info)
    data = {"version": MANIFEST_VERSION, "split": split, **info}
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


class ShardIntegrityError(ValueError):
    """A shard disagrees with its manifest: missing samples (cut or short), other bytes (corrupt or
    rewritten since), or a manifest that cannot describe its shards."""


#: How to rebuild a split, by manifest kind (for error messages).
REBUILD_HINT = {
    "images": "rebuild the image shards with python workflow/scripts/shards.py (the workflow's shards rule)",
    "latents": "rebuild the latents with python workflow/scripts/latents.py --no-resume (the workflow's latents rule)",
}


def rebuild_hint(info: Dict[str, Any]) -> str:
    """How to rebuild the split a manifest describes."""
    return REBUILD_HINT.get(str(info.get("kind")), "rebuild it with the stage that wrote it")


def _check_shard_info(path: Path, info: Dict[str, Any]) -> None:
    """``shard_info`` of a version-2 manifest: one record per shard, in order, with a count, sha256 and size."""
    records = info["shard_info"]
    if (
        not isinstance(records, list)
        or [r.get("name") if isinstance(r, dict) else None for r in records] != info["shards"]
    ):
        raise ShardIntegrityError(
            f"{path}: shard_info does not list the shards {info['shards']} in order; {rebuild_hint(info)}"
        )
    for r in records:
        ok = (
            isinstance(r.get("num_samples"), int)
            and r["num_samples"] >= 0
            and isinstance(r.get("size"), int)
            and isinstance(r.get("sha256"), str)
            and len(r["sha256"]) == 64
        )
        if not ok:
            raise ShardIntegrityError(
                f"{path}: shard_info record {r!r}: expected name, num_samples >= 0, size and a "
                f"64-digit sha256; {rebuild_hint(info)}"
            )
    total = sum(r["num_samples"] for r in records)
    if "num_samples" in info and total != info["num_samples"]:
        raise ShardIntegrityError(
            f"{path}: shard_info counts add up to {total}, num_samples is {info['num_samples']}; {rebuild_hint(info)}"
        )


def read_manifest(shard_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """Read ``{split}.json`` and check it against the disk: every shard exists and, where the manifest records
    sizes (version 2), has that size (a cheap check that catches a shard cut anywhere)."""
    path = manifest_path(shard_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}; build the shards first")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise ShardIntegrityError(f"{path}: not a JSON manifest ({e}); rebuild the split") from None
    if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
        raise ShardIntegrityError(f"{path}: expected a JSON object with a list 'shards'; rebuild the split")
    version = info.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= MANIFEST_VERSION:
        raise ShardIntegrityError(
            f"{path}: manifest version {version!r}, this code reads 1 to {MANIFEST_VERSION}; {rebuild_hint(info)}"
        )
    missing = [s for s in info["shards"] if not (Path(shard_dir) / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: shards missing on disk: {missing}")
    if version >= 2 and "shard_info" not in info:
        raise ShardIntegrityError(f"{path}: a version-{version} manifest without shard_info; {rebuild_hint(info)}")
    if "shard_info" in info:
        _check_shard_info(path, info)
        for r in info["shard_info"]:
            found = (Path(shard_dir) / r["name"]).stat().st_size
            if found != r["size"]:
                raise ShardIntegrityError(
                    f"{Path(shard_dir) / r['name']}: {found} bytes, the manifest {path} records "
                    f"{r['size']} (a cut, short or rewritten shard); {rebuild_hint(info)}"
                )
    return info


def shard_paths(shard_dir: os.PathLike | str, split: str) -> List[Path]:
    """Shard paths of ``split`` in manifest order."""
    return [Path(shard_dir) / s for s in read_manifest(shard_dir, split)["shards"]]


def shard_records(
    shard_dir: os.PathLike | str, split: str, info: Optional[Dict[str, Any]] = None
) -> List[Dict[str, Any]]:
    """Per shard of a split: ``name``, ``path``, expected ``num_samples`` and the recorded ``sha256`` and ``size``.

    Version 1 manifests record no hashes (``sha256``/``size`` None); their counts are derived from
    ``samples_per_shard`` (every shard but the last is full, as the writers make them), or None when the
    manifest lacks it."""
    info = read_manifest(shard_dir, split) if info is None else info
    names = info["shards"]
    if "shard_info" in info:
        return [{**r, "path": Path(shard_dir) / r["name"]} for r in info["shard_info"]]
    sps, total = info.get("samples_per_shard"), info.get("num_samples")
    counts: List[Optional[int]] = [None] * len(names)
    if isinstance(sps, int) and isinstance(total, int) and names:
        last = total - sps * (len(names) - 1)
        if not 1 <= last <= sps:
            raise ShardIntegrityError(
                f"{manifest_path(shard_dir, split)}: {total} samples cannot fill {len(names)} "
                f"shards of {sps}; {rebuild_hint(info)}"
            )
        counts = [sps] * (len(names) - 1) + [last]
    return [
        {"name": n, "path": Path(shard_dir) / n, "num_samples": c, "sha256": None, "size": None}
        for n, c in zip(names, counts)
    ]


def verify_shard(record: Dict[str, Any], manifest: os.PathLike | str, hint: str) -> None:
    """Check a shard's size and sha256 against its record (a no-op for what the record lacks)."""
    path = record["path"]
    if record.get("size") is not None and path.stat().st_size != record["size"]:
        raise ShardIntegrityError(
            f"{path}: {path.stat().st_size} bytes, the manifest {manifest} records "
            f"{record['size']} (a cut, short or rewritten shard); {hint}"
        )
    if record.get("sha256"):
        found = sha256_file(path)
        if found != record["sha256"]:
            raise ShardIntegrityError(
                f"{path}: sha256 {found}, the manifest {manifest} records {record['sha256']} "
                f"(a corrupt or rewritten shard); {hint}"
            )


def iter_split_samples(
    shard_dir: os.PathLike | str, split: str, *, verify_hash: bool = True, info: Optional[Dict[str, Any]] = None
) -> Iterator[Dict[str, Any]]:
    """:func:`iter_samples` over a split's shards, checked against the manifest: each shard's sample count
    (a shard cut at a member boundary is otherwise a valid, shorter tar), and with ``verify_hash`` its
    sha256 before it is read (where the manifest records one). Samples carry ``__shard__`` (the shard's
    path) besides ``__key__``. Raises :class:`ShardIntegrityError` naming the shard, the expected and the
    found count or hash."""
    info = read_manifest(shard_dir, split) if info is None else info
    mpath, hint = manifest_path(shard_dir, split), rebuild_hint(info)
    total = 0
    for rec in shard_records(shard_dir, split, info):
        path = rec["path"]
        if verify_hash:
            verify_shard(rec, mpath, hint)
        n = 0
        for sample in iter_samples([path]):
            sample["__shard__"] = str(path)
            n += 1
            yield sample
        if rec["num_samples"] is not None and n != rec["num_samples"]:
            raise ShardIntegrityError(
                f"{path}: {n} samples, the manifest {mpath} records {rec['num_samples']} (a short or cut shard); {hint}"
            )
        total += n
    if isinstance(info.get("num_samples"), int) and total != info["num_samples"]:
        raise ShardIntegrityError(
            f"{shard_dir}: {total} samples in the shards of {split!r}, the manifest {mpath} "
            f"records {info['num_samples']}; {hint}"
        )


def split_fingerprint(shard_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """What a split's shards hold, independent of where they lie: the manifest's kind, counts and sha256 and
    one sha256 over every shard's (name, sha256). Version-2 manifests give the shards' sha256 (their sizes are
    checked; their content when they are read); for version-1 manifests the shard files are hashed here.
    Caches keyed by it (reference features, latents) see a split rebuilt from other data as different."""
    info = read_manifest(shard_dir, split)
    h = hashlib.sha256()
    for rec in shard_records(shard_dir, split, info):
        h.update(f"{rec['name']} {rec['sha256'] or sha256_file(rec['path'])}\n".encode())
    return {
        "split": split,
        "kind": info.get("kind"),
        "num_samples": info.get("num_samples"),
        "num_shards": len(info["shards"]),
        "manifest_sha256": sha256_file(manifest_path(shard_dir, split)),
        "shards_sha256": h.hexdigest(),
    }
