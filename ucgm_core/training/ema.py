"""Exponential moving averages of model weights.

Two averages appear in UCGM-T (method doc, Sec. 1.2):

* :class:`EMA` - the *evaluation* average (``train.ema_decay``: 0.9999 training, 0.99 tuning),
  updated after every optimizer step; samples and FID always use it. As in the original it starts
  as a copy of the weights the run starts from (``init="initial"``): after step 1 it is
  ``d * W_0 + (1 - d) * W_1``. ``init="first_step"`` instead copies the weights after the first
  optimizer step (``W_1``), then decays.
* the *teacher* average inside the objective (see :mod:`ucgm_core.training.teacher`), with its
  own warm-up schedule (:func:`teacher_decay_schedule`).

Both update parameters in place with ``p_avg <- d * p_avg + (1 - d) * p`` (one fused foreach
call) and copy buffers verbatim.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def ema_update_(average: nn.Module, source: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * source, parameters only; buffers copied."""
    avg_params = list(average.parameters())
    src_params = list(unwrap(source).parameters())
    if len(avg_params) != len(src_params):
        raise ValueError(f"EMA update: the average has {len(avg_params)} parameters, the model {len(src_params)}")
    if decay == 0.0:
        torch._foreach_copy_(avg_params, src_params)
    else:
        torch._foreach_lerp_(avg_params, src_params, 1.0 - decay)
    for b_avg, b_src in zip(average.buffers(), unwrap(source).buffers()):
        b_avg.copy_(b_src)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (unwrapped) with gradients off."""
    clone = copy.deepcopy(unwrap(model))
    clone.requires_grad_(False)
    return clone


EMA_INITS = ("initial", "first_step")


class EMA:
    """Evaluation EMA with exact resume.

    Args:
        model: the online model (wrappers are stripped); the average starts as its copy.
        decay: per-step decay, e.g. 0.9999.
        init: ``"initial"`` (default, the original): every update, the first included, decays the
            copy of the starting weights, so after step 1 the average is ``decay * W_0 +
            (1 - decay) * W_1``. ``"first_step"``: the first update copies the weights (decay 0),
            the average after step 1 is ``W_1``.
    """

    def __init__(self, model: nn.Module, decay: float, init: str = "initial"):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if init not in EMA_INITS:
            raise ValueError(f"EMA init {init!r} is unknown; expected one of {EMA_INITS}")
        self.decay = float(decay)
        self.init = init
        self.module = frozen_copy(model).eval()
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        decay = 0.0 if (self.init == "first_step" and self.updates == 0) else self.decay
        ema_update_(self.module, model, decay)
        self.updates += 1

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates, "init": self.init}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.decay = float(state.get("decay", self.decay))
        self.updates = int(state.get("updates", 1))  # ``init`` stays the constructor's: it only acts on update 1


def teacher_decay_schedule(previous: float, target: float) -> float:
    """Warm-up of the teacher EMA decay: d_{k+1} = d_k + (1 - d_k)(delta - d_k) / 2, d_1 = 0.

    Values for delta = 0.999: 0, 0.4995, 0.6245, 0.6948, ..., 0.9807 (k=100), -> 0.999.
    """
    return previous + 0.5 * (1.0 - previous) * (target - previous)
