"""Optimizers and gradient hygiene of the UCGM-T outer loop (method doc, Sec. 1.2 "Outer loop").

Per step: zero_grad -> backward -> optional clip (``max_grad_norm``) -> NaN/Inf gradients zeroed
in place -> optimizer step -> evaluation-EMA update. Constant learning rate, no warm-up.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import torch
from torch import nn

OPTIMIZERS = {
    # the original's AdamW writes the decoupled decay inside the step; at weight_decay 0 (every
    # shipped config) it equals torch's AdamW / Adam
    "AdamW": torch.optim.AdamW,
    "Adam": torch.optim.Adam,
    "RAdam": torch.optim.RAdam,
}


def build_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.type={name!r} is unknown; expected one of {sorted(OPTIMIZERS)}")
    if lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {lr}")
    return OPTIMIZERS[name]([p for p in params if p.requires_grad], lr=lr, betas=tuple(betas),
                            weight_decay=weight_decay)


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
