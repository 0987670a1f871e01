"""Optimizers and gradient hygiene of the UCGM-T outer loop (method doc, Sec. 1.2 "Outer loop").

Per step: zero_grad -> backward -> optional clip (``max_grad_norm``) -> NaN/Inf gradients zeroed
in place -> optimizer step -> evaluation-EMA update. The learning rate is constant, as in the original,
unless ``train.lr_schedule`` sets one (:mod:`.lr_schedule`).

``train.optimizer`` names (the original's ``optimizer.type`` where it has one):

* ``AdamW``: the original's own AdamW (:class:`OriginalAdamW`). It is *not* torch's AdamW, even
  at weight decay 0: its eps is added to sqrt(v) before the second moment's bias correction, so
  the effective eps at step k is eps / sqrt(1 - beta2^k) (at step 1: 4.5x torch's for
  beta2 = 0.95, 10x for 0.99), and its decoupled decay is scaled by the bias-corrected step size
  lr * sqrt(1 - beta2^k) / (1 - beta1^k), not by lr.
* ``TorchAdamW``: ``torch.optim.AdamW`` (eps after the bias correction, decay ``lr * wd``).
* ``Adam``, ``RAdam``: torch's, as in the original.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn


class OriginalAdamW(torch.optim.Optimizer):
    """The UCGM original's AdamW, written from its update rule. Per parameter, at its step k:

        m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
        p <- p - lr * sqrt(1 - beta2^k) / (1 - beta1^k) * (wd * p + m / (sqrt(v) + eps))

    i.e. p <- p - lr * m_hat / (sqrt(v_hat) + eps / sqrt(1 - beta2^k)) - lr * wd * p * sqrt(1 - beta2^k) / (1 - beta1^k).
    A parameter without a gradient is skipped and its k does not advance (as in torch).
    The state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter) resumes exactly.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            # parameters grouped by their own step count (one step size, one set of foreach calls)
            by_step: Dict[int, List[Tuple[Tensor, Tensor, Tensor, Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("OriginalAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1
                by_step.setdefault(state["step"], []).append((p, p.grad, state["exp_avg"], state["exp_avg_sq"]))
            for k, items in by_step.items():
                step_size = lr * math.sqrt(1.0 - beta2**k) / (1.0 - beta1**k)
                if all(item[0].is_cuda for item in items):  # one multi-tensor kernel per operation
                    _update_foreach(*(list(t) for t in zip(*items)), beta1, beta2, eps, wd, step_size)
                else:  # on the CPU a loop with one scratch tensor is faster than the foreach fallback
                    for p, g, m, v in items:
                        _update_one(p, g, m, v, beta1, beta2, eps, wd, step_size)
        return loss


def _update_one(
    p: Tensor, g: Tensor, m: Tensor, v: Tensor, beta1: float, beta2: float, eps: float, wd: float, step_size: float
) -> None:
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    scratch = v.sqrt().add_(eps)  # eps before the bias correction of v (folded into step_size)
    if wd != 0.0:
        update = torch.mul(p, wd).addcdiv_(m, scratch)
    else:
        update = torch.div(m, scratch, out=scratch)
    p.add_(update, alpha=-step_size)


def _update_foreach(
    ps: List[Tensor],
    gs: List[Tensor],
    ms: List[Tensor],
    vs: List[Tensor],
    beta1: float,
    beta2: float,
    eps: float,
    wd: float,
    step_size: float,
) -> None:
    """The same arithmetic as :func:`_update_one`, operation by operation, over lists of tensors."""
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, gs, alpha=1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_add_(denom, eps)
    if wd != 0.0:
        update = torch._foreach_mul(ps, wd)
        torch._foreach_addcdiv_(update, ms, denom)
    else:
        update = torch._foreach_div(ms, denom)
    torch._foreach_add_(ps, update, alpha=-step_size)


OPTIMIZERS = {
    "AdamW": OriginalAdamW,  # the original's `AdamW` (every paper multi-step config)
    "TorchAdamW": torch.optim.AdamW,
    "Adam": torch.optim.Adam,
    "RAdam": torch.optim.RAdam,
}


#: torch optimizers with a fused (single-kernel) CUDA implementation; RAdam has none (its default on
#: CUDA is already the multi-tensor ``foreach`` path), the original's AdamW batches itself (foreach).
FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


def build_optimizer(
    params: Iterable[nn.Parameter],
    name: str,
    lr: float,
    betas=(0.9, 0.999),
    weight_decay: float = 0.0,
    fused: Optional[bool] = None,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over the trainable ``params``.

    ``fused``: None (default) uses torch's fused kernel (``fused=True``) for ``TorchAdamW`` and ``Adam``
    when every parameter is a floating-point CUDA tensor, and the default path otherwise (the CPU, and
    optimizers without a fused kernel); False never fuses; True insists (an error where torch has none).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.type={name!r} is unknown; expected one of {sorted(OPTIMIZERS)}")
    if lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {lr}")
    params = [p for p in params if p.requires_grad]
    cls = OPTIMIZERS[name]
    kwargs = {}
    if fused is None:
        fused = cls in FUSED_OPTIMIZERS and bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    elif fused and cls not in FUSED_OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} has no fused implementation in torch")
    if fused:
        kwargs["fused"] = True
    return cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimizer's implementation choice (``fused``,
    ``foreach``): a state written on a GPU with fused kernels resumes on a CPU and vice versa (torch's
    loader would otherwise take those flags from the file)."""
    keep = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, keep):
        group.update(flags)


@torch.no_grad()
def scrub_nonfinite_grads_(params: Iterable[nn.Parameter]) -> bool:
    """Zero NaN/Inf gradient entries in place; returns True when any were found.

    One fused finiteness check over all gradients; the per-tensor scrub only runs when it fails.
    """
    grads: List[torch.Tensor] = [p.grad for p in params if p.grad is not None]
    if not grads:
        return False
    norms = torch._foreach_norm(grads)
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return False
    for g in grads:
        torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
    return True


def clip_gradients_(params: Iterable[nn.Parameter], max_norm: Optional[float]) -> Optional[float]:
    """Clip the global gradient norm when ``max_norm`` is set; returns the pre-clip norm."""
    if max_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm))
