"""Encode image shards into latent shards (plain and flipped) and compute latent statistics.

For every image the autoencoder encodes the image as-is and horizontally flipped (the original
does the same and lets the loader pick one of the two at random), so latent shards hold
``latent.npy`` ``[C, h, w]``, ``latent_flip.npy`` ``[C, h, w]`` and ``cls`` per sample. Latent
shard ``{split}-{i:06d}.tar`` holds exactly the samples of image shard ``{split}-{i:06d}.tar``,
so an interrupted run resumes by skipping the shards already written.

What made the latents is recorded (:func:`latents_fingerprint`: autoencoder name and keyword arguments, the
sha256 of the weights files they name, the sha256 of the image manifest, which lists every image shard's
sha256, the resolution, dtype and layout): beside each latent shard in ``{split}-{i:06d}.tar.json`` (with
its sample count, sha256 and size, written after the shard) and in the manifest (``fingerprint``,
``made_from``, ``shard_info``). A resume reuses a shard only when its record carries the same fingerprint
and the shard still has the recorded size and sha256; any other shard is re-encoded and the log says why.
Merging parts with differing fingerprints is refused. Readers (:func:`iter_latent_samples`, the loader)
check every shard's sha256 and count, every latent's shape and every label against the manifest.

An encoder that samples (VA-VAE's ``posterior.sample()`` from a seeded ``generator``) has its generator
reseeded from (seed, split, shard index) before each shard, so every shard's latents are the same
whichever job encodes it and whether or not the run was resumed.

A split can also be encoded by K independent jobs (``--part k --parts K``), each taking a contiguous
range of the image shards and keeping the statistics samples among them; a merge (``--merge-parts``)
then writes the split's manifest and the statistics. Shards, manifest and statistics are identical to
those of one job, whatever K.

Statistics: per-channel ``mean`` and ``std`` of shape ``[1, C, 1, 1]`` over up to 10,000
un-flipped training latents chosen with a fixed seed (``torch.randperm`` of the sample indices),
reduced over samples and spatial positions in float64 on one thread (``std`` unbiased, as
``torch.std``). Saved as a ``.pt`` dict ``{mean, std, num_samples, seed, split}`` (or ``.json`` with
nested lists), written atomically.

The stage (:func:`encode_latents`, :func:`merge_latent_parts`) is run by the workflow's latents rules through
``workflow/scripts/latents.py``, which holds its command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io import sha256_file
from .shards import (
    REBUILD_HINT,
    ShardIntegrityError,
    TarShardWriter,
    atomic_write_bytes,
    decode_field,
    encode_field,
    iter_samples,
    iter_split_samples,
    manifest_path,
    npy_array,
    part_shards,
    read_manifest,
    read_part_manifests,
    rebuild_hint,
    shard_records,
    verify_shard,
    write_manifest,
)

#: Layout of the latent shards' samples; part of the fingerprint (a new layout never reuses old shards).
LATENT_FORMAT = 1

if TYPE_CHECKING:  # torch is imported where it is used: a part without shards to encode never loads it
    import torch

    from ..autoencoders import Autoencoder

__all__ = [
    "images_to_tensor",
    "encode_split",
    "encode_part",
    "encode_latents",
    "merge_latent_parts",
    "iter_latents",
    "compute_latent_stats",
    "save_latent_stats",
    "load_latent_stats",
    "check_latent_stats",
    "latents_fingerprint",
    "read_latent_manifest",
    "iter_latent_samples",
]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [B, H, W, C]`` -> ``float32 [B, C, H, W]`` in ``[-1, 1]`` (ToTensor + Normalize(0.5, 0.5))."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _encode_batch(ae: Autoencoder, images: List[np.ndarray], device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    import torch

    x = images_to_tensor(np.stack(images)).to(device)
    with torch.no_grad():
        z = ae.encode(x)
        zf = ae.encode(torch.flip(x, dims=[3]))
    return z.float().cpu().numpy(), zf.float().cpu().numpy()


def _count_shard(path: Path, num_classes: int, pick: Optional[set] = None, first_index: int = 0,
                 expected: Optional[int] = None) -> Tuple[int, np.ndarray, Tuple[int, ...], List[Tuple[int, np.ndarray]]]:
    """Samples, class counts and latent shape of a latent shard, plus the plain latents of the samples
    whose index (``first_index`` + position) is in ``pick``. Labels outside ``[0, num_classes)``, latents of
    differing shapes and a count other than ``expected`` are errors naming the shard."""
    counts = np.zeros(num_classes, dtype=np.int64)
    shape: Tuple[int, ...] = ()
    picked: List[Tuple[int, np.ndarray]] = []
    n = 0
    for s in iter_samples([path]):
        label = decode_field("cls", s["cls"])
        if not 0 <= label < num_classes:
            raise ShardIntegrityError(f"{path}: sample {s['__key__']} has label {label}, outside [0, {num_classes})")
        counts[label] += 1
        z_shape = npy_array(s["latent.npy"], copy=False).shape
        if shape and z_shape != shape:
            raise ShardIntegrityError(f"{path}: sample {s['__key__']} has a latent {z_shape}, the shard's first {shape}")
        shape = z_shape
        if pick is not None and first_index + n in pick:
            picked.append((first_index + n, decode_field("npy", s["latent.npy"])))
        n += 1
    if expected is not None and n != expected:
        raise ShardIntegrityError(f"{path}: {n} samples, its record {_record_path(path)} says {expected} "
                                  "(a short or cut shard)")
    return n, counts, shape, picked


# ---------------------------------------------------------------------------------------------
# What made the latents: the fingerprint, and the record kept beside each latent shard
# ---------------------------------------------------------------------------------------------


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


def latents_fingerprint(image_dir: os.PathLike | str, split: str, autoencoder_name: str,
                        autoencoder_kwargs: Optional[Dict[str, Any]], dtype: str) -> Dict[str, Any]:
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
        raise ShardIntegrityError(f"{manifest_path(image_dir, split)}: an image manifest without per-shard counts and "
                                  f"sha256 (written before they were recorded); {rebuild_hint(src)}")
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


def _record_path(shard: Path) -> Path:
    """The record beside a latent shard: ``{split}-{index:06d}.tar.json``."""
    return shard.with_name(shard.name + ".json")


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """``key old -> new`` for the keys of two ``made_from`` dicts that differ."""
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _stale_reason(target: Path, fingerprint: Dict[str, Any]) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """Why the latent shard ``target`` cannot be reused (None if it can), and its record."""
    rec_path = _record_path(target)
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


def _write_record(shard_record: Dict[str, Any], out_dir: Path, fingerprint: Dict[str, Any]) -> None:
    """Write the record of a freshly written latent shard (after the shard itself: a crash in between leaves a
    shard without a record, which a resume re-encodes)."""
    rec = {**shard_record, **fingerprint}
    atomic_write_bytes(_record_path(out_dir / shard_record["name"]),
                       (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode())


class _ShardNoise:
    """Per-shard noise of an encoder that samples (VA-VAE's ``posterior.sample()`` from its seeded
    ``generator``): the generator is reseeded from (its seed, split, shard index) before each shard, so
    a shard's latents depend neither on the shards encoded before it in the same job nor on how the
    split is divided among jobs or resumed. Deterministic encoders (no ``generator``) are untouched."""

    def __init__(self, autoencoder: Autoencoder):
        import torch

        gen = getattr(autoencoder, "generator", None)
        self.generator = gen if isinstance(gen, torch.Generator) else None
        self.base = self.generator.initial_seed() if self.generator is not None else 0

    def reseed(self, split: str, index: int) -> None:
        if self.generator is not None:
            words = np.random.SeedSequence([self.base, zlib.crc32(split.encode()), index]).generate_state(2, np.uint32)
            self.generator.manual_seed((int(words[0]) << 31) ^ int(words[1]))

    def restore(self) -> None:
        if self.generator is not None:
            self.generator.manual_seed(self.base)


def _encode_shards(
    image_dir: Path,
    out_dir: Path,
    split: str,
    own: Sequence[int],
    autoencoder: Autoencoder | Callable[[], Autoencoder],
    *,
    fingerprint: Dict[str, Any],
    batch_size: int,
    device: Optional[str | torch.device],
    np_dtype: np.dtype,
    resume: bool,
    log,
    pick: Optional[set] = None,
) -> Dict[str, Any]:
    """Encode the image shards at positions ``own`` of the split's manifest into the latent shards of the
    same names; sample indices count from the split's start (shard ``i`` of a manifest starts at
    ``i * samples_per_shard``). With ``resume``, a latent shard already on disk is reused only when its record
    carries ``fingerprint`` and its size and sha256 still match; otherwise it is re-encoded and the log says
    why. Each image shard is checked against its manifest (sha256 before reading, count after), its labels
    against ``[0, num_classes)`` and its images against the manifest's shape.
    ``autoencoder`` may be a function making one, called only when a shard has to be encoded (``device``
    None: CUDA when available). Returns shards, records, counts, shape, total and the plain latents
    ``[(index, latent)]`` of the samples whose index is in ``pick``."""
    src = read_manifest(image_dir, split)
    num_classes, sps = int(src["num_classes"]), int(src.get("samples_per_shard") or 0)
    image_shape = (src.get("resolution"), src.get("resolution"), src.get("channels"))
    src_manifest, hint = manifest_path(image_dir, split), rebuild_hint(src)
    inputs = shard_records(image_dir, split, src)
    counts = np.zeros(num_classes, dtype=np.int64)
    shards: List[str] = []
    records: List[Dict[str, Any]] = []
    picked: List[Tuple[int, np.ndarray]] = []
    latent_shape: Tuple[int, ...] = ()
    total = 0
    ae: Optional[Autoencoder] = None
    noise: Optional[_ShardNoise] = None
    try:
        for position in own:
            source = inputs[position]
            path, name = source["path"], source["name"]
            index = int(name[len(split) + 1 : -len(".tar")])
            first = position * sps
            target = out_dir / name
            if resume and target.is_file():
                reason, record = _stale_reason(target, fingerprint)
                if record is not None:
                    n, c, shape, p = _count_shard(target, num_classes, pick, first, expected=record["num_samples"])
                    counts += c
                    total += n
                    latent_shape = latent_shape or shape
                    picked += p
                    shards.append(name)
                    records.append(record)
                    log(f"[latents] {name}: already encoded ({n} samples, same fingerprint), skipped")
                    _check_full(path, n, position, len(inputs), sps, pick)
                    continue
                log(f"[latents] {name}: not reused, {reason}; re-encoding")
            _record_path(target).unlink(missing_ok=True)
            verify_shard(source, src_manifest, hint)
            if ae is None:
                import torch

                from ..autoencoders import Autoencoder

                device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
                ae = autoencoder if isinstance(autoencoder, Autoencoder) else autoencoder()
                ae = ae.to(device).eval()
                noise = _ShardNoise(ae)
            noise.reseed(split, index)  # type: ignore[union-attr]
            t0 = time.time()
            n_before = total
            with TarShardWriter(out_dir, split, samples_per_shard=1 << 62, start_index=index) as w:
                keys: List[str] = []
                imgs: List[np.ndarray] = []
                labels: List[int] = []

                def flush() -> None:
                    nonlocal latent_shape
                    z, zf = _encode_batch(ae, imgs, device)  # type: ignore[arg-type]
                    latent_shape = latent_shape or tuple(z.shape[1:])
                    for k, a, b, lab in zip(keys, z, zf, labels):
                        a = a.astype(np_dtype)
                        if pick is not None and first + w.count in pick:
                            picked.append((first + w.count, a))
                        w.write(k, {
                            "latent.npy": encode_field("npy", a),
                            "latent_flip.npy": encode_field("npy", b.astype(np_dtype)),
                            "cls": encode_field("cls", lab),
                        })
                    keys.clear(), imgs.clear(), labels.clear()

                for s in iter_samples([path]):
                    field = "png" if "png" in s else "npy"
                    if field not in s or "cls" not in s:
                        raise ShardIntegrityError(f"{path}: sample {s['__key__']} lacks an image or cls field; {hint}")
                    img = decode_field(field, s[field])
                    img = img[..., None] if img.ndim == 2 else img
                    if None not in image_shape and img.shape != image_shape:
                        raise ShardIntegrityError(f"{path}: sample {s['__key__']} is an image {img.shape}, the manifest "
                                                  f"{src_manifest} says {image_shape}; {hint}")
                    lab = decode_field("cls", s["cls"])
                    if not 0 <= lab < num_classes:
                        raise ShardIntegrityError(f"{path}: sample {s['__key__']} has label {lab}, outside "
                                                  f"[0, {num_classes}) (num_classes of {src_manifest}); {hint}")
                    keys.append(s["__key__"])
                    imgs.append(img)
                    labels.append(lab)
                    counts[lab] += 1
                    total += 1
                    if len(imgs) >= batch_size:
                        flush()
                if imgs:
                    flush()
                n = total - n_before
                if source["num_samples"] is not None and n != source["num_samples"]:
                    raise ShardIntegrityError(f"{path}: {n} samples, the manifest {src_manifest} records "
                                              f"{source['num_samples']} (a short or cut shard); {hint}")
            shards.extend(w.shards)
            records.extend(w.records)
            for r in w.records:
                _write_record(r, out_dir, fingerprint)
            _check_full(path, n, position, len(inputs), sps, pick)
            elapsed = time.time() - t0
            log(f"[latents] {name}: {n} samples encoded in {elapsed:.1f}s ({n / max(elapsed, 1e-9):.0f} images/s)")
    finally:
        if noise is not None:
            noise.restore()
    return {"shards": shards, "records": records, "counts": counts, "latent_shape": latent_shape, "total": total,
            "picked": picked}


def _check_full(path: Path, n: int, position: int, num_shards: int, sps: int, pick: Optional[set]) -> None:
    """Sample indices of parts assume full shards before the last (as the shards stage writes them)."""
    if pick is not None and position < num_shards - 1 and n != sps:
        raise ValueError(f"{path}: {n} samples, but every shard before the last must hold {sps}")


def _latents_manifest(src: Dict[str, Any], image_dir: Path, total: int, records: List[Dict[str, Any]], latent_shape,
                      np_dtype, counts, autoencoder_name: str, autoencoder_kwargs: Optional[Dict[str, Any]],
                      fingerprint: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "kind": "latents",
        "num_samples": total,
        "shards": [r["name"] for r in records],
        "shard_info": [{k: r[k] for k in ("name", "num_samples", "sha256", "size")} for r in records],
        "fingerprint": fingerprint["fingerprint"],
        "made_from": fingerprint["made_from"],
        "samples_per_shard": src.get("samples_per_shard"),
        "latent_shape": list(latent_shape),
        "latent_dtype": np.dtype(np_dtype).name,
        "num_classes": int(src["num_classes"]),
        "class_counts": [int(c) for c in counts],
        "autoencoder": autoencoder_name,
        "autoencoder_kwargs": autoencoder_kwargs or {},
        "source": {k: src.get(k) for k in ("dataset", "resolution", "channels", "image_format")},
        "source_dir": str(image_dir),
    }


def _remove_latent_shards(out_dir: Path, split: str, keep) -> None:
    """Delete latent shards, their records and temporaries unless ``keep(shard name)``."""
    for old in [*out_dir.glob(f"{split}-*.tar"), *out_dir.glob(f".{split}-*.tar.tmp")]:
        if not keep(old.name):
            old.unlink(missing_ok=True)
    for rec in out_dir.glob(f"{split}-*.tar.json"):
        if not keep(rec.name[: -len(".json")]):
            rec.unlink(missing_ok=True)


def _fingerprint_name(autoencoder: Any, autoencoder_name: str) -> str:
    """The autoencoder's name in the fingerprint: the registry name, else the class of an instance (a library
    caller that passes neither a name nor an instance gets "")."""
    from_class = "" if callable(autoencoder) and not hasattr(autoencoder, "encode") else \
        f"{type(autoencoder).__module__}.{type(autoencoder).__qualname__}"
    return autoencoder_name or from_class


def encode_split(
    image_dir: os.PathLike | str,
    out_dir: os.PathLike | str,
    split: str,
    autoencoder: Autoencoder,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    resume: bool = True,
    autoencoder_name: str = "",
    autoencoder_kwargs: Optional[Dict[str, Any]] = None,
    log=print,
) -> Dict[str, Any]:
    """Encode every image of ``split`` (plain and flipped) into latent shards + manifest.

    Returns the latent manifest dict (``kind == "latents"``, ``latent_shape == [C, h, w]``). With ``resume``,
    latent shards already on disk are reused only when made from the same inputs (:func:`latents_fingerprint`).
    """
    np_dtype = np.dtype(dtype)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = read_manifest(image_dir, split)
    fingerprint = latents_fingerprint(image_dir, split, _fingerprint_name(autoencoder, autoencoder_name),
                                      autoencoder_kwargs, np_dtype.name)
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    wanted = set(src["shards"])
    _remove_latent_shards(out_dir, split, keep=lambda name: resume and name in wanted)
    done = _encode_shards(image_dir, out_dir, split, range(len(src["shards"])), autoencoder, fingerprint=fingerprint,
                          batch_size=batch_size, device=device, np_dtype=np_dtype, resume=resume, log=log)
    if done["total"] != int(src["num_samples"]):
        raise RuntimeError(f"encoded {done['total']} samples but {image_dir}/{split}.json lists {src['num_samples']}")
    info = _latents_manifest(src, image_dir, done["total"], done["records"], done["latent_shape"], np_dtype,
                             done["counts"], autoencoder_name, autoencoder_kwargs, fingerprint)
    write_manifest(out_dir, split, info)
    return info


def _stats_indices(num_samples: int, max_samples: int, seed: int) -> List[int]:
    """The samples the statistics use: ``torch.randperm(N, generator=manual_seed(seed))[:max_samples]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_samples, generator=g)[: min(max_samples, num_samples)].tolist()


