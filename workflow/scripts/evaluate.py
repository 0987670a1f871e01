#!/usr/bin/env python
"""Evaluate sample shards with torch-fidelity (FID, IS, KID, precision/recall), or cache the reference side.

    python workflow/scripts/evaluate.py reference --images results/shards/fashion_mnist_28 --split test \
        --extractor classifier --weights results/extractor/fashion_mnist_28/classifier.pt \
        --cache-dir results/reference --out results/reference/fashion_mnist_28-test-classifier.json
    python workflow/scripts/evaluate.py samples --shards a.npz b.npz ... (same reference arguments) \
        --metrics fid isc kid prc --context '{"sampler": "ucgm"}' --out results/eval/ucgm/steps8.json

Each mode maps its flags onto one library call of :mod:`ucgm_core.metrics.evaluation`: ``reference`` onto
``cache_reference``, ``samples`` onto ``evaluate_shards`` (its docstring says what the result JSON carries, how
the shards are checked against one another and against ``--expect`` before any work, and how their images are
streamed in blocks of ``--block-mb``).
"""

from __future__ import annotations

import argparse
import sys

from ucgm_core.stage import load_spec, log, set_threads
from ucgm_core.metrics.evaluation import EXTRACTORS, ReferenceSource, cache_reference, evaluate_shards
from ucgm_core.metrics.specs import FeatureExtractorSpec


def parse_args(argv=None) -> argparse.Namespace:
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
    p.add_argument(
        "--expect",
        default="{}",
        help="JSON: metadata every shard must hold (method, steps, options, seed, num_samples, ...)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--block-mb",
        type=int,
        default=64,
        help="samples mode: read the shards' images in blocks of at most this many MiB",
    )
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads)
    extractor = FeatureExtractorSpec(EXTRACTORS[a.extractor], a.weights)
    source = ReferenceSource(images=a.images, reference_batch=a.reference_batch, split=a.split)
    if a.mode == "reference":
        cache_reference(source, extractor, cache_dir=a.cache_dir, out=a.out, log=log)
    else:
        evaluate_shards(
            a.shards,
            source,
            extractor,
            metrics=a.metrics,
            cache_dir=a.cache_dir,
            out=a.out,
            context=load_spec(a.context),
            expect=load_spec(a.expect),
            block_bytes=a.block_mb << 20,
            log=log,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
