#!/usr/bin/env python
"""Prepare the feature extractor of the evaluation: train the dataset classifier, or check Inception weights.

    python workflow/scripts/extractor.py classifier --images results/shards/fashion_mnist_28 --steps 1500 --out X.pt
    python workflow/scripts/extractor.py inception --weights PATH --out X.pth   # check local weights, copy (sha256 verified)
    python workflow/scripts/extractor.py inception --out X.pth                  # fetch torch-fidelity's (sha256 checked)

The classifier is trained on the train split of the image shards and its test accuracy (on the test split)
is written beside it (``<out>.json``); it is registered with torch-fidelity as "ucgm-classifier".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, set_threads  # noqa: E402

from ucgm_core.data.shards import load_images  # noqa: E402
from ucgm_core.metrics import inception  # noqa: E402
from ucgm_core.metrics.classifier import train_classifier  # noqa: E402


def nchw(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def main(argv=None) -> int:
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
    a = p.parse_args(argv)
    if a.kind == "classifier":
        set_threads(a.threads)
        x, y = load_images(a.images, "train")
        xt, yt = load_images(a.images, "test")
        log(f"training the classifier extractor on {len(y)} images ({a.steps} steps)")
        train_classifier(nchw(x), torch.from_numpy(y), a.out, seed=a.seed, steps=a.steps,
                         test_images=nchw(xt), test_labels=torch.from_numpy(yt),
                         extra_info={"images": os.path.abspath(a.images)}, verbose=True)
        with open(a.out + ".json") as f:
            log(f"classifier written to {a.out}: {json.load(f)}")
    else:
        if a.weights:
            if not os.path.isfile(a.weights):
                raise SystemExit(f"extractor.weights: {a.weights} does not exist")
            try:  # checked (sha256, weights_only), copied atomically, the copy's sha256 verified
                info = inception.copy_inception_weights(a.weights, a.out)
            except ValueError as e:
                raise SystemExit(f"extractor.weights: {e}") from None
            log(f"{a.weights}: {info['provenance']}")
        else:
            inception.torch_fidelity_weights(a.out)
        log(f"inception weights at {a.out}; sha256 {inception.sha256_file(a.out)}; "
            f"logits (IS) available: {inception.weights_have_logits(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
