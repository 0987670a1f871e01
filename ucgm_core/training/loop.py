"""The UCGM-T outer loop with exact resume (method doc, Sec. 1.2 "Outer loop").

Everything a run needs to continue bit-for-bit lives in one state file written atomically every
``checkpoint_every`` steps: online weights, evaluation EMA, optimizer, objective (teacher weights
and its warm-up decay), step, RNG states, the data loader's position and the loss log. A killed
job restarted with the same arguments continues where the last state was written.

Two ways of drawing a step's randomness (``TrainSettings.seeding``):

* ``"stream"`` (default, one process): the objective draws t and z from the global torch RNG
  (seeded once with ``seed``; its state is part of the state file) and nulls the last
  ``round(p * B)`` labels of the batch, as the original does per GPU.
* ``"step"`` (any number of processes): at step ``k`` every rank draws the *global* batch's
  t (numpy PCG64 from ``(seed, k, 0)``), label-drop mask (exactly ``round(p * B_global)``
  positions, same generator) and noise z (torch generator on the device from ``(seed, k, 1)``)
  and takes its contiguous slice ``[r * B/W, (r + 1) * B/W)``, the same slice of the global batch
  the loader gives it. The global torch RNG (stochastic layers only) is reseeded from
  ``(seed, k, 2 + rank)``. So 1 process, W processes and gradient accumulation
  (``micro_batch``) compute the same update up to float summation order, and a resumed run,
  whatever its number of processes, continues exactly.

Distributed (``world_size > 1``, process group initialised, see :mod:`ucgm_core.distributed`):
the model is wrapped in DistributedDataParallel (the EMA, teacher and state use the unwrapped
module), ``batch_size`` is the global batch, each rank gets ``batch_size / world_size`` samples in
``micro_batch`` chunks (gradients synchronised on the last), and the loss is the mean over the
global batch. Only rank 0 writes the state file, after a barrier.

Preemption: :meth:`Trainer.run` takes ``should_stop`` (e.g. :meth:`PreemptionGuard.should_stop`),
asked after every step; when it says yes the state is written and :class:`Preempted` raised.

Two state copies: each write rotates ``state.pt`` to ``state.prev.pt`` (new file written and fsync-ed
first, then the renames), and a resume falls back to ``state.prev.pt`` when ``state.pt`` is missing or
unreadable (truncated by a full disk, ...), logging which file failed and why. Both unreadable is a
:class:`StateFileError` naming both. States are read with ``torch.load(weights_only=True)``.

Non-finite steps: a step whose loss (on any process) or gradients are NaN/inf is skipped as the
original does (its gradients are zeroed by :func:`scrub_nonfinite_grads_`), and no state is written
while such a streak lasts. ``max_nonfinite_steps`` consecutive ones stop training with
:class:`NonFiniteTraining`; the state on disk is then the one from before the streak.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import accel
from .. import distributed as ud
from ..io import atomic_torch_save, atomic_write
from .ema import EMA, unwrap
from .lr_schedule import LRSchedule
from .posthoc_ema import PosthocEMA
from .objective import UCGMConfig, UCGMObjective, label_drop_count
from .optim import build_optimizer, clip_gradients_, load_optimizer_state, scrub_nonfinite_grads_

SEEDINGS = ("stream", "step")


class BatchSource(Protocol):
    """A resumable loader: ``next_batch() -> (latents [B,C,H,W], labels [B])``."""

    def next_batch(self) -> Tuple[Tensor, Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainSettings:
    """Outer-loop settings (the original's ``train`` and ``optimizer`` YAML sections)."""

    steps: int
    batch_size: int
    optimizer: str = "AdamW"  # the original's AdamW (see .optim); "TorchAdamW" for torch's
    lr: float = 2e-4
    betas: Sequence[float] = (0.9, 0.95)
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None
    ema_decay: float = 0.9999
    ema_init: str = "initial"  # evaluation EMA starts from the starting weights (original) or "first_step"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    precision: str = "fp32"  # or "bf16": the forwards under bf16 autocast (any device; weights stay float32)
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (no effect on the CPU)
    compile: Union[bool, str] = False  # torch.compile the network (True: inductor; or a backend name)
    seeding: str = "stream"  # or "step": draws keyed by (seed, step), independent of the process count
    micro_batch: Optional[int] = None  # per-process micro-batch (gradient accumulation); None: no accumulation
    max_nonfinite_steps: int = 10  # consecutive steps with a NaN/inf loss or gradients that stop training
    lr_schedule: Optional[Mapping[str, Any]] = None  # warm-up / decay (.lr_schedule.LRSchedule); None: constant lr

    @classmethod
    def from_dict(cls, train: Mapping[str, Any], **runtime: Any) -> "TrainSettings":
        """Settings from a config's ``train`` section plus the job's :data:`RUNTIME_FIELDS` (``seeding``,
        ``micro_batch``).

        Absent keys take the field defaults, the one source of them (tests/core/test_defaults.py checks the
        schema's against them); :data:`WORKFLOW_TRAIN_KEYS` are skipped; any other key is refused.
        ``betas`` becomes a tuple and ``tf32`` a bool, as the state file has always recorded them."""
        names = {f.name for f in fields(cls)}
        config_keys = names - set(RUNTIME_FIELDS)
        unknown = sorted(set(train) - config_keys - set(WORKFLOW_TRAIN_KEYS))
        if unknown:
            raise ValueError(
                f"train: unknown keys {unknown}; expected some of {sorted(config_keys)} "
                f"(or the workflow's {list(WORKFLOW_TRAIN_KEYS)})"
            )
        wrong = sorted(set(runtime) - set(RUNTIME_FIELDS))
        if wrong:
            raise ValueError(
                f"TrainSettings.from_dict: {wrong} are not runtime fields; expected some of {list(RUNTIME_FIELDS)}"
            )
        missing = [k for k in ("steps", "batch_size") if k not in train]
        if missing:
            raise ValueError(f"train: {missing} missing (got keys {sorted(train)}); steps and batch_size are required")
        values = {k: v for k, v in train.items() if k in config_keys}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        if "tf32" in values:
            values["tf32"] = bool(values["tf32"])
        if values.get("lr_schedule") is not None:
            values["lr_schedule"] = dict(values["lr_schedule"])
            LRSchedule.from_dict(values["lr_schedule"])  # bad keys or values refused here, by name
        return cls(**values, **runtime)


# keys of a model's ``train`` config section that the workflow reads but the trainer does not (see
# config/README.md); TrainSettings.from_dict skips them
WORKFLOW_TRAIN_KEYS = (
    "grid_every",  # periodic sample grids (ucgm_core.training.run)
    "snapshots",  # steps whose checkpoints are kept (ucgm_core.training.run)
    "posthoc_ema",  # EDM2's post-hoc EMA trackers (ucgm_core.training.run builds a PosthocEMA)
    "gpus",  # processes of the job (the workflow's launcher; not in the model's spec)
    "hours",  # the job's time limit (the workflow's resources; not in the model's spec)
)
# TrainSettings fields that describe how a job runs, set by the caller rather than the config
RUNTIME_FIELDS = ("seeding", "micro_batch")


@dataclass
class TrainState:
    step: int = 0
    losses: List[Tuple[int, float, float]] = field(default_factory=list)  # (step, loss, img/s)


def atomic_save(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file and an atomic rename."""
    atomic_torch_save(obj, path)


def previous_state_path(state_path: Union[str, os.PathLike]) -> Path:
    """Where the state before the newest is kept: ``state.pt`` -> ``state.prev.pt``."""
    p = Path(state_path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def save_rotating(obj, path: Union[str, os.PathLike], previous: Union[str, os.PathLike]) -> None:
    """Write ``obj`` to ``path`` keeping the file it replaces as ``previous``.

    Order: the new state goes to a temporary file beside ``path`` and is fsync-ed; only then is the
    current ``path`` renamed to ``previous`` and the temporary renamed to ``path`` (and the folder
    fsync-ed), all through :func:`ucgm_core.io.atomic_write`, which removes the temporary on any
    failure. A failed write (disk full) leaves both older files as they were; a crash between the two
    renames leaves ``previous`` only, which :func:`load_state_file` falls back to.
    """
    path, previous = Path(path), Path(previous)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)  # through a file object, as io.atomic_torch_save: byte-reproducible
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous)

    atomic_write(path, write)


class StateFileError(RuntimeError):
    """No readable training state among the copies that exist."""


def _why(err: BaseException) -> str:
    """``Type: the line that says what went wrong`` (torch's messages run over many lines; a
    ``weights_only`` refusal says why on its "WeightsUnpickler error" line, not the first)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    why = next(
        (ln.split("error:", 1)[1].strip() for ln in lines if ln.startswith("WeightsUnpickler error:")),
        lines[0] if lines else "(no message)",
    )
    if " was not an allowed global" in why:  # drop torch's advice to allowlist it
        why = why.split(" was not an allowed global")[0] + ", refused by torch.load(weights_only=True)"
    return f"{type(err).__name__}: {why}"


def load_state_file(
    paths: Sequence[Path], device: torch.device | str = "cpu", log: Callable[[str], None] = print
) -> Tuple[dict, Path]:
    """``(state, path)``: the first of ``paths`` (newest first) that exists and reads as a training
    state with ``torch.load(weights_only=True)``. Each copy passed over is logged with the reason;
    none readable raises :class:`StateFileError` naming every file and why it failed."""
    failed: List[Tuple[Path, str]] = []
    for path in map(Path, paths):
        if not path.exists():
            failed.append((path, "missing"))
            continue
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(state, dict) or not {"model", "train"} <= set(state):
                raise ValueError(f"not a training state (a {type(state).__name__} without 'model' and 'train')")
        except Exception as e:  # a truncated zip, a foreign pickle, ...: try the older copy
            failed.append((path, _why(e)))
            log(f"warning: training state {path} is unreadable ({failed[-1][1]})")
            continue
        if failed:
            log(
                f"warning: resuming from the older state {path}: "
                + "; ".join(f"{p} is {'missing' if why == 'missing' else 'unreadable'}" for p, why in failed)
            )
        return state, path
    raise StateFileError(
        "no readable training state: "
        + "; ".join(f"{p}: {why}" for p, why in failed)
        + ". Delete these files to start the run afresh."
    )


class NonFiniteTraining(RuntimeError):
    """``max_nonfinite_steps`` consecutive steps had a NaN/inf loss or gradients; nothing was saved from them."""


class Preempted(Exception):
    """Training stopped on request (SIGTERM/SIGUSR1) after writing its state at ``step``."""

    def __init__(self, step: int, reason: str = ""):
        super().__init__(f"preempted at step {step}" + (f" ({reason})" if reason else ""))
        self.step, self.reason = step, reason


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for draw ``stream`` of training step ``step`` (0-based) of a run seeded ``seed``."""
    a, b = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & ((1 << 63) - 1)


def draw_step_inputs(
    config: UCGMConfig,
    seed: int,
    step: int,
    global_batch: int,
    sample_shape: Sequence[int],
    lo: int,
    hi: int,
    device: torch.device | str = "cpu",
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(t [hi-lo], z [hi-lo, *sample_shape], drop bool [hi-lo])``: rows ``lo:hi`` of step ``step``'s
    global draws (the ``"step"`` seeding). The result does not depend on how the batch is split.

    t = clamp(s * Beta(a, b), 0, 1) (Uniform for a = b = 1); ``drop`` marks exactly
    ``round(p * global_batch)`` positions chosen uniformly; z ~ N(0, I) drawn on ``device``.
    """
    device = torch.device(device)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(step), 0])))
    a, b, scale = (float(v) for v in config.time_dist)
    raw = rng.random(global_batch) if (a == 1.0 and b == 1.0) else rng.beta(a, b, global_batch)
    t = torch.from_numpy(np.clip(raw.astype(np.float32) * np.float32(scale), 0.0, 1.0))
    drop = np.zeros(global_batch, dtype=bool)
    drop[rng.permutation(global_batch)[: label_drop_count(config.label_drop_ratio, global_batch)]] = True
    gen = torch.Generator(device=device).manual_seed(step_seed(seed, step, 1))
    z = torch.randn((global_batch, *sample_shape), generator=gen, device=device)
    return t[lo:hi].to(device), z[lo:hi], torch.from_numpy(drop[lo:hi]).to(device)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs UCGM-T steps on ``model`` with ``objective`` over ``loader``.

    Args:
        model: online network (moved to ``device``; may later be DDP-wrapped by the caller).
        objective: the UCGM-T loss (holds the teacher).
        loader: a :class:`BatchSource`.
        settings: :class:`TrainSettings`.
        state_path: the resumable state file (kept outside declared workflow outputs); the copy
            before it is kept beside it (:func:`previous_state_path`).
        log: a ``print``-like callable for progress lines.
        ema: the evaluation EMA (default: ``EMA(model, settings.ema_decay, settings.ema_init)``,
            a copy of ``model``'s weights as they are when the trainer is built).
        rank, world_size: this process in the process group (``world_size > 1`` needs an
            initialised group and ``seeding="step"``; the loader must give this rank's
            ``batch_size / world_size`` slice of each global batch).
        posthoc_ema: power-function EMA trackers (:class:`~ucgm_core.training.posthoc_ema.PosthocEMA`,
            ``train.posthoc_ema``), updated after every optimizer step on every rank, part of the state;
            rank 0 writes their snapshots after the step, before ``on_step`` and the state.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: UCGMObjective,
        loader: BatchSource,
        settings: TrainSettings,
        state_path: Path,
        log: Callable[[str], None] = print,
        device: torch.device | str = "cpu",
        ema: Optional[EMA] = None,
        rank: int = 0,
        world_size: int = 1,
        posthoc_ema: Optional[PosthocEMA] = None,
    ):
        self.model, self.objective, self.loader, self.settings = model, objective, loader, settings
        self.state_path, self.log, self.device = Path(state_path), log, torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self._check_layout()
        accel.configure_device(self.device, tf32=settings.tf32)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(
            self.params, settings.optimizer, settings.lr, settings.betas, settings.weight_decay
        )  # fused kernels on CUDA where torch has them
        self.lr_schedule = LRSchedule.from_dict(settings.lr_schedule)
        self.ema = ema if ema is not None else EMA(model, settings.ema_decay, init=settings.ema_init)
        self.posthoc_ema = posthoc_ema
        self.state = TrainState()
        self.resumed = False
        self.resumed_from: Optional[Path] = None  # the state file a resume read (the older copy after a fallback)
        self.prev_state_path = previous_state_path(self.state_path)
        self.nonfinite_streak = 0  # consecutive steps with a NaN/inf loss or gradients, up to the last one
        self.last_nonfinite = False  # whether the last step had a NaN/inf loss or gradients
        self.saved_step: Optional[int] = None  # the step of the newest state on disk (None: none yet)
        self._save_due = False  # a checkpoint put off by a non-finite streak
        exists = self.state_path.exists() or self.prev_state_path.exists()
        if self.world_size > 1 and ud.any_rank(exists) != (not ud.any_rank(not exists)):
            raise RuntimeError(f"{self.state_path} is visible on some ranks only (not a shared file system?)")
        if exists:
            state, self.resumed_from = load_state_file([self.state_path, self.prev_state_path], self.device, self.log)
            if (
                self.world_size > 1
                and ud.any_rank(self.resumed_from != self.state_path)
                and ud.any_rank(self.resumed_from == self.state_path)
            ):
                raise StateFileError(
                    f"the ranks disagree on the readable training state: some read {self.state_path}, "
                    f"others fell back to {self.prev_state_path}"
                )
            self._load(state)
            self.resumed = True
            self.saved_step = self.state.step
        else:
            torch.manual_seed(settings.seed)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = (
                [self.device.index if self.device.index is not None else torch.cuda.current_device()]
                if self.device.type == "cuda"
                else None
            )
            self.model = DistributedDataParallel(model, device_ids=ids)
        # torch.compile after the EMA, the teacher and DDP are set up: they keep the bare module
        # (state dicts and copies unchanged); the objective's extra no-grad forwards (teacher,
        # consistency) go through compiled wrappers of the same cache
        self.compiled = accel.CompiledModules(settings.compile)
        if self.compiled:
            self.model = self.compiled(self.model)
            objective.wrap_network = self.compiled

    def _check_layout(self) -> None:
        s, W = self.settings, self.world_size
        if s.seeding not in SEEDINGS:
            raise ValueError(f"train.seeding={s.seeding!r} is unknown; expected one of {SEEDINGS}")
        accel.check_precision(s.precision)
        accel.compile_backend(s.compile)
        if not 0 <= self.rank < W:
            raise ValueError(f"rank {self.rank} outside world of size {W}")
        if W > 1 and not ud.is_initialized():
            raise RuntimeError(f"world_size {W} needs an initialised process group (ucgm_core.distributed)")
        if W > 1 and s.seeding != "step":
            raise ValueError("several processes need train.seeding='step' (draws independent of the process count)")
        if s.batch_size % W:
            raise ValueError(f"the global batch {s.batch_size} does not split over {W} processes")
        self.per_rank = s.batch_size // W
        self.micro_batch = int(s.micro_batch or self.per_rank)
        if self.micro_batch < 1 or self.per_rank % self.micro_batch:
            raise ValueError(
                f"micro_batch {s.micro_batch} does not divide the per-process batch {self.per_rank} "
                f"(global {s.batch_size} over {W} processes)"
            )
        if self.micro_batch != self.per_rank and s.seeding != "step":
            raise ValueError("gradient accumulation (micro_batch) needs train.seeding='step'")
        if (
            isinstance(s.max_nonfinite_steps, bool)
            or not isinstance(s.max_nonfinite_steps, int)
            or s.max_nonfinite_steps < 1
        ):
            raise ValueError(
                f"train.max_nonfinite_steps={s.max_nonfinite_steps!r}: expected an integer >= 1 "
                "(consecutive non-finite steps that stop training)"
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": _rng_state(),
            "train": asdict(self.state),
            "settings": asdict(self.settings),
            **({"posthoc_ema": self.posthoc_ema.state_dict()} if self.posthoc_ema is not None else {}),
        }

    def _load(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        if self.posthoc_ema is not None:
            if "posthoc_ema" not in state:
                raise StateFileError(
                    f"{self.state_path}: the training state holds no post-hoc EMA trackers "
                    "(written with train.posthoc_ema off); a run that tracks them needs a fresh state"
                )
            self.posthoc_ema.load_state_dict(state["posthoc_ema"], source=str(self.state_path))
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.objective.load_state_dict(state["objective"], template=unwrap(self.model))
        self.loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        self.state = TrainState(step=state["train"]["step"], losses=[tuple(r) for r in state["train"]["losses"]])

    def save_state(self, *, in_streak: bool = False) -> bool:
        """Write the state file atomically, keeping the one it replaces (:func:`save_rotating`); with
        several processes all ranks meet at a barrier and rank 0 writes (every rank holds the same state).

        Inside a streak of non-finite steps nothing is written (the state on disk stays the one from
        before it) unless ``in_streak`` allows it; returns whether the state was written.
        """
        if self.nonfinite_streak and not in_streak:
            self.log(
                f"state not written at step {self.state.step}: inside {self.nonfinite_streak} non-finite "
                f"step(s); {self.state_path} keeps step {self.saved_step}"
            )
            return False
        ud.barrier()
        if self.is_main:
            save_rotating(self.state_dict(), self.state_path, self.prev_state_path)
        self.saved_step = self.state.step
        return True

    def _nonfinite_step(self, loss: Tensor, grads_scrubbed: bool) -> bool:
        """Whether this step's loss (on any process) or its gradients were NaN/inf. Asked right after the
        gradient scrub's own host sync and before the optimizer step is queued, so it waits for nothing."""
        bad = bool(grads_scrubbed) or not bool(torch.isfinite(loss.detach()).all())
        return ud.any_rank(bad) if self.world_size > 1 else bad

    def _count_nonfinite(self, bad: bool) -> None:
        """Track the streak of non-finite steps; raise :class:`NonFiniteTraining` when it reaches
        ``max_nonfinite_steps``, or at the last step when every step of the run was non-finite.

        Quirk: the original skips a step with NaN/inf gradients (zeroed, the optimizer still steps)
        and goes on; we do the same for shorter streaks.
        """
        self.nonfinite_streak = self.nonfinite_streak + 1 if bad else 0
        limit, step = self.settings.max_nonfinite_steps, self.state.step
        whole_run = step == self.settings.steps and self.nonfinite_streak == step
        if self.nonfinite_streak < limit and not whole_run:
            return
        kept = (
            f"{self.state_path} (or {self.prev_state_path.name}) keeps step {self.saved_step}, from before the streak"
            if self.saved_step is not None
            else "no state had been written yet"
        )
        raise NonFiniteTraining(
            f"training in {self.state_path.parent} stopped at step {step}/{self.settings.steps}: "
            f"{self.nonfinite_streak} consecutive steps ({step - self.nonfinite_streak + 1}-{step}) had a NaN/inf "
            f"loss or gradients ({'every step of the run; ' if whole_run else ''}"
            f"train.max_nonfinite_steps = {limit}); {kept}; no state or checkpoint was "
            "written from these steps. Check the training latents for NaN/inf and the learning rate."
        )

    # -- one step --------------------------------------------------------------------------
    def _set_lr(self) -> None:
        """The learning rate of the step about to be taken (``state.step + 1``) from ``train.lr_schedule``."""
        lr = self.settings.lr * self.lr_schedule.factor(self.state.step + 1, self.settings.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> Tensor:
        """One optimizer step; returns this rank's (detached) mean loss over its part of the batch."""
        if self.settings.seeding == "step":
            return self._step_keyed()
        x, y = self.loader.next_batch()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with accel.autocast(self.settings.precision, self.device):
            out = self.objective(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        clip_gradients_(self.params, self.settings.max_grad_norm)
        self.last_nonfinite = self._nonfinite_step(out.loss, scrub_nonfinite_grads_(self.params))
        self._set_lr()
        self.optimizer.step()
        self.ema.update(self.model)
        if self.posthoc_ema is not None:
            self.posthoc_ema.update(self.model)
        self.state.step += 1
        return out.loss.detach()

    def _step_keyed(self) -> Tensor:
        s, k = self.settings, self.state.step
        x, y = self.loader.next_batch()
        if x.shape[0] != self.per_rank:
            raise ValueError(
                f"the loader gave {x.shape[0]} samples; rank {self.rank} of {self.world_size} "
                f"expects {self.per_rank} (global batch {s.batch_size})"
            )
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        lo = self.rank * self.per_rank
        t, z, drop = draw_step_inputs(
            self.objective.config, s.seed, k, s.batch_size, x.shape[1:], lo, lo + self.per_rank, self.device
        )
        torch.manual_seed(step_seed(s.seed, k, 2 + self.rank))  # stochastic layers only
        n_micro = self.per_rank // self.micro_batch
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i in range(n_micro):
            sl = slice(i * self.micro_batch, (i + 1) * self.micro_batch)
            sync = i == n_micro - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with accel.autocast(s.precision, self.device):
                    out = self.objective(
                        self.model, x[sl], y[sl], t=t[sl], z=z[sl], drop=drop[sl], advance_teacher=i == 0
                    )
                loss = out.loss / n_micro if n_micro > 1 else out.loss
                loss.backward()
            total += loss.detach()
        clip_gradients_(self.params, s.max_grad_norm)
        self.last_nonfinite = self._nonfinite_step(total, scrub_nonfinite_grads_(self.params))
        self._set_lr()
        self.optimizer.step()
        self.ema.update(self.model)
        if self.posthoc_ema is not None:
            self.posthoc_ema.update(self.model)
        self.state.step += 1
        return total

    def run(
        self, on_step: Optional[Callable[["Trainer"], None]] = None, should_stop: Optional[Callable[[], bool]] = None
    ) -> TrainState:
        """Train until ``settings.steps``; writes the state file at every checkpoint and at the end.

        ``should_stop`` is asked after every step (on every rank: it may be a collective); when it
        returns True the state is written and :class:`Preempted` raised, before ``on_step``.
        """
        s = self.settings
        if self.resumed:
            self.log(f"resumed from {self.resumed_from} at step {self.state.step}/{s.steps}")
        start_step, t_start = self.state.step, time.perf_counter()
        t_window, window_losses = t_start, []
        bar = _progress_bar(s.steps, self.state.step) if self.is_main else None
        while self.state.step < s.steps:
            window_losses.append(self.step())
            if bar is not None:
                bar.update(1)
            step = self.state.step
            if step % s.log_every == 0 or step == s.steps:
                now = time.perf_counter()
                loss = float(ud.all_reduce_mean(torch.stack(window_losses).mean()))
                rate = len(window_losses) * s.batch_size / max(now - t_window, 1e-9)
                eta = (s.steps - step) * (now - t_start) / max(step - start_step, 1)
                if not math.isfinite(loss):
                    self.log(f"warning: non-finite loss at step {step}")
                self.state.losses.append((step, loss, rate))
                self.log(f"step {step}/{s.steps} loss {loss:.4f} {rate:.1f} img/s eta {_fmt(eta)}")
                t_window, window_losses = now, []
            try:
                self._count_nonfinite(self.last_nonfinite)
            except NonFiniteTraining:
                if bar is not None:
                    bar.close()
                raise
            if self.posthoc_ema is not None and self.is_main:  # before the state, as on_step's snapshots
                self.posthoc_ema.maybe_snapshot(step, last=step == s.steps)
            if on_step is not None:  # before the state is saved: what it writes (snapshots) is never skipped
                on_step(self)
            # a checkpoint falling inside a non-finite streak is put off to the streak's end; the last
            # step's is written even inside a (shorter than max_nonfinite_steps) streak: Quirk, as above
            due = self._save_due or step % s.checkpoint_every == 0 or step == s.steps
            saved = due and (not self.nonfinite_streak or step == s.steps) and self.save_state(in_streak=True)
            self._save_due = due and not saved
            if should_stop is not None and step < s.steps and should_stop():
                if not saved:
                    saved = self.save_state()
                ud.barrier()  # rank 0 has written before any rank leaves
                if bar is not None:
                    bar.close()
                self.log(
                    f"stop requested: state written at step {step}/{s.steps} to {self.state_path}"
                    if saved
                    else f"stop requested at step {step}/{s.steps}: {self.state_path} keeps step {self.saved_step}"
                )
                raise Preempted(step)
        if bar is not None:
            bar.close()
        return self.state


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def _progress_bar(total: int, initial: int):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