def encode_part(
    image_dir: os.PathLike | str,
    out_dir: os.PathLike | str,
    split: str,
    autoencoder: Autoencoder | Callable[[], Autoencoder],
    *,
    part: int,
    parts: int,
    part_manifest: os.PathLike | str,
    part_stats: os.PathLike | str,
    batch_size: int = 256,
    device: Optional[str | torch.device] = None,
    dtype: str = "float32",
    resume: bool = True,
    autoencoder_name: str = "",
    autoencoder_kwargs: Optional[Dict[str, Any]] = None,
    stats_samples: int = 10000,
    seed: int = 0,
    log=print,
) -> Dict[str, Any]:
    """Part ``part`` of ``parts`` of :func:`encode_split`: the image shards of
    :func:`~ucgm_core.data.shards.part_shards` of the split, into the latent shards of the same names
    (resumable shard by shard), plus the part manifest ``part_manifest`` and ``part_stats``: the plain
    latents of this part's samples among the statistics sample (:func:`compute_latent_stats`'s
    ``stats_samples`` indices drawn with ``seed``), with their indices. ``autoencoder`` may be a function
    making one, called only when a shard must be encoded (an empty or finished part never loads weights;
    ``device`` None: CUDA when available). ``part_stats`` is empty when the part holds no such sample.
    :func:`merge_latent_parts` writes the split's manifest and the statistics from all the parts.
    Returns the part manifest dict.
    """
    np_dtype = np.dtype(dtype)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = read_manifest(image_dir, split)
    fingerprint = latents_fingerprint(image_dir, split, _fingerprint_name(autoencoder, autoencoder_name),
                                      autoencoder_kwargs, np_dtype.name)
    own = part_shards(len(src["shards"]), part, parts)
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    for name in (src["shards"][i] for i in own):  # the other parts' shards may be being written right now
        (out_dir / f".{name}.tmp").unlink(missing_ok=True)
        if not resume:
            (out_dir / name).unlink(missing_ok=True)
            _record_path(out_dir / name).unlink(missing_ok=True)
    pick = set(_stats_indices(int(src["num_samples"]), stats_samples, seed)) if len(own) else set()
    done = _encode_shards(image_dir, out_dir, split, own, autoencoder, fingerprint=fingerprint, batch_size=batch_size,
                          device=device, np_dtype=np_dtype, resume=resume, log=log, pick=pick)
    sps = int(src["samples_per_shard"])
    expected = min(own.stop * sps, int(src["num_samples"])) - own.start * sps if len(own) else 0
    if done["total"] != expected:
        raise RuntimeError(f"encoded {done['total']} samples of shards {own.start}..{own.stop - 1}, expected {expected} "
                           f"({image_dir}/{split}.json: {src['num_samples']} in shards of {sps})")
    picked = sorted(done["picked"], key=lambda item: item[0])
    buf = io.BytesIO()
    if picked:  # an empty file when none (so that a part without shards never imports torch)
        import torch

        torch.save({"indices": torch.tensor([i for i, _ in picked], dtype=torch.int64),
                    "latents": torch.from_numpy(np.stack([z for _, z in picked])),
                    "total_samples": int(src["num_samples"]), "split": split}, buf)
    atomic_write_bytes(part_stats, buf.getvalue())
    info = {
        "kind": "latents-part",
        "split": split,
        "part": part,
        "parts": parts,
        "first_shard": own.start,
        "manifest": _latents_manifest(src, image_dir, done["total"], done["records"], done["latent_shape"], np_dtype,
                                      done["counts"], autoencoder_name, autoencoder_kwargs, fingerprint),
        "fingerprint": fingerprint["fingerprint"],
        "source_manifest": {k: src[k] for k in ("num_samples", "shards", "samples_per_shard")},
        "source_dir": str(image_dir),
        "latent_dtype": np_dtype.name,
        "autoencoder": autoencoder_name,
        "autoencoder_kwargs": autoencoder_kwargs or {},
        "stats": {"max_samples": stats_samples, "seed": seed},
        "stats_samples": len(picked),
    }
    atomic_write_bytes(part_manifest, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return info


def _check_merged_record(shard: Path, record: Dict[str, Any], fingerprint: str, part_manifest: os.PathLike | str) -> None:
    """A shard listed by a part must still be the one that part wrote: its record beside it carries the parts'
    fingerprint and the sha256 the part manifest lists (a later job with other inputs may have replaced it)."""
    rec_path = _record_path(shard)
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{rec_path}: the record of a shard listed by {part_manifest} is unreadable "
                         f"({type(e).__name__}: {e}); rerun that part") from None
    if rec.get("fingerprint") != fingerprint or rec.get("sha256") != record["sha256"]:
        raise ValueError(f"{shard}: made from fingerprint {str(rec.get('fingerprint'))[:16]} with sha256 "
                         f"{rec.get('sha256')}, but {part_manifest} lists fingerprint {fingerprint[:16]} and sha256 "
                         f"{record['sha256']} (replaced since); rerun that part")


