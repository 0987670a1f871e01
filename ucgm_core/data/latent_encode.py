"""Encoding image shards into latent shards (plain and flipped), whole splits or one part of a split.

For every image the autoencoder encodes the image as-is and horizontally flipped, so latent shards hold
``latent.npy`` ``[C, h, w]``, ``latent_flip.npy`` ``[C, h, w]`` and ``cls`` per sample; latent shard
``{split}-{i:06d}.tar`` holds exactly the samples of image shard ``{split}-{i:06d}.tar``, so a resume skips
the shards already written (when their record, :mod:`ucgm_core.data.latent_provenance`, says they were made
from the same inputs). An encoder that samples has its generator reseeded per shard (:class:`_ShardNoise`).
"""

from __future__ import annotations

import io
import json
import os
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_write_bytes
from .latent_provenance import fingerprint_name, latents_fingerprint, record_path, stale_reason, write_record
from .latent_stats import stats_indices
from .manifest import (
    ShardIntegrityError,
    manifest_path,
    read_manifest,
    rebuild_hint,
    shard_records,
    verify_shard,
    write_manifest,
)
from .parts import part_shards
from .tarcodec import TarShardWriter, decode_field, encode_field, iter_samples, npy_array

if TYPE_CHECKING:  # torch is imported where it is used: a part without shards to encode never loads it
    import torch

    from ..autoencoders import Autoencoder

__all__ = ["images_to_tensor", "encode_split", "encode_part", "remove_latent_shards"]


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


def _count_shard(
    path: Path, num_classes: int, pick: Optional[set] = None, first_index: int = 0, expected: Optional[int] = None
) -> Tuple[int, np.ndarray, Tuple[int, ...], List[Tuple[int, np.ndarray]]]:
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
            raise ShardIntegrityError(
                f"{path}: sample {s['__key__']} has a latent {z_shape}, the shard's first {shape}"
            )
        shape = z_shape
        if pick is not None and first_index + n in pick:
            picked.append((first_index + n, decode_field("npy", s["latent.npy"])))
        n += 1
    if expected is not None and n != expected:
        raise ShardIntegrityError(
            f"{path}: {n} samples, its record {record_path(path)} says {expected} (a short or cut shard)"
        )
    return n, counts, shape, picked


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
                reason, record = stale_reason(target, fingerprint)
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
            record_path(target).unlink(missing_ok=True)
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
                        w.write(
                            k,
                            {
                                "latent.npy": encode_field("npy", a),
                                "latent_flip.npy": encode_field("npy", b.astype(np_dtype)),
                                "cls": encode_field("cls", lab),
                            },
                        )
                    keys.clear(), imgs.clear(), labels.clear()

                for s in iter_samples([path]):
                    field = "png" if "png" in s else "npy"
                    if field not in s or "cls" not in s:
                        raise ShardIntegrityError(f"{path}: sample {s['__key__']} lacks an image or cls field; {hint}")
                    img = decode_field(field, s[field])
                    img = img[..., None] if img.ndim == 2 else img
                    if None not in image_shape and img.shape != image_shape:
                        raise ShardIntegrityError(
                            f"{path}: sample {s['__key__']} is an image {img.shape}, the manifest "
                            f"{src_manifest} says {image_shape}; {hint}"
                        )
                    lab = decode_field("cls", s["cls"])
                    if not 0 <= lab < num_classes:
                        raise ShardIntegrityError(
                            f"{path}: sample {s['__key__']} has label {lab}, outside "
                            f"[0, {num_classes}) (num_classes of {src_manifest}); {hint}"
                        )
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
                    raise ShardIntegrityError(
                        f"{path}: {n} samples, the manifest {src_manifest} records "
                        f"{source['num_samples']} (a short or cut shard); {hint}"
                    )
            shards.extend(w.shards)
            records.extend(w.records)
            for r in w.records:
                write_record(r, out_dir, fingerprint)
            _check_full(path, n, position, len(inputs), sps, pick)
            elapsed = time.time() - t0
            log(f"[latents] {name}: {n} samples encoded in {elapsed:.1f}s ({n / max(elapsed, 1e-9):.0f} images/s)")
    finally:
        if noise is not None:
            noise.restore()
    return {
        "shards": shards,
        "records": records,
        "counts": counts,
        "latent_shape": latent_shape,
        "total": total,
        "picked": picked,
    }


