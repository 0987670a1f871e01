"""The network of the toy miniatures: a small MLP F_theta(x_t, t, y) for 2-D points.

It follows the interface of the project's networks (``model(x_t, t [B], y=labels) -> F``, the null label
is ``num_classes``), so the real UCGM-T objective (``ucgm_core.training.objective``) trains it and the real
UCGM-S (``ucgm_core.sampling.ucgm_sample``) samples it unchanged. Points travel as ``[B, 2, 1, 1]``: two
"channels" at one "pixel", the layout the objective's per-sample reductions expect.

Conditioning: the time through fixed Fourier features (16 frequencies 2^0 .. 2^3.75 times pi, plus t
itself); the label through a learned embedding with one extra row for the null label. There is no lambda
input: every lambda gets its own model, as in the paper's ablation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_FREQUENCIES = 16
LABEL_DIM = 32


class ToyMLP(nn.Module):
    """MLP over [x, Fourier(t), embed(y)] with ``depth`` hidden SiLU layers of ``width`` units."""

    def __init__(self, num_classes: int, width: int = 128, depth: int = 3):
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"ToyMLP: num_classes={num_classes}, width={width}, depth={depth}; expected positive integers"
            )
        self.num_classes = int(num_classes)
        freqs = math.pi * 2.0 ** (torch.arange(TIME_FREQUENCIES, dtype=torch.float32) / 4.0)
        self.register_buffer("freqs", freqs, persistent=False)
        self.label_embed = nn.Embedding(num_classes + 1, LABEL_DIM)
        layers: list[nn.Module] = [nn.Linear(2 + 1 + 2 * TIME_FREQUENCIES + LABEL_DIM, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """F for points ``x`` [B, 2, 1, 1] (or [B, 2]) at network times ``t`` [B] with labels ``y`` [B]."""
        shape = x.shape
        flat = x.reshape(shape[0], 2)
        t = t.reshape(-1).to(flat.dtype)
        if t.numel() == 1:
            t = t.expand(shape[0])
        if y is None:  # no label given: the null label (unconditional)
            y = torch.full((shape[0],), self.num_classes, dtype=torch.int64, device=x.device)
        angles = t[:, None] * self.freqs[None, :]
        features = torch.cat([flat, t[:, None], torch.sin(angles), torch.cos(angles), self.label_embed(y)], dim=1)
        return self.net(features).reshape(shape)


__all__ = ["ToyMLP"]
