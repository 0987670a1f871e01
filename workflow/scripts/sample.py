#!/usr/bin/env python
"""Generate one shard of samples from a checkpoint with one sampler setting (per-image seeds).

The flags map onto one library call, :func:`ucgm_core.sampling.shard_writer.write_shard` (its docstring says
what a shard holds, how image ``i`` gets its noise and label, and how the file is written). Standalone::

    python workflow/scripts/sample.py --checkpoint results/models/multistep/checkpoint.pt \
        --spec '{"method": "ucgm", "options": {"extrapolation": 0.5}}' --steps 8 \
        --shard 0 --samples-per-shard 1000 --num-samples 2000 --seed 0 --out shard-0000.npz

Non-finite samples stop the job with an error naming the output, shard, sampler and steps; nothing is
written. SIGTERM/SIGUSR1 stop the job with status 75 (as training; a shard is redone whole).
``--skip-existing`` keeps an existing output that reads back completely and whose metadata match the
request (checkpoint sha256, sampler, knobs, seed and index range); anything else is recomputed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import torch

from ucgm_core.stage import load_spec, log, set_threads
from ucgm_core.distributed import PREEMPTED_EXIT_CODE
from ucgm_core.sampling.shard_writer import SamplerSpec, ShardRequest, write_shard


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--spec", required=True, help="sampler spec (JSON text or file): method, options, guidance, weights")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--samples-per-shard", type=int, required=True)
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder (weights file, ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep an existing complete --out made with the same checkpoint and settings",
    )
    return p.parse_args(argv)


def _stop_on_signal(signum, frame) -> None:
    raise SystemExit(PREEMPTED_EXIT_CODE)


def main(argv=None) -> int:
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _stop_on_signal)
    set_threads(a.threads)
    request = ShardRequest(
        checkpoint=a.checkpoint,
        spec=SamplerSpec.from_dict(load_spec(a.spec)),
        steps=a.steps,
        samples_per_shard=a.samples_per_shard,
        num_samples=a.num_samples,
        shard=a.shard,
        seed=a.seed,
    )
    write_shard(
        request,
        a.out,
        ae_kwargs=json.loads(a.ae_kwargs),
        batch_size=a.batch_size,
        device=a.device,
        skip_existing=a.skip_existing,
        log=log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
