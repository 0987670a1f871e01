"""Train (UCGM-T multi-step) or tune (UCGM-T few-step from a checkpoint) one model from its spec.

``workflow/scripts/train.py`` maps its flags onto one :class:`TrainJob` and calls :func:`train`; everything a
job does lives here, in short steps: read the latent manifest, build the network, objective, settings,
normaliser and loader, load the initial and teacher weights, resume the state, run the trainer (with
preemption handling and ``--stop-after``), and write the outputs.

The resumable state lives in ``<state-dir>/<fingerprint>/state.pt``, the fingerprint hashing the spec and
the input files (:func:`fingerprint`), so a killed job rerun with the same inputs continues where it stopped
and a changed config starts afresh. Outputs: ``checkpoint.pt``, ``loss.csv``, ``loss.png``, ``grid.png`` in
the output folder and periodic grids in ``<out-dir>/grids/``; ``train.snapshots`` are kept in
``<state-dir>/<fingerprint>/snapshots/`` and ``train.posthoc_ema`` snapshots in ``.../posthoc_ema/``.

Defaults are not written here: absent keys take the defaults of :class:`TrainSettings`,
:class:`~ucgm_core.training.objective.UCGMConfig`, :class:`TrainData`, :class:`TrainSpec` and
:class:`PosthocConfig`, which tests/core/test_defaults.py checks against the config schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from .. import distributed as ud
from ..autoencoders import get_autoencoder
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.datasets import get_dataset
from ..data.loader import LatentLoader, LatentNormalizer, load_latent_arrays
from ..data.shards import read_manifest
from ..figures import class_rows, plot_loss_curve, save_grid
from ..io import atomic_write, atomic_write_bytes, sha256_file
from ..models import build_model
from ..sampling.generate import generate_images
from .loop import Preempted, Trainer, TrainSettings, TrainState
from .objective import UCGMConfig, UCGMObjective
from .posthoc_ema import SNAPSHOT_DIR, PosthocEMA

Log = Callable[[str], None]

SEEDING = "step"  # per-step draws: the same updates for any number of processes (part of the fingerprint)
# what the trainer does beyond the spec (part of the fingerprint, so a state written before a change of
# semantics is not resumed under the new ones): 2 = the original's AdamW, EMA from the starting weights,
# teacher kept whenever lambda != 0 or zeta != 0
SEMANTICS = 2
# how the network runs, not what it computes: changing it resumes the same state
NOT_FINGERPRINTED = ("compile", "max_nonfinite_steps")
STOPPED_EXIT_CODE = 1  # --stop-after: the state is written, the job is not done (as a SystemExit with a message)


class SpecError(ValueError):
    """A model spec the training job cannot run (the message names the key and what was expected)."""


def fingerprint(spec: dict, files: Sequence[Optional[os.PathLike | str]]) -> str:
    """16 hex digits naming the state folder: the spec (less :data:`NOT_FINGERPRINTED`), the seeding,
    the trainer's semantics and the sha256 of each input file (``None`` entries skipped)."""
    if any(k in spec.get("train", {}) for k in NOT_FINGERPRINTED):
        spec = {**spec, "train": {k: v for k, v in spec["train"].items() if k not in NOT_FINGERPRINTED}}
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    h.update(f"seeding={SEEDING}".encode())
    h.update(f"semantics={SEMANTICS}".encode())
    for f in files:
        if f is not None:
            h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def snapshot_path(state_path: os.PathLike | str, step: int) -> Path:
    """Where a ``train.snapshots`` checkpoint of ``step`` is kept: beside the state file."""
    return Path(state_path).parent / "snapshots" / f"step-{int(step):07d}.pt"


