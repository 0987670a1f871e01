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

Modules: encoding is :mod:`ucgm_core.data.latent_encode`, the fingerprint and shard records
:mod:`ucgm_core.data.latent_provenance`, the statistics :mod:`ucgm_core.data.latent_stats` and the checked
reader :mod:`ucgm_core.data.latent_reader`; this module holds the stage and the merge of parts, and re-exports
their public names (its import path is kept).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .latent_encode import encode_part, encode_split, images_to_tensor, remove_latent_shards
from .latent_provenance import LATENT_FORMAT, check_merged_record, latents_fingerprint
from .latent_reader import iter_latent_samples, iter_latents, read_latent_manifest
from .latent_stats import (
    check_latent_stats,
    compute_latent_stats,
    load_latent_stats,
    save_latent_stats,
    stats_indices,
    stats_of,
)
from .manifest import read_manifest, write_manifest
from .parts import read_part_manifests

if TYPE_CHECKING:
    from ..autoencoders import Autoencoder

__all__ = [
    "LATENT_FORMAT",
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


def merge_latent_parts(
    out_dir: os.PathLike | str,
    split: str,
    part_manifests: Sequence[os.PathLike | str],
    part_stats: Sequence[os.PathLike | str],
    stats_out: Optional[os.PathLike | str] = None,
    expect_stats: Optional[Tuple[int, int]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Write ``{split}.json`` from the parts of :func:`encode_part` (all K, in order) and, when ``stats_out``
    is given, the statistics of their sampled latents there: the manifest and statistics of
    :func:`encode_split` and :func:`compute_latent_stats` (same samples, same order, same arithmetic).
    Latent shards of the split that are not among the image shards are deleted. The parts must share one
    fingerprint (:func:`latents_fingerprint`; a differing one is refused naming both parts and values), and every
    shard's record must carry it and the shard's sha256. ``expect_stats`` ``(samples, seed)``: the statistics
    sample the caller asked for; parts that drew another are refused before anything is written. ``log``: one
    line for the manifest and one for the statistics. Returns both."""
    t0 = time.time()
    out_dir = Path(out_dir)
    for path in part_manifests:
        if "fingerprint" not in json.loads(Path(path).read_text()):
            raise ValueError(
                f"{path}: a part manifest without a fingerprint (written before latents recorded what "
                "made them); rerun that part"
            )
    parts = read_part_manifests(
        part_manifests,
        "latents-part",
        split,
        ("fingerprint", "source_manifest", "source_dir", "latent_dtype", "autoencoder", "autoencoder_kwargs", "stats"),
    )
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
            check_merged_record(out_dir / r["name"], r, parts[0]["fingerprint"], path)
        shards += m["shards"]
        records += m["shard_info"]
        total += m["num_samples"]
        c = np.asarray(m["class_counts"], dtype=np.int64)
        counts = c if counts is None else counts + c
    if shards != src["shards"] or total != src["num_samples"] or latent_shape is None:
        raise ValueError(
            f"split {split!r}: the parts hold {total} latents in {len(shards)} shards, the image "
            f"manifest {src['num_samples']} in {len(src['shards'])}"
        )
    drawn = (min(parts[0]["stats"]["max_samples"], total), parts[0]["stats"]["seed"])
    if stats_out is not None and expect_stats is not None and drawn != (min(expect_stats[0], total), expect_stats[1]):
        raise ValueError(
            f"the parts drew {drawn[0]} statistics samples with seed {drawn[1]}, "
            f"not --stats-samples {expect_stats[0]} --seed {expect_stats[1]}"
        )
    info = dict(
        parts[0]["manifest"],
        num_samples=total,
        shards=shards,
        shard_info=records,
        latent_shape=latent_shape,
        class_counts=[int(c) for c in counts],
    )  # type: ignore[union-attr]
    wanted = set(shards)
    remove_latent_shards(out_dir, split, keep=lambda name: name in wanted)
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
        want = stats_indices(total, parts[0]["stats"]["max_samples"], parts[0]["stats"]["seed"])
        if indices != sorted(want):
            raise ValueError(f"the parts' statistics samples ({len(indices)}) are not the {len(want)} drawn ones")
        stats = stats_of(torch.cat(latents), parts[0]["stats"]["seed"], split)
        save_latent_stats(stats_out, stats)
    if log is not None:
        log(
            f"{split}: {info['num_samples']} latents {info['latent_shape']} in {len(info['shards'])} shards "
            f"from {len(part_manifests)} parts -> {out_dir} ({time.time() - t0:.1f}s)"
        )
        if stats is not None:
            mean, std = stats["mean"].flatten().tolist(), stats["std"].flatten().tolist()
            log(f"stats ({stats['num_samples']} {split} latents): mean {mean} std {std} -> {stats_out}")
    return info, stats


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
                image_dir,
                out_dir,
                splits[0],
                lambda: _make_autoencoder(autoencoder, kwargs),
                part=part,
                parts=parts,
                part_manifest=part_manifest,
                part_stats=part_stats,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                resume=resume,
                autoencoder_name=autoencoder,
                autoencoder_kwargs=kwargs,
                stats_samples=stats_samples,
                seed=seed,
                log=log,
            )
            m = info["manifest"]
            log(
                f"{splits[0]} part {part}/{parts}: {m['num_samples']} latents in {len(m['shards'])} "
                f"shards from shard {info['first_shard']} -> {out_dir} ({time.time() - t0:.1f}s)"
            )
            return
        ae = _make_autoencoder(autoencoder, kwargs)
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        for split in splits:
            t0 = time.time()
            info = encode_split(
                image_dir,
                out_dir,
                split,
                ae,
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                resume=resume,
                autoencoder_name=autoencoder,
                autoencoder_kwargs=kwargs,
                log=log,
            )
            log(f"{split}: {info['num_samples']} latents {info['latent_shape']} -> {out_dir} ({time.time() - t0:.1f}s)")
    if stats_out:
        stats = compute_latent_stats(out_dir, stats_split, stats_samples, seed)
        save_latent_stats(stats_out, stats)
        log(
            f"stats ({stats['num_samples']} {stats_split} latents): mean {stats['mean'].flatten().tolist()} "
            f"std {stats['std'].flatten().tolist()} -> {stats_out}"
        )