def merge_latent_parts(
    out_dir: os.PathLike | str,
    split: str,
    part_manifests: Sequence[os.PathLike | str],
    part_stats: Sequence[os.PathLike | str],
    stats_out: Optional[os.PathLike | str] = None,
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Write ``{split}.json`` from the parts of :func:`encode_part` (all K, in order) and, when ``stats_out``
    is given, the statistics of their sampled latents there: the manifest and statistics of
    :func:`encode_split` and :func:`compute_latent_stats` (same samples, same order, same arithmetic).
    Latent shards of the split that are not among the image shards are deleted. The parts must share one
    fingerprint (:func:`latents_fingerprint`; a differing one is refused naming both parts and values), and every
    shard's record must carry it and the shard's sha256. Returns both."""
    out_dir = Path(out_dir)
    for path in part_manifests:
        if "fingerprint" not in json.loads(Path(path).read_text()):
            raise ValueError(f"{path}: a part manifest without a fingerprint (written before latents recorded what "
                             "made them); rerun that part")
    parts = read_part_manifests(part_manifests, "latents-part", split,
                                ("fingerprint", "source_manifest", "source_dir", "latent_dtype", "autoencoder",
                                 "autoencoder_kwargs", "stats"))
    if len(part_stats) != len(parts):
        raise ValueError(f"{len(parts)} part manifests but {len(part_stats)} part statistics files")
    src = parts[0]["source_manifest"]
    records: List[Dict[str, Any]] = []
    shards: List[str] = []
    counts: Optional[np.ndarray] = None
    latent_shape: Optional[List[int]] = None
    total = 0
    for path, info in zip(part_manifests, parts):
        m = info["manifest"]
        if info["first_shard"] != len(shards):
            raise ValueError(f"{path}: starts at shard {info['first_shard']}, the parts before end at {len(shards)}")
        if m["shards"] != src["shards"][len(shards) : len(shards) + len(m["shards"])]:
            raise ValueError(f"{path}: shards {m['shards']} are not the image shards at {len(shards)}")
        if m["num_samples"]:
            if latent_shape is not None and m["latent_shape"] != latent_shape:
                raise ValueError(f"{path}: latents {m['latent_shape']}, the parts before have {latent_shape}")
            latent_shape = m["latent_shape"]
        for r in m["shard_info"]:
            _check_merged_record(out_dir / r["name"], r, parts[0]["fingerprint"], path)
        shards += m["shards"]
        records += m["shard_info"]
        total += m["num_samples"]
        c = np.asarray(m["class_counts"], dtype=np.int64)
        counts = c if counts is None else counts + c
    if shards != src["shards"] or total != src["num_samples"] or latent_shape is None:
        raise ValueError(f"split {split!r}: the parts hold {total} latents in {len(shards)} shards, the image "
                         f"manifest {src['num_samples']} in {len(src['shards'])}")
    info = dict(parts[0]["manifest"], num_samples=total, shards=shards, shard_info=records, latent_shape=latent_shape,
                class_counts=[int(c) for c in counts])  # type: ignore[union-attr]
    wanted = set(shards)
    _remove_latent_shards(out_dir, split, keep=lambda name: name in wanted)
    write_manifest(out_dir, split, info)
    read_manifest(out_dir, split)  # every shard is on disk
    stats = None
    if stats_out is not None:
        import torch

        indices, latents = [], []
        for path, part in zip(part_stats, parts):
            if not part["stats_samples"]:
                continue
            d = torch.load(path, map_location="cpu", weights_only=True)
            if (d["total_samples"], d["split"], len(d["indices"])) != (total, split, part["stats_samples"]):
                raise ValueError(f"{path}: not the statistics sample of {part_manifests[part['part']]}")
            indices += d["indices"].tolist()
            latents.append(d["latents"])
        want = _stats_indices(total, parts[0]["stats"]["max_samples"], parts[0]["stats"]["seed"])
        if indices != sorted(want):
            raise ValueError(f"the parts' statistics samples ({len(indices)}) are not the {len(want)} drawn ones")
        stats = _stats_of(torch.cat(latents), parts[0]["stats"]["seed"], split)
        save_latent_stats(stats_out, stats)
    return info, stats


def read_latent_manifest(latent_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """The manifest of a latent split, checked: ``kind`` latents, a fingerprint of what made the latents,
    an integer ``latent_shape [C, h, w]`` and ``num_classes``. A manifest written before latents recorded their
    fingerprint is refused (its shards may come from another autoencoder): rebuild them."""
    info = read_manifest(latent_dir, split)
    path = manifest_path(latent_dir, split)
    if info.get("kind") != "latents":
        raise ValueError(f"{path} is not a latent manifest (kind={info.get('kind')!r}, expected 'latents')")
    if "fingerprint" not in info or "shard_info" not in info:
        raise ShardIntegrityError(f"{path}: latents without a fingerprint of what made them (written by an older "
                                  f"version; they may come from another autoencoder); {REBUILD_HINT['latents']}")
    shape = info.get("latent_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ShardIntegrityError(f"{path}: latent_shape {shape!r}, expected [C, h, w] (positive integers)")
    if not (isinstance(info.get("num_classes"), int) and info["num_classes"] >= 1):
        raise ShardIntegrityError(f"{path}: num_classes {info.get('num_classes')!r}, expected an integer >= 1")
    return info


def iter_latent_samples(latent_dir: os.PathLike | str, split: str, flipped: bool = True, copy: bool = True,
                        info: Optional[Dict[str, Any]] = None) -> Iterator[Tuple[str, np.ndarray, Optional[np.ndarray], int]]:
    """Yield ``(key, latent, latent_flip or None, label)`` of a latent split, every shard checked against the
    manifest (sha256, count: :func:`~ucgm_core.data.shards.iter_split_samples`), every latent's shape exactly
    the manifest's ``latent_shape`` (no broadcasting) and every label in ``[0, num_classes)``.
    ``copy=False`` yields read-only views of the shard bytes (for callers that copy them anyway)."""
    info = read_latent_manifest(latent_dir, split) if info is None else info
    mpath, shape, ncls = manifest_path(latent_dir, split), tuple(info["latent_shape"]), info["num_classes"]
    for s in iter_split_samples(latent_dir, split, info=info):
        missing = [f for f in ("latent.npy", "latent_flip.npy", "cls") if f not in s]
        if missing:
            raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']} lacks {missing}; "
                                      f"{REBUILD_HINT['latents']}")
        fields = ("latent.npy", "latent_flip.npy") if flipped else ("latent.npy",)
        arrays = [npy_array(s[f], copy=copy) for f in fields]
        for f, arr in zip(fields, arrays):
            if arr.shape != shape:
                raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']}: {f} has shape {arr.shape}, the "
                                          f"manifest {mpath} says latent_shape {list(shape)}")
        label = int(s["cls"])
        if not 0 <= label < ncls:
            raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']} has label {label}, outside "
                                      f"[0, {ncls}) (num_classes of {mpath})")
        yield s["__key__"], arrays[0], (arrays[1] if flipped else None), label


def iter_latents(latent_dir: os.PathLike | str, split: str, flipped: bool = True) -> Iterator[Tuple[str, np.ndarray, Optional[np.ndarray], int]]:
    """Yield ``(key, latent [C,h,w], latent_flip [C,h,w] or None, label)`` in shard order (checked as
    :func:`iter_latent_samples`)."""
    return iter_latent_samples(latent_dir, split, flipped)


def compute_latent_stats(
    latent_dir: os.PathLike | str, split: str = "train", max_samples: int = 10000, seed: int = 0
) -> Dict[str, Any]:
    """Per-channel mean/std (``[1, C, 1, 1]``) of up to ``max_samples`` un-flipped latents.

    The samples are ``torch.randperm(N, generator=manual_seed(seed))[:max_samples]``.
    """
    import torch

    n = int(read_latent_manifest(latent_dir, split)["num_samples"])
    chosen = set(_stats_indices(n, max_samples, seed))
    picked = []
    for i, (_, z, _, _) in enumerate(iter_latent_samples(latent_dir, split, flipped=False)):
        if i in chosen:
            picked.append(z)
    return _stats_of(torch.from_numpy(np.stack(picked)), seed, split)


def _stats_of(z: torch.Tensor, seed: int, split: str) -> Dict[str, Any]:
    """Per-channel mean and unbiased std of ``z [N, C, h, w]`` in float64, on one thread (so that the sums,
    and the float32 results, do not depend on the thread count of the job that computes them)."""
    import torch

    z = z.double()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mean = z.mean(dim=(0, 2, 3), keepdim=True)
        std = z.std(dim=(0, 2, 3), keepdim=True)
    finally:
        torch.set_num_threads(threads)
    return {"mean": mean.float(), "std": std.float(), "num_samples": len(z), "seed": seed, "split": split}


def save_latent_stats(path: os.PathLike | str, stats: Dict[str, Any]) -> Path:
    """Atomically save statistics as ``.pt`` (torch dict) or ``.json`` (nested lists)."""
    import torch

    path = Path(path)
    if path.suffix == ".json":
        data = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    else:
        buf = io.BytesIO()
        torch.save({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}, buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


def load_latent_stats(path: os.PathLike | str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load ``(mean, std)``, each ``float32 [1, C, 1, 1]``, from a ``.pt`` or ``.json`` file."""
    import torch

    path = Path(path)
    if path.suffix == ".json":
        d = json.loads(path.read_text())
    else:
        d = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("mean", "std") if k not in d]
    if missing:
        raise ValueError(f"{path}: latent statistics lack {missing} (expected keys mean and std, [1, C, 1, 1] each)")
    mean = torch.as_tensor(d["mean"], dtype=torch.float32)
    std = torch.as_tensor(d["std"], dtype=torch.float32)
    if mean.ndim != 4 or mean.shape[0] != 1 or mean.shape[2:] != (1, 1) or std.shape != mean.shape:
        raise ValueError(f"{path}: mean/std must be [1, C, 1, 1], got {tuple(mean.shape)} / {tuple(std.shape)}")
    check_latent_stats(mean, std, str(path))
    return mean, std