def export_snapshot(checkpoint: os.PathLike | str, step: int, out: os.PathLike | str) -> Path:
    """Copy the snapshot of ``step`` that the run of ``checkpoint`` kept to ``out`` (atomically); the source."""
    info = load_checkpoint(checkpoint).get("info") or {}
    state, kept = info.get("state"), info.get("spec", {}).get("train", {}).get("snapshots", [])
    src = snapshot_path(state, step) if state else None
    if src is None or not src.is_file():
        raise FileNotFoundError(
            f"{checkpoint}: no snapshot of step {step} (kept: {kept}); add {step} to the "
            "model's train.snapshots in the config"
        )
    atomic_write(Path(out), lambda tmp: shutil.copyfile(src, tmp))
    return src


# -- the spec, typed ------------------------------------------------------------------------------------------
def _unknown_keys(section: str, given: Mapping[str, Any], allowed: Set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SpecError(f"spec {section}: unknown keys {unknown}; expected some of {sorted(allowed)}")


@dataclass
class TrainData:
    """The ``data`` keys a training job reads (defaults: the schema's ``data`` defaults)."""

    dataset: Optional[str] = None  # None: the latent manifest's dataset
    autoencoder: str = "identity"
    normalize_latents: bool = True
    latent_multiplier: float = 1.0
    latent_stats: Optional[dict] = None  # fixed {mean, std} per channel (e.g. EDM2's) instead of stats.pt
    hflip: bool = True  # random horizontal flips (the original's, p = 1/2); false for orientation-bound data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainData":
        _unknown_keys("data", data, {f.name for f in fields(cls)})
        return cls(**data)


@dataclass
class PosthocConfig:
    """``train.posthoc_ema``: EDM2's post-hoc EMA lengths and snapshot period."""

    snapshot_every: int
    sigma_rels: Sequence[float] = (0.05, 0.10)  # EDM2's two tracked lengths

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "PosthocConfig":
        if "snapshot_every" not in cfg:
            raise SpecError(
                f"train.posthoc_ema: 'snapshot_every' missing (got keys {sorted(cfg)}); expected "
                "{sigma_rels: [0.05, 0.10], snapshot_every: N}"
            )
        _unknown_keys("train.posthoc_ema", cfg, {f.name for f in fields(cls)})
        return cls(**cfg)


@dataclass
class TrainSpec:
    """One ``models.<name>`` entry (plus ``data``) as a training job reads it; ``raw`` is the spec as given
    (fingerprinted and recorded in every checkpoint)."""

    raw: dict
    architecture: str
    settings: TrainSettings
    objective: Dict[str, Any]  # UCGMConfig keys; num_classes comes from the data
    data: TrainData = field(default_factory=TrainData)
    architecture_overrides: Dict[str, Any] = field(default_factory=dict)
    grid_every: int = 0  # steps between periodic grids (0: none)
    snapshots: Sequence[int] = ()  # steps whose checkpoints are kept
    posthoc_ema: Optional[PosthocConfig] = None  # absent or null: off

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], micro_batch: Optional[int] = None) -> "TrainSpec":
        """Check the sections and fill the defaults; ``micro_batch`` is the job's, not the spec's."""
        for key in ("architecture", "objective", "train"):
            if spec.get(key) is None:
                raise SpecError(
                    f"spec: {key!r} missing (got keys {sorted(spec)}); expected a models.<name> "
                    "entry with architecture, objective and train"
                )
        t = spec["train"]
        kw: Dict[str, Any] = {k: t[k] for k in ("grid_every", "snapshots") if k in t}
        if "grid_every" in kw:
            kw["grid_every"] = int(kw["grid_every"] or 0)
        if t.get("posthoc_ema"):
            kw["posthoc_ema"] = PosthocConfig.from_dict(t["posthoc_ema"])
        if "architecture_overrides" in spec:
            kw["architecture_overrides"] = dict(spec["architecture_overrides"])
        try:
            settings = TrainSettings.from_dict(t, seeding=SEEDING, micro_batch=micro_batch)
        except ValueError as e:
            raise SpecError(str(e)) from None
        return cls(
            raw=dict(spec),
            architecture=spec["architecture"],
            settings=settings,
            objective=dict(spec["objective"]),
            data=TrainData.from_dict(spec.get("data") or {}),
            **kw,
        )


