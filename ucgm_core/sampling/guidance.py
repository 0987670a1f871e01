"""Classifier-free guidance as a sampler ``network`` (method doc, Sec. 2, "Classifier-free guidance").

The original runs the whole sampler on the doubled batch ``[z; z]`` with labels
``[y; null]`` and keeps the first half of the result. The model's ``forward_with_cfg`` returns
the guided output F_u + w (F_c - F_u) (or, outside the interval, the conditional output) copied
to both halves, so both halves of the state stay identical. Here the sampler keeps only the
B real images and the doubling happens inside the network call, which gives the same first half
at half the state cost.

The interval test belongs to the model: it compares the **model-native** time (``1 - t`` for
ReLinear) of the first batch element with ``cfg_interval``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .common import Network


def guided(
    model: nn.Module,
    labels: Tensor,
    null_label: int,
    cfg_scale: float = 0.0,
    cfg_interval: Optional[Sequence[float]] = None,
) -> Network:
    """Bind labels (and guidance) to ``model`` and return a sampler network ``(x, t_native) -> F``.

    Args:
        model: called as ``model(x, t, labels)``; with guidance, ``model.forward_with_cfg(x2, t2,
            y2, cfg_scale, cfg_interval)`` on the doubled batch.
        labels: [B] class labels of the images being sampled.
        null_label: the unconditional class index (``num_classes``).
        cfg_scale: w; guidance is used only when w > 0, as in the original.
        cfg_interval: [lo, hi] in model-native time, passed through to ``forward_with_cfg``.

    Returns:
        ``network(x [B, ...], t_native [B]) -> F [B, ...]``.
    """
    if cfg_scale > 0:
        null = torch.full_like(labels, null_label)
        y2 = torch.cat([labels, null])

        def network(x: Tensor, t: Tensor) -> Tensor:
            batch = x.shape[0]
            x2 = torch.cat([x, x])
            t2 = torch.cat([t, t])
            out = model.forward_with_cfg(x2, t2, y2.to(x.device), cfg_scale, cfg_interval)
            return out[:batch]

    else:

        def network(x: Tensor, t: Tensor) -> Tensor:
            return model(x, t, labels.to(x.device))

    return network


__all__ = ["guided"]