def _check_full(path: Path, n: int, position: int, num_shards: int, sps: int, pick: Optional[set]) -> None:
    """Sample indices of parts assume full shards before the last (as the shards stage writes them)."""
    if pick is not None and position < num_shards - 1 and n != sps:
        raise ValueError(f"{path}: {n} samples, but every shard before the last must hold {sps}")


def _latents_manifest(
    src: Dict[str, Any],
    image_dir: Path,
    total: int,
    records: List[Dict[str, Any]],
    latent_shape,
    np_dtype,
    counts,
    autoencoder_name: str,
    autoencoder_kwargs: Optional[Dict[str, Any]],
    fingerprint: Dict[str, Any],
) -> Dict[str, Any]:
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


def remove_latent_shards(out_dir: Path, split: str, keep) -> None:
    """Delete latent shards, their records and temporaries unless ``keep(shard name)``."""
    for old in [*out_dir.glob(f"{split}-*.tar"), *out_dir.glob(f".{split}-*.tar.tmp")]:
        if not keep(old.name):
            old.unlink(missing_ok=True)
    for rec in out_dir.glob(f"{split}-*.tar.json"):
        if not keep(rec.name[: -len(".json")]):
            rec.unlink(missing_ok=True)


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
    fingerprint = latents_fingerprint(
        image_dir, split, fingerprint_name(autoencoder, autoencoder_name), autoencoder_kwargs, np_dtype.name
    )
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    wanted = set(src["shards"])
    remove_latent_shards(out_dir, split, keep=lambda name: resume and name in wanted)
    done = _encode_shards(
        image_dir,
        out_dir,
        split,
        range(len(src["shards"])),
        autoencoder,
        fingerprint=fingerprint,
        batch_size=batch_size,
        device=device,
        np_dtype=np_dtype,
        resume=resume,
        log=log,
    )
    if done["total"] != int(src["num_samples"]):
        raise RuntimeError(f"encoded {done['total']} samples but {image_dir}/{split}.json lists {src['num_samples']}")
    info = _latents_manifest(
        src,
        image_dir,
        done["total"],
        done["records"],
        done["latent_shape"],
        np_dtype,
        done["counts"],
        autoencoder_name,
        autoencoder_kwargs,
        fingerprint,
    )
    write_manifest(out_dir, split, info)
    return info


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
    fingerprint = latents_fingerprint(
        image_dir, split, fingerprint_name(autoencoder, autoencoder_name), autoencoder_kwargs, np_dtype.name
    )
    own = part_shards(len(src["shards"]), part, parts)
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    for name in (src["shards"][i] for i in own):  # the other parts' shards may be being written right now
        (out_dir / f".{name}.tmp").unlink(missing_ok=True)
        if not resume:
            (out_dir / name).unlink(missing_ok=True)
            record_path(out_dir / name).unlink(missing_ok=True)
    pick = set(stats_indices(int(src["num_samples"]), stats_samples, seed)) if len(own) else set()
    done = _encode_shards(
        image_dir,
        out_dir,
        split,
        own,
        autoencoder,
        fingerprint=fingerprint,
        batch_size=batch_size,
        device=device,
        np_dtype=np_dtype,
        resume=resume,
        log=log,
        pick=pick,
    )
    sps = int(src["samples_per_shard"])
    expected = min(own.stop * sps, int(src["num_samples"])) - own.start * sps if len(own) else 0
    if done["total"] != expected:
        raise RuntimeError(
            f"encoded {done['total']} samples of shards {own.start}..{own.stop - 1}, expected {expected} "
            f"({image_dir}/{split}.json: {src['num_samples']} in shards of {sps})"
        )
    picked = sorted(done["picked"], key=lambda item: item[0])
    buf = io.BytesIO()
    if picked:  # an empty file when none (so that a part without shards never imports torch)
        import torch

        torch.save(
            {
                "indices": torch.tensor([i for i, _ in picked], dtype=torch.int64),
                "latents": torch.from_numpy(np.stack([z for _, z in picked])),
                "total_samples": int(src["num_samples"]),
                "split": split,
            },
            buf,
        )
    atomic_write_bytes(part_stats, buf.getvalue())
    info = {
        "kind": "latents-part",
        "split": split,
        "part": part,
        "parts": parts,
        "first_shard": own.start,
        "manifest": _latents_manifest(
            src,
            image_dir,
            done["total"],
            done["records"],
            done["latent_shape"],
            np_dtype,
            done["counts"],
            autoencoder_name,
            autoencoder_kwargs,
            fingerprint,
        ),
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
