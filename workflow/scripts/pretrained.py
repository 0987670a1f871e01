#!/usr/bin/env python
"""Import a released network (REPA-E, REPA, LightningDiT, DDT, EDM2, EDM, or a UCGM ``{model, ema}`` file) as a
checkpoint of this project, ready for sampling and tuning (rule ``pretrained``, ``shell:``). Standalone::

    python workflow/scripts/pretrained.py --weights 0000000.pt --architecture SiT-XL/1-REPAE \
        --dataset imagenet --resolution 256 --autoencoder e2evavae_f16d32 \
        --stats results/latents/e2evavae_f16d32/imagenet_256/stats.pt --out results/models/repae/checkpoint.pt

The command line only: the stage is :func:`ucgm_core.models.pretrained.import_pretrained` (latent shape,
normalisation, checksum, conversion, the checkpoint written atomically).
"""

from __future__ import annotations

import argparse
import json
import sys

from ucgm_core.stage import log
from ucgm_core.models.pretrained import import_pretrained


def build_parser() -> argparse.ArgumentParser:
    """The flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="released checkpoint file")
    p.add_argument("--architecture", required=True, help="registry name, e.g. SiT-XL/1-REPAE, EDM2-S")
    p.add_argument("--overrides", default="{}", help="JSON constructor kwargs replacing the registry's")
    p.add_argument("--dataset", required=True)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--num-classes", type=int, default=None, help="default: the dataset's")
    p.add_argument("--autoencoder", default="identity")
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder")
    p.add_argument("--stats", default=None, help="latent statistics file (mean/std)")
    p.add_argument("--latent-stats", default=None, help='JSON {"mean": [...], "std": [...]} (fixed statistics)')
    p.add_argument("--no-normalize", action="store_true", help="no per-channel normalisation (multiplier only)")
    p.add_argument("--multiplier", type=float, default=1.0)
    p.add_argument("--sha256", default=None, help="expected sha256 of --weights")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="read a released .pkl (EDM/EDM2) with the restricted unpickler",
    )
    p.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Import the weights; a bad input ends the run with one line naming it (SystemExit)."""
    a = build_parser().parse_args(argv)
    try:
        done = import_pretrained(
            a.weights,
            a.out,
            architecture=a.architecture,
            overrides=json.loads(a.overrides),
            dataset=a.dataset,
            resolution=a.resolution,
            num_classes=a.num_classes,
            autoencoder=a.autoencoder,
            ae_kwargs=json.loads(a.ae_kwargs),
            normalize=not a.no_normalize,
            latent_stats=json.loads(a.latent_stats) if a.latent_stats else None,
            stats=a.stats,
            multiplier=a.multiplier,
            sha256=a.sha256,
            allow_unsafe_pickle=a.allow_unsafe_pickle,
        )
    except ValueError as e:  # a checksum, shape or layout mismatch (CheckpointError is a ValueError)
        raise SystemExit(str(e)) from None
    log(
        f"{a.weights} -> {a.out}: {a.architecture}, {done['parameters']:,} parameters, latents {done['latent_shape']}, "
        f"transport {done['transport']} ({done['seconds']:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
