#!/usr/bin/env python
"""Evaluate sample shards with torch-fidelity (FID, IS, KID, precision/recall), or cache the reference side.

    python workflow/scripts/evaluate.py reference --images results/shards/fashion_mnist_28 --split test \
        --extractor classifier --weights results/extractor/fashion_mnist_28/classifier.pt \
        --cache-dir results/reference --out results/reference/fashion_mnist_28-test-classifier.json
    python workflow/scripts/evaluate.py samples --shards a.npz b.npz ... (same reference arguments) \
        --metrics fid isc kid prc --context '{"sampler": "ucgm"}' --out results/eval/ucgm/steps8.json

The reference features are computed once per (reference images, extractor weights) and cached in
``--cache-dir``. The result JSON carries the evaluation contract: sample count, seeds, extractor and
its weights' sha256, reference set, and the samples' checkpoint, sampler and knobs (from the shards).
The shards must agree on checkpoint, sampler and knobs (a mixed set is refused, naming both shards and
the keys), and with ``--expect`` (JSON: metadata key -> value, the sampler's settings from the config)
every shard must hold those values and the shards must hold exactly images 0 .. num_samples - 1 (a
missing shard, or one made by another sampler setting, is refused naming the shard, key and both values),
all before any feature is computed. Their images are streamed in blocks (``--block-mb``), so memory does
not grow with the number of samples beyond their features.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_spec, log, set_threads  # noqa: E402

from ucgm_core.metrics.imageutil import sha256_file  # noqa: E402
from ucgm_core.metrics.sample_shards import NpzArray, SampleShards, open_sample_shards  # noqa: E402
from ucgm_core.metrics.fidelity import (ChunkedImages, FeatureExtractorSpec, ReferenceSet, evaluate,  # noqa: E402
                                        reference_features, _default_layer)

EXTRACTORS = {"classifier": "ucgm-classifier", "inception": "inception-v3-compat"}


def reference_batch_set(npz: str) -> ReferenceSet:
    """An ADM reference batch (guided-diffusion's ``VIRTUAL_imagenet256_labeled.npz``, ...): FID against its
    ``mu``/``sigma``, KID and precision/recall against the features of its ``arr_0`` images (uint8 NHWC)."""
    with np.load(npz) as z:
        missing = [k for k in ("arr_0", "mu", "sigma") if k not in z.files]
    if missing:
        raise SystemExit(f"{npz}: not an ADM reference batch (lacks {missing}; has {sorted(z.files)})")

    def images():  # read a block at a time (10,000 images at 512 px are 7.9 GB)
        arr = NpzArray(npz, "arr_0")
        rows = max(1, (64 << 20) // max(1, arr.row_bytes))
        return ChunkedImages([(min(lo + rows, len(arr)) - lo, functools.partial(_nhwc_block, arr, lo, lo + rows))
                              for lo in range(0, len(arr), rows)])

    sha = sha256_file(npz)
    return ReferenceSet(id=f"{Path(npz).stem}-{sha[:16]}", images=images, stats_path=npz,
                        fingerprint={"reference_batch": Path(npz).name, "sha256": sha})


def _nhwc_block(arr: NpzArray, lo: int, hi: int) -> torch.Tensor:
    return torch.from_numpy(arr.read(lo, hi)).permute(0, 3, 1, 2)


def reference_set(images_dir: str, split: str) -> ReferenceSet:
    """A split of an image shard folder, id ``<folder>-<split>``, with its fingerprint (manifest and shard
    sha256s): the reference cache recomputes the features when the shards are rebuilt from other data."""
    return ReferenceSet.from_image_shards(images_dir, split)


def open_checked_shards(a: argparse.Namespace) -> SampleShards:
    """The ``--shards`` of samples mode, checked against one another and against ``--expect`` (metadata and
    indices only: a mixed or incomplete set is refused before any image is read)."""
    if not a.shards:
        raise SystemExit("samples mode needs --shards")
    expect = load_spec(a.expect)
    if not isinstance(expect, dict):
        raise SystemExit(f"--expect: expected a JSON object of metadata keys, got {a.expect[:200]!r}")
    return open_sample_shards(a.shards, expect, "the sampler's settings in the config (--expect)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["reference", "samples"])
    p.add_argument("--images", default=None, help="image shard folder of the reference set")
    p.add_argument("--reference-batch", default=None, help="ADM reference batch .npz (arr_0, mu, sigma) instead")
    p.add_argument("--split", default="test")
    p.add_argument("--extractor", choices=sorted(EXTRACTORS), default="classifier")
    p.add_argument("--weights", required=True, help="extractor weights file")
    p.add_argument("--cache-dir", required=True, help="reference feature cache")
    p.add_argument("--shards", nargs="*", default=[])
    p.add_argument("--metrics", nargs="+", default=["fid", "isc", "kid", "prc"])
    p.add_argument("--context", default="{}", help="JSON: extra contract fields (sampler name, model, ...)")
    p.add_argument("--expect", default="{}",
                   help="JSON: metadata every shard must hold (method, steps, options, seed, num_samples, ...)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--block-mb", type=int, default=64,
                   help="samples mode: read the shards' images in blocks of at most this many MiB")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    set_threads(a.threads)
    spec = FeatureExtractorSpec(EXTRACTORS[a.extractor], a.weights)
    if (a.images is None) == (a.reference_batch is None):
        raise SystemExit("give one of --images (a split of an image shard folder) or --reference-batch")
    shards = open_checked_shards(a) if a.mode == "samples" else None  # before any other work
    ref = reference_batch_set(a.reference_batch) if a.reference_batch else reference_set(a.images, a.split)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.mode == "reference":
        layers = sorted({_default_layer(spec.name, m) for m in ("fid", "isc", "kid", "prc")})
        feats, source = reference_features(ref, spec, layers, cache_dir=a.cache_dir)
        info = {"reference_id": ref.id, "reference_fingerprint": ref.fingerprint,
                "extractor": spec.name, "extractor_weights_sha256": spec.sha256(),
                "layers": layers, "num_reference": int(len(next(iter(feats.values())))), "source": source,
                "cache_dir": os.path.abspath(a.cache_dir),
                "fid_statistics": f"{a.reference_batch} (mu, sigma)" if a.reference_batch else "reference features"}
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, out)
        log(f"reference {ref.id}: {info['num_reference']} images, features {source}")
        return 0

    context = {**load_spec(a.context), "samples": shards.meta, "num_shards": len(shards.paths),
               "seed_range": [int(shards.indices.min()), int(shards.indices.max())],
               "sampling_seconds": shards.sampling_seconds}
    # the images are read a block at a time while torch-fidelity extracts their features
    res = evaluate(shards.images(a.block_mb << 20), ref, spec, a.metrics, cache_dir=a.cache_dir, context=context)
    res.save(out)
    log(f"{len(shards)} samples: FID {res.fid} IS {res.is_mean} KID {res.kid_mean} "
        f"P {res.precision} R {res.recall} ({res.seconds:.1f}s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
