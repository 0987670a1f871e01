#!/usr/bin/env python
"""Import a released network (REPA-E, REPA, LightningDiT, DDT, EDM2, EDM, or a UCGM ``{model, ema}`` file) as a
checkpoint of this project, ready for sampling and tuning. Standalone::

    python workflow/scripts/pretrained.py --weights 0000000.pt --architecture SiT-XL/1-REPAE \
        --dataset imagenet --resolution 256 --autoencoder e2evavae_f16d32 \
        --stats results/latents/e2evavae_f16d32/imagenet_256/stats.pt --out results/models/repae/checkpoint.pt

The latent shape is the autoencoder's (resolution / stride, its latent channels); the latent normalisation is
the experiment's: per-channel statistics (``--stats`` file or fixed ``--latent-stats``) times ``--multiplier``,
or the multiplier alone (``--no-normalize``). ``--sha256`` verifies the weights file first. The checkpoint
holds the converted weights as both ``model`` and ``ema`` (step 0) and is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log  # noqa: E402

from ucgm_core.autoencoders import get_autoencoder  # noqa: E402
from ucgm_core.checkpoint import save_checkpoint, sha256_file  # noqa: E402
from ucgm_core.data.datasets import get_dataset  # noqa: E402
from ucgm_core.data.loader import LatentNormalizer  # noqa: E402
from ucgm_core.models.convert import CheckpointError  # noqa: E402
from ucgm_core.models.pretrained import convert_pretrained, model_kwargs_for  # noqa: E402
from ucgm_core.models.registry import MODELS  # noqa: E402


def parse_args(argv=None):
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
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="read a released .pkl (EDM/EDM2) with the restricted unpickler")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def latent_geometry(autoencoder: str, ae_kwargs: dict, resolution: int, image_channels: int) -> tuple:
    """(channels, size) of the latents of ``resolution`` images under ``autoencoder``."""
    if autoencoder == "identity":
        return image_channels, resolution
    ae = get_autoencoder(autoencoder, **ae_kwargs)
    if resolution % ae.stride:
        raise SystemExit(f"--resolution {resolution} is not a multiple of {autoencoder}'s stride {ae.stride}")
    return ae.latent_channels, resolution // ae.stride


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.sha256:
        got = sha256_file(a.weights)
        if got != a.sha256.lower():
            raise SystemExit(f"{a.weights}: sha256 {got} differs from the configured {a.sha256}")
    if a.architecture not in MODELS:
        raise SystemExit(f"--architecture {a.architecture!r}: unknown; known: {', '.join(sorted(MODELS))}")
    ds = get_dataset(a.dataset)
    num_classes = a.num_classes or ds.num_classes
    channels, size = latent_geometry(a.autoencoder, json.loads(a.ae_kwargs), a.resolution, ds.channels)
    overrides = json.loads(a.overrides)
    num_classes = int(overrides.pop("num_classes", num_classes))  # e.g. 1: an unconditional network
    kwargs = model_kwargs_for(a.architecture, input_size=size, in_channels=channels, num_classes=num_classes,
                              **overrides)
    if a.no_normalize:
        normalizer = LatentNormalizer(None, None, a.multiplier)
    elif a.latent_stats:
        st = json.loads(a.latent_stats)
        mean, std = (torch.tensor(st[k], dtype=torch.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
        if mean.shape[1] != channels:
            raise SystemExit(f"--latent-stats has {mean.shape[1]} channels, the {a.autoencoder} latents {channels}")
        normalizer = LatentNormalizer(mean, std, a.multiplier)
    else:
        normalizer = LatentNormalizer.from_stats(a.stats, a.multiplier, True)
    t0 = time.time()
    try:
        net = convert_pretrained(a.architecture, a.weights, kwargs, allow_unsafe_pickle=a.allow_unsafe_pickle)
    except CheckpointError as e:
        raise SystemExit(f"cannot import {a.weights} as {a.architecture}: {e}") from None
    model_kwargs = {"input_size": size, "in_channels": channels, "num_classes": num_classes, **overrides}
    save_checkpoint(a.out, architecture=a.architecture, model_kwargs=model_kwargs,
                    transport=MODELS[a.architecture].transport, num_classes=num_classes,
                    latent_shape=[channels, size, size], normalizer=normalizer, autoencoder=a.autoencoder, step=0,
                    model=net, ema=net, info={"pretrained": str(a.weights), "weights_sha256": sha256_file(a.weights)})
    params = sum(p.numel() for p in net.parameters())
    log(f"{a.weights} -> {a.out}: {a.architecture}, {params:,} parameters, latents {[channels, size, size]}, "
        f"transport {MODELS[a.architecture].transport} ({time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
