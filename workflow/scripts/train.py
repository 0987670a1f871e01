#!/usr/bin/env python
"""Train (UCGM-T multi-step) or tune (UCGM-T few-step from a checkpoint) one model.

Thin over ``ucgm_core``; the ``train`` and ``tune`` rules call it, and it runs standalone::

    python workflow/scripts/train.py --latents results/latents/identity/fashion_mnist_28 \
        --spec '{"architecture": "UNet-S", "objective": {...}, "train": {"steps": 100, "batch_size": 64}}' \
        --out-dir results/models/mine --state-dir results/state/mine [--init CKPT] [--teacher CKPT]

``--spec`` is JSON text or a YAML/JSON file holding one ``models.<name>`` entry of the config
(plus optional ``data`` keys ``dataset``, ``autoencoder``, ``normalize_latents``, ``latent_multiplier``).

The resumable state lives in ``<state-dir>/<fingerprint>/state.pt``, the fingerprint hashing the spec
and the input files, so a killed job rerun with the same inputs continues where it stopped and a changed
config starts afresh. Outputs: ``checkpoint.pt``, ``loss.csv``, ``loss.png``, ``grid.png`` in ``--out-dir``
and periodic grids in ``<out-dir>/grids/``. With ``train.posthoc_ema`` the run folder also keeps the snapshots of
EDM2's power-function EMAs (``<state-dir>/<fingerprint>/posthoc_ema/``); ``python workflow/scripts/posthoc_ema.py
<out-dir>/checkpoint.pt --sigma-rel S --out FILE`` then writes a checkpoint of any EMA length.

Several processes (one per GPU; see ``ucgm_core.distributed``)::

    torchrun --standalone --nproc_per_node 8 workflow/scripts/train.py ...same arguments...
    srun --ntasks 16 --ntasks-per-node 8 --gpus-per-task 1 python workflow/scripts/train.py ...

``train.batch_size`` is the *global* batch; each process takes ``batch_size / processes`` of it, in
chunks of ``--micro-batch`` (gradient accumulation). Step ``k``'s data order, t, z and label-drop
mask are drawn from ``(seed, k)`` over the global batch (``TrainSettings.seeding = "step"``), so 1
process, N processes and any micro-batch give the same updates up to float summation order, and a
run may resume with another number of processes. Without torchrun/srun variables it is one process.

Preemption: on SIGTERM or SIGUSR1 (e.g. ``sbatch --signal=USR1@120``) the current step finishes, the
state is written and the script exits with status 75 (``ucgm_core.distributed.PREEMPTED_EXIT_CODE``);
rerun (Snakemake ``retries``), it continues from that state. Under torchrun send the signal to the
torchrun process (it forwards SIGTERM to the workers); torchrun itself then exits non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_spec, log, set_threads  # noqa: E402

from ucgm_core.io import atomic_write_bytes  # noqa: E402
from ucgm_core import distributed as ud  # noqa: E402
from ucgm_core.autoencoders import get_autoencoder  # noqa: E402
from ucgm_core.checkpoint import load_checkpoint, save_checkpoint, sha256_file  # noqa: E402
from ucgm_core.data.datasets import get_dataset  # noqa: E402
from ucgm_core.data.loader import LatentLoader, LatentNormalizer, load_latent_arrays  # noqa: E402
from ucgm_core.data.shards import read_manifest  # noqa: E402
from ucgm_core.figures import class_rows, plot_loss_curve, save_grid  # noqa: E402
from ucgm_core.models import build_model  # noqa: E402
from ucgm_core.sampling.generate import generate_images  # noqa: E402
from ucgm_core.training.loop import Preempted, Trainer, TrainSettings  # noqa: E402
from ucgm_core.training.objective import UCGMConfig, UCGMObjective  # noqa: E402
from ucgm_core.training.posthoc_ema import SNAPSHOT_DIR, PosthocEMA  # noqa: E402


def parse_args(argv=None):
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
    p.add_argument("--device", default=None,
                   help="cuda or cpu (default: cuda if available; with several processes cuda:<local rank>)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="per-process micro-batch (gradient accumulation; default: the whole per-process batch)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of this run (testing)")
    return p.parse_args(argv)


SEEDING = "step"  # per-step draws: the same updates for any number of processes (part of the fingerprint)
# what the trainer does beyond the spec (part of the fingerprint, so a state written before a change of
# semantics is not resumed under the new ones): 2 = the original's AdamW, EMA from the starting weights,
# teacher kept whenever lambda != 0 or zeta != 0
SEMANTICS = 2


# how the network runs, not what it computes: changing it resumes the same state
NOT_FINGERPRINTED = ("compile", "max_nonfinite_steps")


def fingerprint(spec: dict, files) -> str:
    if any(k in spec.get("train", {}) for k in NOT_FINGERPRINTED):
        spec = {**spec, "train": {k: v for k, v in spec["train"].items() if k not in NOT_FINGERPRINTED}}
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    h.update(f"seeding={SEEDING}".encode())
    h.update(f"semantics={SEMANTICS}".encode())
    for f in files:
        if f is not None:
            h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def posthoc_trackers(cfg, model, state_dir: Path, *, spec: dict, model_kwargs: dict, transport: str,
                     num_classes: int, latent_shape, normalizer: LatentNormalizer, autoencoder: str,
                     info: dict):
    """The ``train.posthoc_ema`` trackers (EDM2's post-hoc EMA) or None when the key is absent or null.

    Snapshots go into the run folder ``<state-dir>/<fingerprint>/posthoc_ema/`` (outlives failed jobs, as the
    state) and carry the checkpoint fields, so ``python workflow/scripts/posthoc_ema.py`` can write a
    checkpoint of any EMA length afterwards."""
    if not cfg:
        return None
    if "snapshot_every" not in cfg:
        raise SystemExit(f"train.posthoc_ema: 'snapshot_every' missing (got keys {sorted(cfg)}); expected "
                         "{sigma_rels: [0.05, 0.10], snapshot_every: N}")
    cpu = lambda v: v.detach().cpu() if torch.is_tensor(v) else v  # noqa: E731
    meta = {"architecture": spec["architecture"], "model_kwargs": dict(model_kwargs), "transport": transport,
            "num_classes": int(num_classes), "latent_shape": [int(v) for v in latent_shape],
            "normalizer": {"mean": cpu(normalizer.mean), "std": cpu(normalizer.std),
                           "multiplier": float(normalizer.multiplier)},
            "autoencoder": autoencoder, "info": info}
    return PosthocEMA(model, cfg.get("sigma_rels", [0.05, 0.10]), int(cfg["snapshot_every"]),
                      Path(state_dir) / SNAPSHOT_DIR, meta=meta)


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads)
    env = ud.detect_env()
    device = ud.default_device(env) if a.device is None else torch.device(a.device)
    if env.distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank)
    ud.init_distributed(env, device=device)
    try:
        return _main(a, env, device)
    finally:
        ud.cleanup()


def _main(a, env: ud.DistEnv, device: torch.device) -> int:
    main_rank = env.is_main

    def log_main(msg: str) -> None:
        if main_rank:
            log(msg)

    if env.distributed:
        log(f"rank {env.rank}/{env.world_size} (local {env.local_rank}, {env.launcher}) on {device}, "
            f"master {env.master_addr}:{env.master_port}")
    spec = load_spec(a.spec)
    data_cfg = {"dataset": None, "autoencoder": "identity", "normalize_latents": True, "latent_multiplier": 1.0,
                **spec.get("data", {})}
    latents = Path(a.latents)
    stats = Path(a.stats) if a.stats else latents / "stats.pt"
    out_dir = Path(a.out_dir)
    info = read_manifest(latents, "train")
    latent_shape = list(info["latent_shape"])
    dataset = data_cfg["dataset"] or info.get("dataset")
    num_classes = int(info.get("num_classes") or get_dataset(dataset).num_classes)

    # -- model, objective, loader -------------------------------------------------------------------
    overrides = dict(spec.get("architecture_overrides", {}))
    # a model may ignore the data's classes: num_classes 1 is unconditional (UCGM's CIFAR-10 EDM network)
    data_classes, num_classes = num_classes, int(overrides.pop("num_classes", num_classes))
    if num_classes not in (1, data_classes):
        raise SystemExit(f"architecture_overrides.num_classes {num_classes}: expected 1 (unconditional) or the "
                         f"data's {data_classes} classes")
    model_kwargs = dict(input_size=latent_shape[1], in_channels=latent_shape[0], num_classes=num_classes, **overrides)
    # torch's default generator is seeded at random in each process: seed the initial weights so that
    # a rerun from scratch (and every rank) starts from the same model
    torch.manual_seed(int(spec["train"].get("seed", 0)))
    model = build_model(spec["architecture"], **model_kwargs).to(device)
    objective_cfg = UCGMConfig(**spec["objective"], num_classes=num_classes)
    objective_cfg.validate()
    objective = UCGMObjective(objective_cfg)
    t = spec["train"]
    settings = TrainSettings(steps=t["steps"], batch_size=t["batch_size"], optimizer=t.get("optimizer", "AdamW"),
                             lr=t.get("lr", 2e-4), betas=tuple(t.get("betas", (0.9, 0.95))),
                             weight_decay=t.get("weight_decay", 0.0), max_grad_norm=t.get("max_grad_norm"),
                             ema_decay=t.get("ema_decay", 0.9999), ema_init=t.get("ema_init", "initial"),
                             seed=t.get("seed", 0),
                             log_every=t.get("log_every", 50), checkpoint_every=t.get("checkpoint_every", 500),
                             precision=t.get("precision", "fp32"), tf32=bool(t.get("tf32", True)),
                             compile=t.get("compile", False), seeding=SEEDING, micro_batch=a.micro_batch,
                             max_nonfinite_steps=t.get("max_nonfinite_steps", TrainSettings.max_nonfinite_steps))
    if settings.batch_size % env.world_size:
        raise SystemExit(f"train.batch_size {settings.batch_size} does not split over {env.world_size} processes")
    if data_cfg.get("latent_stats") and data_cfg["normalize_latents"]:  # fixed statistics (e.g. EDM2's)
        st = data_cfg["latent_stats"]
        normalizer = LatentNormalizer(*(torch.tensor(st[k], dtype=torch.float32).reshape(1, -1, 1, 1)
                                        for k in ("mean", "std")), data_cfg["latent_multiplier"],
                                      source="data.latent_stats")
    else:
        normalizer = LatentNormalizer.from_stats(stats, data_cfg["latent_multiplier"], data_cfg["normalize_latents"])

    if a.init:
        init = load_checkpoint(a.init)
        if init["architecture"] != spec["architecture"]:
            raise ValueError(f"--init {a.init}: a {init['architecture']}, expected {spec['architecture']}")
        model.load_state_dict(init["ema"])  # the paper's tuning starts from the multi-step EMA
    if a.teacher:
        teacher = load_checkpoint(a.teacher)
        teacher_net = build_model(teacher["architecture"], **teacher["model_kwargs"])
        teacher_net.load_state_dict(teacher["ema"])
        objective.teacher.preset(teacher_net.to(device))

    t0 = time.time()
    data = load_latent_arrays(latents, "train")
    if num_classes == 1 < data_classes:
        data.labels.zero_()  # unconditional: every image is class 0 (the null label 1 stays for dropout)
    loader = LatentLoader(data, settings.batch_size // env.world_size, seed=settings.seed, normalizer=normalizer,
                          device=device, rank=env.rank, world_size=env.world_size)
    log_main(f"loaded {len(data)} latents {tuple(latent_shape)} in {time.time() - t0:.1f}s; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {settings.steps} steps of {settings.batch_size}"
             + (f" ({env.world_size} processes x {settings.batch_size // env.world_size})" if env.distributed else "")
             + (f", micro-batch {a.micro_batch}" if a.micro_batch else ""))

    state_dir = Path(a.state_dir) / fingerprint(spec, [stats, a.init, a.teacher])
    posthoc = posthoc_trackers(t.get("posthoc_ema"), model, state_dir, spec=spec, model_kwargs=model_kwargs,
                               transport=objective_cfg.transport, num_classes=num_classes, latent_shape=latent_shape,
                               normalizer=normalizer, autoencoder=data_cfg["autoencoder"],
                               info={"spec": spec, "init": a.init, "teacher": a.teacher,
                                     "state": str(state_dir / "state.pt")})
    if posthoc is not None:
        log_main(f"post-hoc EMA: sigma_rel {posthoc.sigma_rels}, snapshots every {posthoc.snapshot_every} steps "
                 f"in {posthoc.folder}")
    # the evaluation EMA starts as a copy of the starting weights (the initialisation or --init's EMA)
    trainer = Trainer(model, objective, loader, settings, state_dir / "state.pt", log=log_main, device=device,
                      rank=env.rank, world_size=env.world_size, posthoc_ema=posthoc)
    if device.type == "cuda" or settings.precision != "fp32" or settings.compile:
        fused = any(g.get("fused") for g in trainer.optimizer.param_groups)
        log_main(f"compute: {settings.precision}, TF32 {'on' if settings.tf32 and device.type == 'cuda' else 'off'}, "
                 f"compile {settings.compile or 'off'}, {settings.optimizer}{' (fused)' if fused else ''}")
    grid_dir = out_dir / "grids"
    if main_rank and not trainer.resumed and grid_dir.exists():
        shutil.rmtree(grid_dir)

    ae_kwargs = json.loads(a.ae_kwargs)
    if data_cfg["autoencoder"] == "identity":
        ae_kwargs.setdefault("channels", latent_shape[0])
    decoder = get_autoencoder(data_cfg["autoencoder"], **ae_kwargs).to(device)
    grid_rows = min(10, num_classes) if num_classes > 1 else 8
    few_step = objective_cfg.consistency_ratio > 0

    def grid(path: Path, net) -> None:
        n = grid_rows * 10
        res = generate_images(net, range(n), seed=0, method="ucgm", steps=2 if few_step else 16,
                              transport=objective_cfg.transport, latent_shape=latent_shape, num_classes=num_classes,
                              normalizer=normalizer, decode=decoder.decode,
                              options={"stochasticity": 1.0} if few_step else {"extrapolation": 0.5},
                              batch_size=n, device=device)
        # image i has class i mod num_classes: transpose so that each row is one class
        order = class_rows(grid_rows, 10) if num_classes > 1 else range(n)
        save_grid(res.images[list(order)], path, grid_rows, 10)

    every = int(t.get("grid_every", 0) or 0)
    stop_at = None if a.stop_after is None else trainer.state.step + a.stop_after

    snapshots = {int(k) for k in t.get("snapshots", [])}

    def checkpoint_payload(net_online, net_ema, step: int, path: Path) -> None:
        save_checkpoint(path, architecture=spec["architecture"], model_kwargs=model_kwargs,
                        transport=objective_cfg.transport, num_classes=num_classes, latent_shape=latent_shape,
                        normalizer=normalizer, autoencoder=data_cfg["autoencoder"], step=step,
                        model=net_online, ema=net_ema,
                        info={"spec": spec, "init": a.init, "teacher": a.teacher, "state": str(trainer.state_path)})

    def on_step(tr: Trainer) -> None:
        if main_rank and tr.state.step in snapshots:  # kept beside the resumable state: survives failed jobs
            checkpoint_payload(model, tr.ema.module, tr.state.step,
                               state_dir / "snapshots" / f"step-{tr.state.step:07d}.pt")
        if main_rank and every and tr.state.step % every == 0:
            grid(grid_dir / f"step_{tr.state.step:07d}.png", tr.ema.module)
        if stop_at is not None and tr.state.step >= stop_at:
            tr.save_state()
            raise SystemExit(f"stopped after {a.stop_after} steps (--stop-after); rerun to continue")

    t0 = time.time()
    try:
        with ud.PreemptionGuard() as guard:
            state = trainer.run(on_step, should_stop=guard.should_stop)
    except Preempted as e:
        log_main(f"{e} on {guard.signal_name}; exiting with status {ud.PREEMPTED_EXIT_CODE} "
                 f"(rerun to continue from {trainer.state_path})")
        return ud.PREEMPTED_EXIT_CODE
    log_main(f"trained to step {state.step} in {time.time() - t0:.1f}s")
    if not main_rank:
        return 0

    # -- outputs (rank 0) ------------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_payload(model, trainer.ema.module, state.step, out_dir / "checkpoint.pt")
    rows = "".join(f"{step},{loss:.6f},{rate:.2f}\n" for step, loss, rate in state.losses)
    atomic_write_bytes(out_dir / "loss.csv", ("step,loss,images_per_second\n" + rows).encode())
    plot_loss_curve(state.losses, out_dir / "loss.png", title=f"{out_dir.name}: UCGM-T loss "
                    f"(lambda={objective_cfg.consistency_ratio:g}, zeta={objective_cfg.enhanced_ratio:g})")
    grid(out_dir / "grid.png", trainer.ema.module)
    log(f"wrote {out_dir}/checkpoint.pt, loss.csv, loss.png, grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
