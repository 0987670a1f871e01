#!/usr/bin/env python
"""Choose a model's EMA length by FID on a small sample (post-hoc EMA, config key models.<name>.ema_select).

Maps its flags onto one call, :func:`ucgm_core.training.ema_select.select_ema_length` (its module docstring
says what is sampled and what is written). Standalone::

    python workflow/scripts/ema_select.py --checkpoint results/models/multistep/checkpoint.pt \
        --sigma-rels 0.05 0.1 0.15 --spec '{"method": "ucgm"}' --steps 8 --num-samples 500 --seed 1 \
        --images results/shards/fashion_mnist_28 --split test --extractor classifier \
        --weights results/extractor/fashion_mnist_28/classifier.pt --cache-dir results/reference/cache \
        --out-checkpoint ema.pt --out-table ema.csv --out-figure ema.png --out-summary ema.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ucgm_core.metrics.evaluation import EXTRACTORS, ReferenceSource
from ucgm_core.metrics.specs import FeatureExtractorSpec
from ucgm_core.sampling.shard_writer import SamplerSpec
from ucgm_core.stage import load_spec, log, set_threads
from ucgm_core.training.ema_select import select_ema_length


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the model's checkpoint (its info.state names the run)")
    p.add_argument("--sigma-rels", type=float, nargs="+", required=True, help="candidate EMA lengths")
    p.add_argument("--spec", required=True, help="sampler spec (JSON text or file): method, options, ...")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--no-baseline", action="store_true", help="do not score the fixed-decay EMA")
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder")
    p.add_argument("--images", default=None, help="image shard folder of the reference set")
    p.add_argument("--reference-batch", default=None, help="ADM reference batch .npz instead")
    p.add_argument("--split", default="test")
    p.add_argument("--extractor", choices=sorted(EXTRACTORS), default="classifier")
    p.add_argument("--weights", required=True, help="extractor weights file")
    p.add_argument("--cache-dir", required=True, help="reference feature cache")
    p.add_argument("--title", default="")
    for out in ("checkpoint", "table", "figure", "summary"):
        p.add_argument(f"--out-{out}", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads)
    try:
        select_ema_length(
            a.checkpoint,
            a.sigma_rels,
            SamplerSpec.from_dict(load_spec(a.spec)),
            steps=a.steps,
            num_samples=a.num_samples,
            seed=a.seed,
            source=ReferenceSource(images=a.images, reference_batch=a.reference_batch, split=a.split),
            extractor=FeatureExtractorSpec(EXTRACTORS[a.extractor], a.weights),
            cache_dir=a.cache_dir,
            out_checkpoint=a.out_checkpoint,
            out_table=a.out_table,
            out_figure=a.out_figure,
            out_summary=a.out_summary,
            baseline=not a.no_baseline,
            ae_kwargs=json.loads(a.ae_kwargs),
            batch_size=a.batch_size,
            device=a.device,
            title=a.title,
            log=log,
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"ema_select.py: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