# -- the job ----------------------------------------------------------------------------------------------------
@dataclass
class TrainJob:
    """What one training job gets: the latents, the spec and where to write (see workflow/scripts/train.py)."""

    latents: Path
    spec: dict
    out_dir: Path
    state_dir: Path
    stats: Optional[Path] = None  # default: <latents>/stats.pt
    init: Optional[str] = None  # checkpoint whose EMA weights start the online model and its EMA
    teacher: Optional[str] = None  # checkpoint whose EMA weights the (frozen) teacher keeps
    ae_kwargs: Dict[str, Any] = field(default_factory=dict)
    device: Optional[str] = None  # default: cuda if available (cuda:<local rank> with several processes)
    micro_batch: Optional[int] = None
    stop_after: Optional[int] = None  # stop after this many steps of this run (testing)
    log: Log = print


@dataclass
class Built:
    """Everything built for a job before training starts."""

    spec: TrainSpec
    env: ud.DistEnv
    device: torch.device
    latent_shape: List[int]
    data_classes: int  # the data's classes
    num_classes: int  # the model's: the data's, or 1 (unconditional)
    model_kwargs: Dict[str, Any]
    model: nn.Module
    objective_cfg: UCGMConfig
    objective: UCGMObjective
    normalizer: LatentNormalizer
    state_dir: Path
    log_main: Log

    def checkpoint_fields(self, job: TrainJob, state: str) -> Dict[str, Any]:
        """The checkpoint fields besides the weights and step (also the post-hoc snapshots' meta)."""
        return dict(
            architecture=self.spec.architecture,
            model_kwargs=self.model_kwargs,
            transport=self.objective_cfg.transport,
            num_classes=self.num_classes,
            latent_shape=self.latent_shape,
            normalizer=self.normalizer,
            autoencoder=self.spec.data.autoencoder,
            info={"spec": self.spec.raw, "init": job.init, "teacher": job.teacher, "state": state},
        )


def job_device(env: ud.DistEnv, device: Optional[str]) -> torch.device:
    """The job's device: ``device``, or the default; with several processes, cuda gets the local rank."""
    dev = ud.default_device(env) if device is None else torch.device(device)
    if env.distributed and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", env.local_rank)
    return dev


def train(job: TrainJob) -> int:
    """Run one training job in this process (one of several under torchrun/srun); the exit status:
    0 done, :data:`ucgm_core.distributed.PREEMPTED_EXIT_CODE` preempted, :data:`STOPPED_EXIT_CODE` stopped
    by ``stop_after``. Raises :class:`SpecError` for a spec it cannot run."""
    env = ud.detect_env()
    device = job_device(env, job.device)
    ud.init_distributed(env, device=device)
    try:
        return run_job(job, env, device)
    finally:
        ud.cleanup()


def class_counts(spec: TrainSpec, info: dict) -> Tuple[int, int]:
    """``(data's classes, model's classes)``; ``architecture_overrides.num_classes`` 1 is unconditional
    (UCGM's CIFAR-10 EDM network)."""
    dataset = spec.data.dataset or info.get("dataset")
    data_classes = int(info.get("num_classes") or get_dataset(dataset).num_classes)
    num_classes = int(spec.architecture_overrides.get("num_classes", data_classes))
    if num_classes not in (1, data_classes):
        raise SpecError(
            f"architecture_overrides.num_classes {num_classes}: expected 1 (unconditional) or the "
            f"data's {data_classes} classes"
        )
    return data_classes, num_classes


def build_normalizer(data: TrainData, stats: Path) -> LatentNormalizer:
    """Fixed ``data.latent_stats`` (e.g. EDM2's) when given and normalising, else the latents' ``stats.pt``."""
    if data.latent_stats and data.normalize_latents:
        st = data.latent_stats
        return LatentNormalizer(
            *(torch.tensor(st[k], dtype=torch.float32).reshape(1, -1, 1, 1) for k in ("mean", "std")),
            data.latent_multiplier,
            source="data.latent_stats",
        )
    return LatentNormalizer.from_stats(stats, data.latent_multiplier, data.normalize_latents)


