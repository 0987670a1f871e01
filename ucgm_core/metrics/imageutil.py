"""Image quantisation and file helpers shared by the metrics modules.

The quantisation follows the original evaluation code: images in [0, 1] are multiplied by 255 and
*truncated* to uint8 (``.to(torch.uint8)`` without rounding), so 0.999 maps to 254, not 255.
"""

from __future__ import annotations

import torch

from ..io import atomic_torch_save, atomic_write, sha256_file, to_uint8

__all__ = ["to_uint8", "ensure_rgb_uint8", "sha256_file", "atomic_write", "atomic_torch_save"]


def ensure_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """Return a uint8 image tensor ([3,H,W] or [N,3,H,W]); grey images are repeated to 3 channels.

    Float input is quantised with :func:`to_uint8`. A [H,W] image is treated as grey.
    """
    x = to_uint8(x)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    cdim = x.dim() - 3
    if x.dim() not in (3, 4):
        raise ValueError(f"expected an image [C,H,W] or a batch [N,C,H,W], got shape {tuple(x.shape)}")
    c = x.shape[cdim]
    if c == 3:
        return x
    if c == 1:
        reps = [1] * x.dim()
        reps[cdim] = 3
        return x.repeat(*reps)
    raise ValueError(f"expected 1 or 3 channels, got {c} (shape {tuple(x.shape)})")
