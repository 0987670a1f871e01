"""The teacher / target network theta^- of UCGM-T (method doc, Sec. 1.2 step 7).

As in the original, the objective advances it at every step whenever lambda != 0 or zeta != 0,
even where only lambda != 0 and nothing evaluates it (the consistency term uses the online
weights): its weights and warm-up decay are then still part of the saved state, as the original's
checkpoint holds them. With lambda = zeta = 0 it is never built.

Its behaviour is set by ``ema_decay_rate`` delta:

* ``0 < delta < 1``: an EMA of the online weights, updated at every step *before* it is used,
  with the warm-up d_1 = 0, d_{k+1} = d_k + (1 - d_k)(delta - d_k)/2. Unlike the original, the
  current decay is part of :meth:`Teacher.state_dict`, so the warm-up survives a resume.
* ``delta == 1``: a frozen copy taken at the first step (or preset, e.g. the pretrained
  multi-step model when it differs from the starting weights).
* ``delta == 0``: the online model itself.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from torch import nn

from .ema import ema_update_, frozen_copy, teacher_decay_schedule, unwrap


class Teacher:
    def __init__(self, decay_rate: float):
        if not 0.0 <= decay_rate <= 1.0:
            raise ValueError(f"transport.ema_decay_rate must lie in [0, 1], got {decay_rate}")
        self.decay_rate = float(decay_rate)
        self.module: Optional[nn.Module] = None
        self.current_decay = 0.0  # the original's `cmd`

    @property
    def mode(self) -> str:
        if self.decay_rate == 0.0:
            return "online"
        if self.decay_rate == 1.0:
            return "frozen"
        return "ema"

    def preset(self, module: nn.Module) -> None:
        """Use ``module``'s weights as the teacher (a resumed teacher or a separate checkpoint)."""
        self.module = frozen_copy(module)

    def step(self, online: nn.Module) -> nn.Module:
        """Advance the teacher by one training step and return the network to evaluate."""
        online = unwrap(online)
        if self.mode == "online":
            return online
        if self.module is None:
            self.module = frozen_copy(online)
        if self.mode == "ema":
            ema_update_(self.module, online, self.current_decay)
            self.current_decay = teacher_decay_schedule(self.current_decay, self.decay_rate)
        self.module.train(online.training)  # stochastic layers behave as in the online forward
        return self.module

    def state_dict(self) -> Dict[str, Any]:
        return {
            "decay_rate": self.decay_rate,
            "current_decay": self.current_decay,
            "module": None if self.module is None else self.module.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any], template: nn.Module) -> None:
        """Restore; ``template`` (the online model) gives the architecture for the weights."""
        self.current_decay = float(state["current_decay"])
        if state.get("module") is not None and self.mode != "online":
            self.module = frozen_copy(template)
            self.module.load_state_dict(state["module"])