def load_init_and_teacher(
    job: TrainJob, architecture: str, model: nn.Module, objective: UCGMObjective, device: torch.device
) -> None:
    """``--init``'s EMA weights into ``model`` (the paper's tuning starts from the multi-step EMA) and
    ``--teacher``'s EMA weights into the objective's frozen teacher."""
    if job.init:
        init = load_checkpoint(job.init)
        if init["architecture"] != architecture:
            raise ValueError(f"--init {job.init}: a {init['architecture']}, expected {architecture}")
        model.load_state_dict(init["ema"])
    if job.teacher:
        teacher = load_checkpoint(job.teacher)
        teacher_net = build_model(teacher["architecture"], **teacher["model_kwargs"])
        teacher_net.load_state_dict(teacher["ema"])
        objective.teacher.preset(teacher_net.to(device))


def build(job: TrainJob, env: ud.DistEnv, device: torch.device, log_main: Log) -> Built:
    """Network, objective and normaliser of ``job`` (with ``--init`` and ``--teacher`` loaded)."""
    spec = TrainSpec.from_dict(job.spec, micro_batch=job.micro_batch)
    info = read_manifest(Path(job.latents), "train")
    latent_shape = list(info["latent_shape"])
    data_classes, num_classes = class_counts(spec, info)
    overrides = {k: v for k, v in spec.architecture_overrides.items() if k != "num_classes"}
    model_kwargs = dict(input_size=latent_shape[1], in_channels=latent_shape[0], num_classes=num_classes, **overrides)
    # torch's default generator is seeded at random in each process: seed the initial weights so that
    # a rerun from scratch (and every rank) starts from the same model
    torch.manual_seed(int(spec.settings.seed))
    model = build_model(spec.architecture, **model_kwargs).to(device)
    objective_cfg = UCGMConfig.from_dict(spec.objective, num_classes=num_classes)
    objective_cfg.validate()
    objective = UCGMObjective(objective_cfg)
    if spec.settings.batch_size % env.world_size:
        raise SpecError(f"train.batch_size {spec.settings.batch_size} does not split over {env.world_size} processes")
    stats = Path(job.stats) if job.stats else Path(job.latents) / "stats.pt"
    normalizer = build_normalizer(spec.data, stats)
    load_init_and_teacher(job, spec.architecture, model, objective, device)
    state_dir = Path(job.state_dir) / fingerprint(spec.raw, [stats, job.init, job.teacher])
    return Built(
        spec,
        env,
        device,
        latent_shape,
        data_classes,
        num_classes,
        model_kwargs,
        model,
        objective_cfg,
        objective,
        normalizer,
        state_dir,
        log_main,
    )


def make_loader(b: Built, latents: Path) -> LatentLoader:
    """This rank's loader over the training latents (labels zeroed for an unconditional model)."""
    t0 = time.time()
    data = load_latent_arrays(latents, "train")
    if b.num_classes == 1 < b.data_classes:
        data.labels.zero_()  # unconditional: every image is class 0 (the null label 1 stays for dropout)
    s, env = b.spec.settings, b.env
    loader = LatentLoader(
        data,
        s.batch_size // env.world_size,
        seed=s.seed,
        normalizer=b.normalizer,
        flip_prob=0.5 if b.spec.data.hflip else 0.0,
        device=b.device,
        rank=env.rank,
        world_size=env.world_size,
    )
    b.log_main(
        f"loaded {len(data)} latents {tuple(b.latent_shape)} in {time.time() - t0:.1f}s; "
        f"{sum(p.numel() for p in b.model.parameters()):,} parameters; {s.steps} steps of {s.batch_size}"
        + (f" ({env.world_size} processes x {s.batch_size // env.world_size})" if env.distributed else "")
        + (f", micro-batch {s.micro_batch}" if s.micro_batch else "")
    )
    return loader


