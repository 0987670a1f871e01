"""Webdataset tar shards: writing (with the ADM center crop) and deterministic reading.

Layout of a shard folder (one per dataset x resolution, or per autoencoder for latents)::

    <dir>/{split}-{index:06d}.tar     samples_per_shard samples each (the last may hold fewer)
    <dir>/{split}.json                manifest, written last: kind, counts, shard names, shapes, and per shard
                                      (``shard_info``) its sample count, sha256 and size

Readers check the shards against the manifest (:func:`read_manifest`: sizes; :func:`iter_split_samples`:
counts, and sha256 before a shard is read), so a shard cut at a member boundary (a valid, shorter tar) or
rewritten since is an error naming the shard, the expected and the found value, never a silently smaller
split. Version-1 manifests (before ``shard_info``) are read with counts derived from ``samples_per_shard``.

A split can also be written by K independent jobs (``--part k --parts K``), each writing the shards of
one contiguous range of shard indices (so of image indices) plus a part manifest, and a merge
(``--merge-parts``) that checks the parts and writes ``{split}.json``; the shards and the manifest are
byte-identical to those of one job, whatever K.

Each sample is a group of consecutive tar members ``<key>.<field>`` sharing ``__key__`` =
``{split}-{sample_index:08d}``: ``png`` or ``npy`` (image, ``uint8 [H, W, C]``) and ``cls``
(ASCII integer label) for image shards; ``latent.npy``, ``latent_flip.npy`` and ``cls`` for
latent shards (:mod:`ucgm_core.data.latents`). Members carry mtime 0 and no owner, so the same
input gives byte-identical shards. Every shard and manifest is written to a temporary name and
renamed into place, so a crash never leaves a half-written file under its final name.

The stage (:func:`build_image_shards`, :func:`merge_image_parts`) is run by the workflow's shards rules
through ``workflow/scripts/shards.py``, which holds its command line.

Modules: the tar/npy codec is :mod:`ucgm_core.data.tarcodec`, the manifests :mod:`ucgm_core.data.manifest`,
the division into parts :mod:`ucgm_core.data.parts` and the ADM crop :mod:`ucgm_core.data.imageprep`; this
module builds and reads image shards with them, and re-exports their public names (its import path is kept).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_write_bytes
from .imageprep import adm_center_crop, prepare_image
from .manifest import (
    REBUILD_HINT,
    ShardIntegrityError,
    iter_split_samples,
    manifest_path,
    read_manifest,
    rebuild_hint,
    shard_paths,
    shard_records,
    split_fingerprint,
    verify_shard,
    write_manifest,
)
from .parts import part_shards, read_part_manifests
from .tarcodec import TarShardWriter, decode_field, encode_field, iter_samples, iter_tar_files, npy_array, npy_bytes

__all__ = [
    "adm_center_crop",
    "prepare_image",
    "encode_field",
    "decode_field",
    "TarShardWriter",
    "write_manifest",
    "read_manifest",
    "manifest_path",
    "shard_paths",
    "ShardIntegrityError",
    "REBUILD_HINT",
    "rebuild_hint",
    "shard_records",
    "verify_shard",
    "iter_split_samples",
    "split_fingerprint",
    "iter_samples",
    "iter_images",
    "load_images",
    "write_image_shards",
    "part_shards",
    "iter_source_range",
    "write_image_shards_part",
    "merge_image_parts",
    "ImageSourceError",
    "build_image_shards",
    "read_part_manifests",
    "atomic_write_bytes",
    "iter_tar_files",
    "npy_bytes",
    "npy_array",
]


def iter_images(shard_dir: os.PathLike | str, split: str) -> Iterator[Tuple[str, np.ndarray, int]]:
    """Yield ``(key, uint8 [H, W, C] image, label)`` from image shards, deterministically.

    Every shard is checked against the manifest (:func:`iter_split_samples`: count and sha256), every image
    has the manifest's ``resolution`` x ``resolution`` x ``channels`` and every label is in
    ``[0, num_classes)``."""
    info = read_manifest(shard_dir, split)
    mpath, hint = manifest_path(shard_dir, split), rebuild_hint(info)
    res, ch, ncls = info.get("resolution"), info.get("channels"), info.get("num_classes")
    for s in iter_split_samples(shard_dir, split, info=info):
        field = "png" if "png" in s else "npy"
        if field not in s or "cls" not in s:
            raise ShardIntegrityError(
                f"{s['__shard__']}: sample {s['__key__']} lacks an image or cls field "
                f"(has {sorted(k for k in s if not k.startswith('__'))}); {hint}"
            )
        img = decode_field(field, s[field])
        img = img[..., None] if img.ndim == 2 else img
        if res is not None and ch is not None and img.shape != (res, res, ch):
            raise ShardIntegrityError(
                f"{s['__shard__']}: sample {s['__key__']} is an image {img.shape}, the manifest "
                f"{mpath} says {res}x{res}x{ch}; {hint}"
            )
        label = decode_field("cls", s["cls"])
        if ncls is not None and not 0 <= label < ncls:
            raise ShardIntegrityError(
                f"{s['__shard__']}: sample {s['__key__']} has label {label}, outside "
                f"[0, {ncls}) (num_classes of {mpath}); {hint}"
            )
        yield s["__key__"], img, label


def load_images(shard_dir: os.PathLike | str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """All images ``uint8 [N, H, W, C]`` and labels ``int64 [N]`` of a split."""
    imgs, labels = [], []
    for _, img, lab in iter_images(shard_dir, split):
        imgs.append(img)
        labels.append(lab)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def _encode_sample(args: Tuple[np.ndarray, int, Optional[int], str]) -> Tuple[bytes, bytes]:
    arr, label, size, fmt = args
    img = prepare_image(arr, size)
    return encode_field(fmt, img), encode_field("cls", label)


def iter_source_range(
    source: Iterable[Tuple[np.ndarray, int]], start: int, stop: int
) -> Iterator[Tuple[np.ndarray, int]]:
    """Items ``start .. stop - 1`` of an image source, decoding only those where the source can
    (``iter_range`` of :mod:`ucgm_core.data.datasets`' sources), else by skipping the first ones."""
    iter_range = getattr(source, "iter_range", None)
    if iter_range is not None:
        return iter_range(start, stop)
    import itertools

    return itertools.islice(source, start, stop)


def _remove_shards(out_dir: Path, split: str, keep=lambda index: False) -> None:
    """Delete ``{split}-NNNNNN.tar`` shards (and their temporary files) whose index ``keep`` rejects."""
    for path in [*out_dir.glob(f"{split}-*.tar"), *out_dir.glob(f".{split}-*.tar.tmp")]:
        digits = path.name.lstrip(".")[len(split) + 1 :].split(".", 1)[0]
        if not (digits.isdigit() and keep(int(digits))):
            path.unlink(missing_ok=True)


def _write_images(
    items: Iterable[Tuple[np.ndarray, int]],
    out_dir: Path,
    split: str,
    *,
    first_index: int,
    resolution: Optional[int],
    samples_per_shard: int,
    image_format: str,
    num_classes: int,
    workers: int,
) -> Tuple[List[Dict[str, Any]], np.ndarray, Optional[Tuple[int, ...]]]:
    """Encode ``items`` (image indices ``first_index, first_index + 1, ...``; ``first_index`` a multiple of
    ``samples_per_shard``) into shards from ``first_index // samples_per_shard`` on.
    Returns the shards' records (:class:`TarShardWriter`), the class counts and the image shape (None when
    ``items`` was empty)."""
    jobs = ((arr, int(lab), resolution, image_format) for arr, lab in items)
    counts = np.zeros(num_classes, dtype=np.int64)
    shape: Optional[Tuple[int, ...]] = None
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
        encoded: Iterable[Tuple[bytes, bytes]] = pool.imap(_encode_sample, jobs, chunksize=64)
    else:
        encoded = map(_encode_sample, jobs)
    try:
        with TarShardWriter(out_dir, split, samples_per_shard, start_index=first_index // samples_per_shard) as w:
            for i, (img_b, cls_b) in enumerate(encoded, start=first_index):
                lab = int(cls_b)
                if not 0 <= lab < num_classes:
                    raise ValueError(f"sample {i}: label {lab} outside [0, {num_classes})")
                counts[lab] += 1
                if shape is None:
                    shape = tuple(decode_field(image_format, img_b).shape)
                w.write(f"{split}-{i:08d}", {image_format: img_b, "cls": cls_b})
        return w.records, counts, shape
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _images_manifest(
    counts: Sequence[int],
    samples_per_shard: int,
    records: List[Dict[str, Any]],
    image_format: str,
    shape: Tuple[int, ...],
    num_classes: int,
    extra_info: Optional[Dict[str, Any]],
) -> Dict[str, Any]:
    return {
        "kind": "images",
        "num_samples": int(sum(counts)),
        "samples_per_shard": samples_per_shard,
        "shards": [r["name"] for r in records],
        "shard_info": [dict(r) for r in records],
        "image_format": image_format,
        "resolution": int(shape[0]),
        "channels": int(shape[2]),
        "num_classes": int(num_classes),
        "class_counts": [int(c) for c in counts],
        **(extra_info or {}),
    }


def write_image_shards(
    source: Iterable[Tuple[np.ndarray, int]],
    out_dir: os.PathLike | str,
    split: str,
    *,
    resolution: Optional[int],
    samples_per_shard: int = 10000,
    image_format: str = "png",
    num_classes: int,
    limit: Optional[int] = None,
    workers: int = 1,
    extra_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Write ``(uint8 [H, W, C] image, label)`` pairs into image shards plus the manifest.

    Images whose size differs from ``resolution`` get the ADM center crop. ``workers > 1``
    preprocesses in a process pool (order preserved). Returns the manifest dict.
    """
    if image_format not in ("png", "npy"):
        raise ValueError("image_format must be 'png' or 'npy'")
    out_dir = Path(out_dir)
    _remove_shards(out_dir, split)
    manifest_path(out_dir, split).unlink(missing_ok=True)
    items = iter(source) if limit is None else iter_source_range(source, 0, limit)
    records, counts, shape = _write_images(
        items,
        out_dir,
        split,
        first_index=0,
        resolution=resolution,
        samples_per_shard=samples_per_shard,
        image_format=image_format,
        num_classes=num_classes,
        workers=workers,
    )
    if shape is None:
        raise ValueError(f"split {split!r}: the source yielded no images")
    info = _images_manifest(counts, samples_per_shard, records, image_format, shape, num_classes, extra_info)
    write_manifest(out_dir, split, info)
    return info


def write_image_shards_part(
    source: Iterable[Tuple[np.ndarray, int]],
    out_dir: os.PathLike | str,
    split: str,
    *,
    part: int,
    parts: int,
    part_manifest: os.PathLike | str,
    resolution: Optional[int],
    samples_per_shard: int = 10000,
    image_format: str = "png",
    num_classes: int,
    limit: Optional[int] = None,
    workers: int = 1,
    extra_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Part ``part`` of ``parts`` of :func:`write_image_shards`: the shards of :func:`part_shards` of the
    split (image indices ``first * samples_per_shard`` up to the next part's), plus the part manifest
    ``part_manifest`` (written atomically, last). ``source`` must be sized (``len``). The parts are
    independent (run them side by side); :func:`merge_image_parts` then writes ``{split}.json``.
    A rerun rewrites the part's shards. Returns the part manifest dict.
    """
    if image_format not in ("png", "npy"):
        raise ValueError("image_format must be 'png' or 'npy'")
    out_dir = Path(out_dir)
    total = len(source)  # type: ignore[arg-type]
    if limit is not None:
        total = min(total, limit)
    own = part_shards(-(-total // samples_per_shard), part, parts)
    start, stop = own.start * samples_per_shard, min(own.stop * samples_per_shard, total)
    manifest_path(out_dir, split).unlink(missing_ok=True)  # its shards are being rewritten
    _remove_shards(out_dir, split, keep=lambda index: index not in own)
    items = iter_source_range(source, start, stop) if start < stop else iter(())
    records, counts, shape = _write_images(
        items,
        out_dir,
        split,
        first_index=start,
        resolution=resolution,
        samples_per_shard=samples_per_shard,
        image_format=image_format,
        num_classes=num_classes,
        workers=workers,
    )
    if int(counts.sum()) != stop - start:
        raise ValueError(
            f"split {split!r}: the source yielded {int(counts.sum())} images for indices "
            f"{start}..{stop - 1} ({total} in all by its length)"
        )
    info = {
        "kind": "images-part",
        "split": split,
        "part": part,
        "parts": parts,
        "total_samples": total,
        "first_shard": own.start,
        "manifest": None
        if shape is None
        else _images_manifest(counts, samples_per_shard, records, image_format, shape, num_classes, extra_info),
        "samples_per_shard": samples_per_shard,
        "image_format": image_format,
        "num_classes": int(num_classes),
        "extra_info": extra_info or {},
    }
    atomic_write_bytes(part_manifest, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return info


def merge_image_parts(
    out_dir: os.PathLike | str,
    split: str,
    part_manifests: Sequence[os.PathLike | str],
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Write ``{split}.json`` from the part manifests of :func:`write_image_shards_part` (all K of them, in
    order), after checking that their shards cover the split in order; shards of the split that no part
    wrote (left by an earlier, larger run) are deleted. The manifest is the one :func:`write_image_shards`
    writes. ``log``, when given, gets one line saying what was merged. Returns it."""
    t0 = time.time()
    out_dir = Path(out_dir)
    parts = read_part_manifests(
        part_manifests,
        "images-part",
        split,
        ("total_samples", "samples_per_shard", "image_format", "num_classes", "extra_info"),
    )
    first = parts[0]
    sps, total = int(first["samples_per_shard"]), int(first["total_samples"])
    if total == 0:
        raise ValueError(f"split {split!r}: the source yielded no images")
    shards: List[str] = []
    records: List[Dict[str, Any]] = []
    counts = np.zeros(int(first["num_classes"]), dtype=np.int64)
    shape: Optional[Tuple[int, ...]] = None
    for path, info in zip(part_manifests, parts):
        if info["first_shard"] != len(shards):
            raise ValueError(f"{path}: starts at shard {info['first_shard']}, the parts before end at {len(shards)}")
        m = info["manifest"]
        if m is None:
            continue
        part_shape = (m["resolution"], m["resolution"], m["channels"])
        if shape is not None and part_shape != shape:
            raise ValueError(f"{path}: images {part_shape}, part 0's are {shape}")
        shape = part_shape
        if "shard_info" not in m:
            raise ValueError(
                f"{path}: a part manifest without shard_info (written before shards recorded counts and "
                "hashes); rerun that part"
            )
        shards += m["shards"]
        records += m["shard_info"]
        counts += np.asarray(m["class_counts"], dtype=np.int64)
    if len(shards) != -(-total // sps) or int(counts.sum()) != total or shape is None:
        raise ValueError(
            f"split {split!r}: the parts hold {int(counts.sum())} images in {len(shards)} shards, "
            f"expected {total} in {-(-total // sps)}"
        )
    info = _images_manifest(
        counts, sps, records, first["image_format"], shape, first["num_classes"], first["extra_info"]
    )
    _remove_shards(out_dir, split, keep=lambda index: index < len(shards))
    write_manifest(out_dir, split, info)
    read_manifest(out_dir, split)  # every shard is on disk
    if log is not None:
        log(
            f"{split}: {info['num_samples']} images in {len(info['shards'])} shards from "
            f"{len(part_manifests)} parts -> {out_dir} ({time.time() - t0:.1f}s)"
        )
    return info


class ImageSourceError(ValueError):
    """The dataset cannot be read as asked: its raw folder is missing, or its images vary in size and no
    resolution was given (:func:`build_image_shards`; the stage tool reports it in one line)."""


def build_image_shards(
    dataset: str,
    raw_dir: os.PathLike | str,
    out_dir: os.PathLike | str,
    *,
    splits: Optional[Sequence[str]] = None,
    resolution: Optional[int] = None,
    samples_per_shard: int = 10000,
    image_format: str = "png",
    limit: Optional[int] = None,
    workers: int = 1,
    num_classes: Optional[int] = None,
    part: Optional[int] = None,
    parts: Optional[int] = None,
    part_manifest: Optional[os.PathLike | str] = None,
    log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """The shards stage (``workflow/scripts/shards.py``): read catalogue dataset ``dataset`` from ``raw_dir``
    and write the image shards of ``splits`` (default: all of the dataset's) into ``out_dir`` with
    :func:`write_image_shards`, or, with ``part``/``parts``/``part_manifest``, part ``part`` of the one split
    with :func:`write_image_shards_part`. ``resolution`` None: the dataset's native size; ``num_classes``
    None: the catalogue's (else a subset, e.g. of ImageNet). Logs one line per split; returns the manifests
    (part manifests with ``part``). Raises :class:`ImageSourceError` for a missing ``raw_dir`` or a
    variable-size dataset without ``resolution``."""
    from .datasets import get_dataset  # deferred: the catalogue's readers import this module

    ds = get_dataset(dataset)
    resolution = resolution or ds.image_size
    if resolution is None:
        raise ImageSourceError(f"dataset {ds.name!r} has variable-size images; pass --resolution")
    if not os.path.exists(raw_dir):
        raise ImageSourceError(f"--raw-dir {raw_dir}: no such file or folder (dataset {ds.name})")
    infos: List[Dict[str, Any]] = []
    for split in splits or ds.splits:
        t0 = time.time()
        source = ds.read(raw_dir, split) if num_classes is None else ds.reader(Path(raw_dir), split, num_classes)
        common: Dict[str, Any] = dict(
            resolution=resolution,
            samples_per_shard=samples_per_shard,
            image_format=image_format,
            num_classes=num_classes or ds.num_classes or source.num_classes,
            limit=limit,
            workers=workers,
            extra_info={"dataset": ds.name},
        )
        if part is not None:
            if parts is None or part_manifest is None:
                raise ValueError(f"split {split!r}: part {part} needs parts and part_manifest")
            info = write_image_shards_part(
                source, out_dir, split, part=part, parts=parts, part_manifest=part_manifest, **common
            )
            m = info["manifest"] or {"num_samples": 0, "shards": []}
            rate = m["num_samples"] / max(time.time() - t0, 1e-9)
            log(
                f"{split} part {part}/{parts}: {m['num_samples']} of {info['total_samples']} images in "
                f"{len(m['shards'])} shards from shard {info['first_shard']} -> {out_dir} "
                f"({time.time() - t0:.1f}s, {rate:.0f} images/s)"
            )
        else:
            info = write_image_shards(source, out_dir, split, **common)
            log(
                f"{split}: {info['num_samples']} images {info['resolution']}x{info['resolution']}x{info['channels']} "
                f"in {len(info['shards'])} shards -> {out_dir} ({time.time() - t0:.1f}s)"
            )
        infos.append(info)
    return infos