def check_latent_stats(mean: torch.Tensor, std: torch.Tensor, source: str) -> None:
    """Refuse statistics that cannot normalise: a non-finite mean or std, or a std <= 0 (a constant channel,
    a zeroed file); the error names ``source`` (a file or a config key), the channel and the value."""
    import torch

    for name, t, ok in (("mean", mean, torch.isfinite(mean)), ("std", std, torch.isfinite(std) & (std > 0))):
        bad = (~ok).flatten().nonzero().flatten().tolist()
        if bad:
            values = t.flatten()[bad[:4]].tolist()
            raise ValueError(f"{source}: {name} of channel(s) {bad[:4]} is {values}; expected "
                             + ("finite values" if name == "mean" else "finite values > 0 (a zero or NaN std cannot "
                                "normalise; recompute the statistics, or set data.normalize_latents: false)"))


def _make_autoencoder(name: str, kwargs: Dict[str, Any]) -> Autoencoder:
    from ..autoencoders import get_autoencoder

    return get_autoencoder(name, **kwargs)


def encode_latents(
    image_dir: Optional[os.PathLike | str],
    out_dir: os.PathLike | str,
    *,
    splits: Sequence[str] = ("train", "test"),
    autoencoder: str = "identity",
    autoencoder_kwargs: Optional[Dict[str, Any]] = None,
    batch_size: int = 256,
    device: Optional[str] = None,
    dtype: str = "float32",
    resume: bool = True,
    stats_out: Optional[os.PathLike | str] = None,
    stats_split: str = "train",
    stats_samples: int = 10000,
    seed: int = 0,
    part: Optional[int] = None,
    parts: Optional[int] = None,
    part_manifest: Optional[os.PathLike | str] = None,
    part_stats: Optional[os.PathLike | str] = None,
    log: Callable[[str], None] = print,
) -> None:
    """The latents stage (``workflow/scripts/latents.py``): encode ``splits`` of the image shards in
    ``image_dir`` with registry autoencoder ``autoencoder`` (:func:`encode_split`), then, when ``stats_out`` is
    given, write the statistics of ``stats_split`` there (:func:`compute_latent_stats`). With ``part`` (and
    ``parts``, ``part_manifest``, ``part_stats``) only that part of the one split is encoded
    (:func:`encode_part`: no statistics, and no autoencoder made unless a shard needs encoding, so no torch
    import for an empty part). ``image_dir`` None: statistics only, from the latents already in ``out_dir``.
    The identity autoencoder gets the image shards' channel count unless ``autoencoder_kwargs`` names one;
    ``device`` None: CUDA when available. Logs one line per split."""
    if image_dir is not None:
        kwargs = dict(autoencoder_kwargs or {})
        if autoencoder == "identity" and "channels" not in kwargs:
            kwargs["channels"] = int(read_manifest(image_dir, splits[0])["channels"])
        if part is not None:
            if parts is None or part_manifest is None or part_stats is None:
                raise ValueError(f"part {part} of split {splits[0]!r} needs parts, part_manifest and part_stats")
            t0 = time.time()
            info = encode_part(
                image_dir, out_dir, splits[0], lambda: _make_autoencoder(autoencoder, kwargs),
                part=part, parts=parts, part_manifest=part_manifest, part_stats=part_stats,
                batch_size=batch_size, device=device, dtype=dtype, resume=resume,
                autoencoder_name=autoencoder, autoencoder_kwargs=kwargs, stats_samples=stats_samples, seed=seed,
                log=log,
            )
            m = info["manifest"]
            log(f"{splits[0]} part {part}/{parts}: {m['num_samples']} latents in {len(m['shards'])} "
                f"shards from shard {info['first_shard']} -> {out_dir} ({time.time() - t0:.1f}s)")
            return
        ae = _make_autoencoder(autoencoder, kwargs)
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        for split in splits:
            t0 = time.time()
            info = encode_split(image_dir, out_dir, split, ae, batch_size=batch_size, device=device, dtype=dtype,
                                resume=resume, autoencoder_name=autoencoder, autoencoder_kwargs=kwargs, log=log)
            log(f"{split}: {info['num_samples']} latents {info['latent_shape']} -> {out_dir} ({time.time() - t0:.1f}s)")
    if stats_out:
        stats = compute_latent_stats(out_dir, stats_split, stats_samples, seed)
        save_latent_stats(stats_out, stats)
        log(f"stats ({stats['num_samples']} {stats_split} latents): mean {stats['mean'].flatten().tolist()} "
            f"std {stats['std'].flatten().tolist()} -> {stats_out}")