def posthoc_trackers(b: Built, job: TrainJob) -> Optional[PosthocEMA]:
    """The ``train.posthoc_ema`` trackers (EDM2's post-hoc EMA) or None when the key is absent or null.

    Snapshots go into the run folder ``<state-dir>/<fingerprint>/posthoc_ema/`` (outlives failed jobs, as the
    state) and carry the checkpoint fields, so ``python workflow/scripts/posthoc_ema.py`` can write a
    checkpoint of any EMA length afterwards."""
    cfg = b.spec.posthoc_ema
    if cfg is None:
        return None
    cpu = lambda v: v.detach().cpu() if torch.is_tensor(v) else v  # noqa: E731
    meta = b.checkpoint_fields(job, str(b.state_dir / "state.pt"))
    meta.update(
        model_kwargs=dict(b.model_kwargs),
        num_classes=int(b.num_classes),
        latent_shape=[int(v) for v in b.latent_shape],
        normalizer={
            "mean": cpu(b.normalizer.mean),
            "std": cpu(b.normalizer.std),
            "multiplier": float(b.normalizer.multiplier),
        },
    )
    posthoc = PosthocEMA(b.model, cfg.sigma_rels, int(cfg.snapshot_every), b.state_dir / SNAPSHOT_DIR, meta=meta)
    b.log_main(
        f"post-hoc EMA: sigma_rel {posthoc.sigma_rels}, snapshots every {posthoc.snapshot_every} steps "
        f"in {posthoc.folder}"
    )
    return posthoc


def make_trainer(b: Built, job: TrainJob, loader: LatentLoader) -> Trainer:
    """The trainer (resuming ``<state_dir>/state.pt`` when there); the evaluation EMA starts as a copy of
    the starting weights (the initialisation or ``--init``'s EMA)."""
    s = b.spec.settings
    trainer = Trainer(
        b.model,
        b.objective,
        loader,
        s,
        b.state_dir / "state.pt",
        log=b.log_main,
        device=b.device,
        rank=b.env.rank,
        world_size=b.env.world_size,
        posthoc_ema=posthoc_trackers(b, job),
    )
    if b.device.type == "cuda" or s.precision != "fp32" or s.compile:
        fused = any(g.get("fused") for g in trainer.optimizer.param_groups)
        b.log_main(
            f"compute: {s.precision}, TF32 {'on' if s.tf32 and b.device.type == 'cuda' else 'off'}, "
            f"compile {s.compile or 'off'}, {s.optimizer}{' (fused)' if fused else ''}"
        )
    return trainer


class GridWriter:
    """Sample grids of a network: 10 columns, one class per row (8 rows unconditional), 16 UCGM steps
    (2 stochastic ones for a few-step model)."""

    def __init__(self, b: Built, ae_kwargs: Mapping[str, Any]):
        kwargs = dict(ae_kwargs)
        if b.spec.data.autoencoder == "identity":
            kwargs.setdefault("channels", b.latent_shape[0])
        self.decoder = get_autoencoder(b.spec.data.autoencoder, **kwargs).to(b.device)
        self.b = b
        self.rows = min(10, b.num_classes) if b.num_classes > 1 else 8
        self.few_step = b.objective_cfg.consistency_ratio > 0

    def __call__(self, path: Path, net: nn.Module) -> None:
        b, n = self.b, self.rows * 10
        res = generate_images(
            net,
            range(n),
            seed=0,
            method="ucgm",
            steps=2 if self.few_step else 16,
            transport=b.objective_cfg.transport,
            latent_shape=b.latent_shape,
            num_classes=b.num_classes,
            normalizer=b.normalizer,
            decode=self.decoder.decode,
            options={"stochasticity": 1.0} if self.few_step else {"extrapolation": 0.5},
            batch_size=n,
            device=b.device,
        )
        # image i has class i mod num_classes: transpose so that each row is one class
        order = class_rows(self.rows, 10) if b.num_classes > 1 else range(n)
        save_grid(res.images[list(order)], path, self.rows, 10)


