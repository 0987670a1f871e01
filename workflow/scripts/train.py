#!/usr/bin/env python
"""Train (UCGM-T multi-step) or tune (UCGM-T few-step from a checkpoint) one model.

Maps its flags onto one call, :func:`ucgm_core.training.run.train` (which documents the state folder,
outputs, snapshots and post-hoc EMA); the ``train`` and ``tune`` rules call it, and it runs standalone::

    python workflow/scripts/train.py --latents results/latents/identity/fashion_mnist_28 \
        --spec '{"architecture": "UNet-S", "objective": {...}, "train": {"steps": 100, "batch_size": 64}}' \
        --out-dir results/models/mine --state-dir results/state/mine [--init CKPT] [--teacher CKPT]

``--spec`` is JSON text or a YAML/JSON file holding one ``models.<name>`` entry of the config (plus
optional ``data`` keys ``dataset``, ``autoencoder``, ``normalize_latents``, ``latent_multiplier``).

Several processes (one per GPU; see ``ucgm_core.distributed``)::

    torchrun --standalone --nproc_per_node 8 workflow/scripts/train.py ...same arguments...
    srun --ntasks 16 --ntasks-per-node 8 --gpus-per-task 1 python workflow/scripts/train.py ...

``train.batch_size`` is the *global* batch, split over the processes in chunks of ``--micro-batch``;
step k's draws come from ``(seed, k)``, so any number of processes gives the same updates. On SIGTERM
or SIGUSR1 the state is written and the script exits with status 75 (rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ucgm_core.stage import load_spec, log, set_threads
from ucgm_core.training.run import SpecError, TrainJob, fingerprint, train

__all__ = ["fingerprint", "main", "parse_args"]  # fingerprint: tests name the state folder through it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", required=True, help="latent shard folder (train.json + shards + stats.pt)")
    p.add_argument("--stats", default=None, help="latent statistics (default: <latents>/stats.pt)")
    p.add_argument("--spec", required=True, help="model spec: JSON text or a YAML/JSON file")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--state-dir", required=True, help="resumable state folder (kept outside workflow outputs)")
    p.add_argument("--init", default=None, help="checkpoint whose EMA weights start the online model and its EMA")
    p.add_argument("--teacher", default=None, help="checkpoint whose EMA weights the (frozen) teacher keeps")
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder (weights file, ...)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--device",
        default=None,
        help="cuda or cpu (default: cuda if available; with several processes cuda:<local rank>)",
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="per-process micro-batch (gradient accumulation; default: the whole per-process batch)",
    )
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of this run (testing)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads)
    job = TrainJob(
        latents=Path(a.latents),
        spec=load_spec(a.spec),
        out_dir=Path(a.out_dir),
        state_dir=Path(a.state_dir),
        stats=Path(a.stats) if a.stats else None,
        init=a.init,
        teacher=a.teacher,
        ae_kwargs=json.loads(a.ae_kwargs),
        device=a.device,
        micro_batch=a.micro_batch,
        stop_after=a.stop_after,
        log=log,
    )
    try:
        return train(job)
    except SpecError as e:
        raise SystemExit(f"train.py: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
