#!/usr/bin/env python
"""Generate one shard of samples from a checkpoint with one sampler setting (per-image seeds).

Shard ``k`` holds images ``k * samples_per_shard`` ... ``min((k + 1) * samples_per_shard, num_samples) - 1``;
image ``i`` uses noise seed ``per_image_seed(seed, i)`` and label ``i mod num_classes``, so the samples do
not depend on the shard size, the batch size or the number of jobs. Standalone::

    python workflow/scripts/sample.py --checkpoint results/models/multistep/checkpoint.pt \
        --spec '{"method": "ucgm", "options": {"extrapolation": 0.5}}' --steps 8 \
        --shard 0 --samples-per-shard 1000 --num-samples 2000 --seed 0 --out shard-0000.npz

Output (``.npz``, written atomically): ``images`` uint8 ``[n, C, H, W]``, ``labels``, ``indices``, ``seeds``
(int64 ``[n]``) and ``meta`` (a JSON string: checkpoint and its sha256, sampler and all its knobs, NFE).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_spec, log, set_threads  # noqa: E402

from ucgm_core.autoencoders import get_autoencoder  # noqa: E402
from ucgm_core.checkpoint import build_network, checkpoint_normalizer, load_checkpoint, sha256_file  # noqa: E402
from ucgm_core.sampling.generate import generate_images  # noqa: E402


def shard_indices(shard: int, samples_per_shard: int, num_samples: int) -> range:
    lo = shard * samples_per_shard
    if shard < 0 or lo >= num_samples:
        raise ValueError(f"shard {shard} is outside {num_samples} samples of {samples_per_shard} per shard")
    return range(lo, min(lo + samples_per_shard, num_samples))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--spec", required=True, help="sampler spec (JSON text or file): method, options, guidance, weights")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--samples-per-shard", type=int, required=True)
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads)
    spec = load_spec(a.spec)
    out = Path(a.out)
    ckpt = load_checkpoint(a.checkpoint)
    net = build_network(ckpt, spec.get("weights", "ema"))
    ae_name = ckpt.get("autoencoder", "identity")
    ae = get_autoencoder(ae_name, channels=ckpt["latent_shape"][0]) if ae_name == "identity" else get_autoencoder(ae_name)
    guidance = spec.get("guidance") or {}
    indices = shard_indices(a.shard, a.samples_per_shard, a.num_samples)
    t0 = time.time()
    res = generate_images(
        net, indices, seed=a.seed, method=spec["method"], steps=a.steps, transport=ckpt["transport"],
        latent_shape=ckpt["latent_shape"], num_classes=ckpt["num_classes"], normalizer=checkpoint_normalizer(ckpt),
        decode=ae.decode, options=spec.get("options") or {}, guidance_scale=float(guidance.get("scale", 0.0)),
        guidance_interval=guidance.get("interval"), batch_size=a.batch_size, device=a.device,
    )
    seconds = time.time() - t0
    meta = {
        "checkpoint": os.path.abspath(a.checkpoint), "checkpoint_sha256": sha256_file(a.checkpoint),
        "checkpoint_step": ckpt.get("step"), "method": spec["method"], "steps": a.steps, "nfe": res.nfe,
        "options": spec.get("options") or {}, "guidance": guidance, "weights": spec.get("weights", "ema"),
        "seed": a.seed, "shard": a.shard, "samples_per_shard": a.samples_per_shard, "num_samples": a.num_samples,
        "first_index": indices.start, "count": len(indices), "seconds": round(seconds, 3),
    }
    buf = io.BytesIO()
    np.savez(buf, images=res.images, labels=res.labels, indices=res.indices, seeds=res.seeds,
             meta=np.asarray(json.dumps(meta)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    log(f"{len(indices)} images ({spec['method']}, {a.steps} steps, NFE {res.nfe}) in {seconds:.1f}s "
        f"({len(indices) / max(seconds, 1e-9):.0f} img/s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