class StopAfter(Exception):
    """``stop_after`` steps of this run are done (the state is written)."""


def step_hook(b: Built, job: TrainJob, trainer: Trainer, grid: GridWriter) -> Callable[[Trainer], None]:
    """After each step: ``train.snapshots`` checkpoints and periodic grids (rank 0), ``stop_after``."""
    main_rank, every = b.env.is_main, b.spec.grid_every
    snapshots = {int(k) for k in b.spec.snapshots}
    stop_at = None if job.stop_after is None else trainer.state.step + job.stop_after
    grid_dir = Path(job.out_dir) / "grids"

    def on_step(tr: Trainer) -> None:
        step = tr.state.step
        if main_rank and step in snapshots:  # kept beside the resumable state: survives failed jobs
            save_checkpoint(
                snapshot_path(tr.state_path, step),
                step=step,
                model=b.model,
                ema=tr.ema.module,
                **b.checkpoint_fields(job, str(tr.state_path)),
            )
        if main_rank and every and step % every == 0:
            grid(grid_dir / f"step_{step:07d}.png", tr.ema.module)
        if stop_at is not None and step >= stop_at:
            tr.save_state()
            raise StopAfter(f"stopped after {job.stop_after} steps (--stop-after); rerun to continue")

    return on_step


def write_outputs(b: Built, job: TrainJob, trainer: Trainer, state: TrainState, grid: GridWriter) -> None:
    """Rank 0: ``checkpoint.pt``, ``loss.csv``, ``loss.png`` and ``grid.png`` in the output folder."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out_dir / "checkpoint.pt",
        step=state.step,
        model=b.model,
        ema=trainer.ema.module,
        **b.checkpoint_fields(job, str(trainer.state_path)),
    )
    rows = "".join(f"{step},{loss:.6f},{rate:.2f}\n" for step, loss, rate in state.losses)
    atomic_write_bytes(out_dir / "loss.csv", ("step,loss,images_per_second\n" + rows).encode())
    cfg = b.objective_cfg
    plot_loss_curve(
        state.losses,
        out_dir / "loss.png",
        title=f"{out_dir.name}: UCGM-T loss (lambda={cfg.consistency_ratio:g}, zeta={cfg.enhanced_ratio:g})",
    )
    grid(out_dir / "grid.png", trainer.ema.module)
    job.log(f"wrote {out_dir}/checkpoint.pt, loss.csv, loss.png, grid.png")


def run_job(job: TrainJob, env: ud.DistEnv, device: torch.device) -> int:
    """:func:`train` once the process group is up: build, train, write; the exit status."""
    log_main: Log = job.log if env.is_main else (lambda _msg: None)
    if env.distributed:
        job.log(
            f"rank {env.rank}/{env.world_size} (local {env.local_rank}, {env.launcher}) on {device}, "
            f"master {env.master_addr}:{env.master_port}"
        )
    b = build(job, env, device, log_main)
    loader = make_loader(b, Path(job.latents))
    trainer = make_trainer(b, job, loader)
    grid_dir = Path(job.out_dir) / "grids"
    if env.is_main and not trainer.resumed and grid_dir.exists():
        shutil.rmtree(grid_dir)
    grid = GridWriter(b, job.ae_kwargs)
    on_step = step_hook(b, job, trainer, grid)
    t0 = time.time()
    try:
        with ud.PreemptionGuard() as guard:
            state = trainer.run(on_step, should_stop=guard.should_stop)
    except Preempted as e:
        log_main(
            f"{e} on {guard.signal_name}; exiting with status {ud.PREEMPTED_EXIT_CODE} "
            f"(rerun to continue from {trainer.state_path})"
        )
        return ud.PREEMPTED_EXIT_CODE
    except StopAfter as e:
        print(e, file=sys.stderr, flush=True)
        return STOPPED_EXIT_CODE
    log_main(f"trained to step {state.step} in {time.time() - t0:.1f}s")
    if env.is_main:
        write_outputs(b, job, trainer, state, grid)
    return 0
