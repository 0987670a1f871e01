"""The evaluation stage's library calls (``workflow/scripts/evaluate.py`` maps its flags onto one of them):

* :func:`evaluate_shards`: sample shards against a reference -> an :class:`EvaluationResult` JSON carrying the
  evaluation contract (sample count, seeds, extractor and its weights' sha256, reference set, and the samples'
  checkpoint, sampler and knobs from the shards). The shards are checked against one another and against
  ``expect`` (the sampler's settings in the config) from their metadata alone, before any other work; their
  images are then streamed in blocks of ``block_bytes``, so memory does not grow with the number of samples
  beyond their features.
* :func:`cache_reference`: the reference side alone (features and FID statistics cached in ``cache_dir``), with a
  small JSON saying what was cached.

The reference is described by a :class:`ReferenceSource` (a split of an image shard folder, or an ADM reference
batch ``.npz``) and opened only after the shards passed their checks.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..io import atomic_write
from .features import ChunkedImages, default_layer
from .fidelity import evaluate
from .imageutil import sha256_file
from .reference_cache import reference_features
from .result import EvaluationResult
from .sample_shards import DEFAULT_BLOCK_BYTES, NpzArray, open_sample_shards
from .specs import ALL_METRICS, FeatureExtractorSpec, ReferenceSet

__all__ = [
    "EXTRACTORS",
    "ReferenceSource",
    "reference_batch_set",
    "image_shards_reference",
    "evaluate_shards",
    "cache_reference",
]

#: the pipeline's extractor kinds (``extractor.kind`` in the config) -> torch-fidelity extractor names
EXTRACTORS = {"classifier": "ucgm-classifier", "inception": "inception-v3-compat"}

Log = Callable[[str], None]


def reference_batch_set(npz: str) -> ReferenceSet:
    """An ADM reference batch (guided-diffusion's ``VIRTUAL_imagenet256_labeled.npz``, ...): FID against its
    ``mu``/``sigma``, KID and precision/recall against the features of its ``arr_0`` images (uint8 NHWC)."""
    with np.load(npz) as z:
        missing = [k for k in ("arr_0", "mu", "sigma") if k not in z.files]
    if missing:
        raise ValueError(f"{npz}: not an ADM reference batch (lacks {missing}; has {sorted(z.files)})")

    def images():  # read a block at a time (10,000 images at 512 px are 7.9 GB)
        arr = NpzArray(npz, "arr_0")
        rows = max(1, (64 << 20) // max(1, arr.row_bytes))
        return ChunkedImages(
            [
                (min(lo + rows, len(arr)) - lo, functools.partial(_nhwc_block, arr, lo, lo + rows))
                for lo in range(0, len(arr), rows)
            ]
        )

    sha = sha256_file(npz)
    return ReferenceSet(
        id=f"{Path(npz).stem}-{sha[:16]}",
        images=images,
        stats_path=npz,
        fingerprint={"reference_batch": Path(npz).name, "sha256": sha},
    )


def _nhwc_block(arr: NpzArray, lo: int, hi: int) -> torch.Tensor:
    return torch.from_numpy(arr.read(lo, hi)).permute(0, 3, 1, 2)


def image_shards_reference(images_dir: str, split: str) -> ReferenceSet:
    """A split of an image shard folder, id ``<folder>-<split>``, with its fingerprint (manifest and shard
    sha256s): the reference cache recomputes the features when the shards are rebuilt from other data."""
    return ReferenceSet.from_image_shards(images_dir, split)


@dataclass(frozen=True)
class ReferenceSource:
    """Where the reference images come from: ``images`` (an image shard folder) with ``split``, or
    ``reference_batch`` (an ADM reference batch ``.npz``); exactly one of the two."""

    images: Optional[str] = None
    reference_batch: Optional[str] = None
    split: str = "test"

    def __post_init__(self) -> None:
        if (self.images is None) == (self.reference_batch is None):
            raise ValueError("give one of --images (a split of an image shard folder) or --reference-batch")

    def open(self) -> ReferenceSet:
        """The :class:`ReferenceSet` (hashes the batch file or the split's shards)."""
        if self.reference_batch:
            return reference_batch_set(self.reference_batch)
        return image_shards_reference(self.images, self.split)

    def fid_statistics(self) -> str:
        """What FID is computed against, as recorded by :func:`cache_reference`."""
        return f"{self.reference_batch} (mu, sigma)" if self.reference_batch else "reference features"


def cache_reference(
    source: ReferenceSource,
    extractor: FeatureExtractorSpec,
    *,
    cache_dir: str,
    out: str | os.PathLike,
    log: Log = print,
) -> dict[str, Any]:
    """Compute (or find cached) the reference features of every metric's layer, and write to ``out`` a JSON
    saying what was cached (reference id and fingerprint, extractor and its weights' sha256, layers, count)."""
    ref = source.open()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    layers = sorted({default_layer(extractor.name, m) for m in ALL_METRICS})
    feats, where = reference_features(ref, extractor, layers, cache_dir=cache_dir)
    info = {
        "reference_id": ref.id,
        "reference_fingerprint": ref.fingerprint,
        "extractor": extractor.name,
        "extractor_weights_sha256": extractor.sha256(),
        "layers": layers,
        "num_reference": int(len(next(iter(feats.values())))),
        "source": where,
        "cache_dir": os.path.abspath(cache_dir),
        "fid_statistics": source.fid_statistics(),
    }
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    log(f"reference {ref.id}: {info['num_reference']} images, features {where}")
    return info


def evaluate_shards(
    shards: Sequence[str],
    source: ReferenceSource,
    extractor: FeatureExtractorSpec,
    *,
    metrics: Sequence[str] = ALL_METRICS,
    cache_dir: str,
    out: str | os.PathLike,
    context: Optional[Mapping[str, Any]] = None,
    expect: Optional[Mapping[str, Any]] = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    log: Log = print,
) -> EvaluationResult:
    """Evaluate the sample ``shards`` against ``source`` and save the result to ``out``.

    The shards must agree with one another and hold ``expect``'s values (a mixed or incomplete set is refused
    with ``ValueError`` naming the shard, key and both values) before the reference is opened or any image read.
    """
    if not shards:
        raise ValueError("samples mode needs --shards (the sample shards to evaluate)")
    if not isinstance(expect or {}, Mapping):
        raise ValueError(f"--expect: expected a JSON object of metadata keys, got {str(expect)[:200]!r}")
    opened = open_sample_shards(shards, dict(expect or {}), "the sampler's settings in the config (--expect)")
    ref = source.open()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    full_context = {
        **(context or {}),
        "samples": opened.meta,
        "num_shards": len(opened.paths),
        "seed_range": [int(opened.indices.min()), int(opened.indices.max())],
        "sampling_seconds": opened.sampling_seconds,
    }
    # the images are read a block at a time while torch-fidelity extracts their features
    res = evaluate(opened.images(block_bytes), ref, extractor, metrics, cache_dir=cache_dir, context=full_context)
    res.save(out)
    log(
        f"{len(opened)} samples: FID {res.fid} IS {res.is_mean} KID {res.kid_mean} "
        f"P {res.precision} R {res.recall} ({res.seconds:.1f}s) -> {out}"
    )
    return res
