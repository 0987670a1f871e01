"""The UCGM-T outer loop with exact resume (method doc, Sec. 1.2 "Outer loop").

Everything a run needs to continue bit-for-bit lives in one state file written atomically every
``checkpoint_every`` steps: online weights, evaluation EMA, optimizer, objective (teacher weights
and its warm-up decay), step, RNG states, the data loader's position and the loss log. A killed
job restarted with the same arguments continues where the last state was written.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor, nn

from .ema import EMA, unwrap
from .objective import UCGMObjective
from .optim import build_optimizer, clip_gradients_, scrub_nonfinite_grads_


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
    optimizer: str = "AdamW"
    lr: float = 2e-4
    betas: Sequence[float] = (0.9, 0.95)
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    precision: str = "fp32"  # or "bf16" (autocast on CUDA)


@dataclass
class TrainState:
    step: int = 0
    losses: List[Tuple[int, float, float]] = field(default_factory=list)  # (step, loss, img/s)


def atomic_save(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        state_path: the resumable state file (kept outside declared workflow outputs).
        log: a ``print``-like callable for progress lines.
        from_scratch: copy the weights into the EMA at the first update (False when the run
            starts from a checkpoint whose EMA was loaded).
    """

    def __init__(self, model: nn.Module, objective: UCGMObjective, loader: BatchSource,
                 settings: TrainSettings, state_path: Path, log: Callable[[str], None] = print,
                 device: torch.device | str = "cpu", ema: Optional[EMA] = None):
        self.model, self.objective, self.loader, self.settings = model, objective, loader, settings
        self.state_path, self.log, self.device = Path(state_path), log, torch.device(device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, settings.optimizer, settings.lr, settings.betas,
                                         settings.weight_decay)
        self.ema = ema if ema is not None else EMA(model, settings.ema_decay, from_scratch=True)
        self.state = TrainState()
        self.resumed = False
        if self.state_path.exists():
            self._load(torch.load(self.state_path, map_location=self.device, weights_only=False))
            self.resumed = True
        else:
            torch.manual_seed(settings.seed)

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
        }

    def _load(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state["objective"], template=unwrap(self.model))
        self.loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        self.state = TrainState(step=state["train"]["step"], losses=[tuple(r) for r in state["train"]["losses"]])

    def save_state(self) -> None:
        atomic_save(self.state_dict(), self.state_path)

    # -- one step --------------------------------------------------------------------------
    def step(self) -> float:
        x, y = self.loader.next_batch()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        autocast = self.settings.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = self.objective(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        clip_gradients_(self.params, self.settings.max_grad_norm)
        scrub_nonfinite_grads_(self.params)
        self.optimizer.step()
        self.ema.update(self.model)
        self.state.step += 1
        return out.loss.detach()

    def run(self, on_step: Optional[Callable[["Trainer"], None]] = None) -> TrainState:
        """Train until ``settings.steps``; writes the state file at every checkpoint and at the end."""
        s = self.settings
        if self.resumed:
            self.log(f"resumed from {self.state_path} at step {self.state.step}/{s.steps}")
        start_step, t_start = self.state.step, time.perf_counter()
        t_window, window_losses = t_start, []
        bar = _progress_bar(s.steps, self.state.step)
        while self.state.step < s.steps:
            window_losses.append(self.step())
            if bar is not None:
                bar.update(1)
            step = self.state.step
            if step % s.log_every == 0 or step == s.steps:
                now = time.perf_counter()
                loss = float(torch.stack(window_losses).mean())
                rate = len(window_losses) * s.batch_size / max(now - t_window, 1e-9)
                eta = (s.steps - step) * (now - t_start) / max(step - start_step, 1)
                if not math.isfinite(loss):
                    self.log(f"warning: non-finite loss at step {step}")
                self.state.losses.append((step, loss, rate))
                self.log(f"step {step}/{s.steps} loss {loss:.4f} {rate:.1f} img/s eta {_fmt(eta)}")
                t_window, window_losses = now, []
            if step % s.checkpoint_every == 0 or step == s.steps:
                self.save_state()
            if on_step is not None:
                on_step(self)
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
