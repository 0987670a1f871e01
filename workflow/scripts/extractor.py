#!/usr/bin/env python
"""Prepare the feature extractor of the evaluation: train the dataset classifier, or check Inception weights.

    python workflow/scripts/extractor.py classifier --images results/shards/fashion_mnist_28 --steps 1500 --out X.pt
    python workflow/scripts/extractor.py inception --weights PATH --out X.pth   # check local weights, copy (sha256 verified)
    python workflow/scripts/extractor.py inception --out X.pth                  # fetch torch-fidelity's (sha256 checked)

The classifier is trained on the train split of the image shards and its test accuracy (on the test split)
is written beside it (``<out>.json``); it is registered with torch-fidelity as "ucgm-classifier". Each kind
maps its flags onto one call of :mod:`ucgm_core.metrics.extractor_prep`.
"""

from __future__ import annotations

import argparse
import sys

from ucgm_core.stage import log, set_threads
from ucgm_core.metrics.extractor_prep import prepare_inception_weights, train_shard_classifier


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    c = sub.add_parser("classifier")
    c.add_argument("--images", required=True, help="image shard folder (train/test splits)")
    c.add_argument("--steps", type=int, default=1500)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=None)
    i = sub.add_parser("inception")
    i.add_argument("--weights", default=None, help="local weights file (else download torch-fidelity's, checked)")
    i.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.kind == "classifier":
        set_threads(a.threads)
        train_shard_classifier(a.images, a.out, steps=a.steps, seed=a.seed, log=log)
    else:
        prepare_inception_weights(a.out, a.weights, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
