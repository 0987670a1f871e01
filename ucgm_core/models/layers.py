"""Small building blocks shared by the networks (TiT, U-Net).

Shape letters: B batch, N tokens, D width, H heads, d head dim, C channels.
Conventions follow the original TiT (method doc Sec. 3.1; fixture README "Network conventions").
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Parameter-free RMSNorm over the last dim: ``x / sqrt(mean(x^2) + eps)``.

    Computed in float32 and cast back to the input dtype. Shape: [..., D] -> [..., D].
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; x [B, N, D], shift/scale [B, D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class SwiGLU(nn.Module):
    """SwiGLU FFN with biases: ``w3(silu(a) * b)`` where ``(a, b) = chunk(w12(x), 2)``.

    Shape: [..., D] -> [..., D]; ``hidden`` is the width of a and b.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class GeluMlp(nn.Module):
    """Plain ``fc2(gelu_tanh(fc1(x)))`` FFN (used only when SwiGLU is switched off)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionRoPE2d(nn.Module):
    """EVA-style 2-D rotary embedding for a ``grid x grid`` token map (row-major tokens).

    Buffers ``freqs_cos``/``freqs_sin`` are [N, d] with N = grid^2. The first d/2 dims rotate
    with the row index, the last d/2 with the column index. Per half, the angle of pair j is
    ``pos * theta^(-2j/(d/2))`` for j < d/4, each repeated for the interleaved pair (2j, 2j+1):
    ``(x, y) -> (x cos - y sin, y cos + x sin)``. Applied to [B, H, N, d] tensors.
    """

    def __init__(self, head_dim: int, grid: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs head_dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        inv = 1.0 / theta ** (torch.arange(0, half, 2)[: half // 2].float() / half)
        ang = torch.outer(torch.arange(grid).float(), inv).repeat_interleave(2, dim=-1)  # [g, d/2]
        rows = ang[:, None, :].expand(grid, grid, half)
        cols = ang[None, :, :].expand(grid, grid, half)
        ang2d = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
        self.register_buffer("freqs_cos", ang2d.cos())
        self.register_buffer("freqs_sin", ang2d.sin())

    def forward(self, x: Tensor) -> Tensor:
        pairs = x.unflatten(-1, (-1, 2))
        rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (x * self.freqs_cos + rot * self.freqs_sin).to(x.dtype)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, [grid*grid, dim], tokens row-major over (h, w).

    Channels ``[:dim/2]`` encode the **column** index, ``[dim/2:]`` the row index; each half is
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k/(dim/4))``, k < dim/4.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def half(p: Tensor) -> Tensor:
        out = torch.outer(p.reshape(-1), omega)
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([half(cols), half(rows)], dim=1).float()


def channel_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q^T k / sqrt(C)) v`` over the N positions of channel-major q, k, v ``[B, H, C, N]``
    -> ``[B, H, C, N]``, by :func:`torch.nn.functional.scaled_dot_product_attention` (flash or
    memory-efficient kernels on CUDA; no [N, N] matrix in memory). The U-Nets (EDM2, SongUNet) use it on
    CUDA and keep their originals' explicit einsum on the CPU, where the parity tests compare bits."""
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of raw t (no x1000): ``[cos(t f), sin(t f)]``, cos first.

    ``f_k = exp(-ln(max_period) * k / (dim/2))``, k < dim/2. Shape: [B] -> [B, dim] (float32).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    """t [B] -> MLP(sinusoidal(t)) [B, D]; MLP is ``Linear(freq_dim, D) -> SiLU -> Linear(D, D)``."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """y [B] -> table[y] [B, D]; table has num_classes + 1 rows, row ``num_classes`` is null.

    In train mode each label is replaced by the null label with probability ``dropout_prob``.
    """

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: Tensor) -> Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape, device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class ConditionalNet(nn.Module):
    """Base of the class-conditional networks ``F(x, t, y)``: input checks and guidance.

    Subclasses set ``in_channels``, ``input_size`` and ``num_classes`` and implement
    ``forward(x [B, C, S, S], t [B], y [B] long) -> [B, C_out, S, S]``.
    """

    in_channels: int
    input_size: int
    num_classes: int

    def check_inputs(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Raise ValueError on bad shapes/labels; return t as a float [B] tensor."""
        want = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape [B, {want[0]}, {want[1]}, {want[2]}], got {list(x.shape)}")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape[0] != b or t.numel() != b:
            raise ValueError(f"t must have shape [{b}] (one time per sample), got {list(t.shape)}")
        if y.shape != (b,) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"y must be an integer tensor of shape [{b}], got {y.dtype} {list(y.shape)}")
        if b:
            lo, hi = (int(v) for v in torch.stack(torch.aminmax(y)).tolist())
            if lo < 0 or hi > self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"label {bad} out of range: expected 0..{self.num_classes} ({self.num_classes} is the null label)"
                )
        return t.reshape(b).float()

    def forward_with_cfg(
        self,
        x: Tensor,
        t: Tensor,
        y: Tensor,
        cfg_scale: float,
        cfg_interval: Optional[Sequence[float]] = None,
    ) -> Tensor:
        """Classifier-free guidance on a duplicated batch ``x = [x_c; x_u]``, ``y = [y; null]``.

        Only the first half of x is used. If ``lo <= t[0] <= hi`` (t[0] only; no interval means
        always) both halves are evaluated and ``u + s (c - u)`` is returned for both halves;
        otherwise only the conditional half is evaluated and duplicated. Output [2B, ...].
        """
        if x.shape[0] % 2 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"forward_with_cfg needs an even batch [x; x] with matching y, got x {list(x.shape)}, y {list(y.shape)}"
            )
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        n = x.shape[0] // 2
        half = x[:n]
        t0 = float(t.reshape(-1)[0])
        if cfg_interval is None or cfg_interval[0] <= t0 <= cfg_interval[1]:
            out = self(torch.cat([half, half]), t, y)
            cond, uncond = out.chunk(2)
            guided = uncond + cfg_scale * (cond - uncond)
            return torch.cat([guided, guided])
        out = self(half, t[:n], y[:n])
        return torch.cat([out, out])


def unpatchify(x: Tensor, patch: int, channels: int) -> Tensor:
    """Tokens [B, h*w, p*p*C] (row-major, each token [p, p, C]) -> image [B, C, h*p, w*p]."""
    b, n, _ = x.shape
    h = w = int(round(math.sqrt(n)))
    x = x.reshape(b, h, w, patch, patch, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, channels, h * patch, w * patch)


__all__ = [
    "RMSNorm",
    "modulate",
    "SwiGLU",
    "GeluMlp",
    "VisionRoPE2d",
    "sincos_pos_embed_2d",
    "dit_initialize_",
    "timestep_embedding",
    "channel_sdpa",
    "TimestepEmbedder",
    "LabelEmbedder",
    "ConditionalNet",
    "unpatchify",
]


def dit_initialize_(model: nn.Module) -> None:
    """DiT's initialisation, shared by TiT and SiT: xavier-uniform linears and patch conv (zero bias),
    N(0, 0.02) label and time embeddings, zero adaLN and final layer, the fixed 2-D sin-cos ``pos_embed``.

    ``model`` has ``input_size``, ``patch_size``, ``pos_embed`` [1, N, D], ``x_embedder.proj``,
    ``y_embedder.embedding_table``, ``t_embedder.mlp``, ``blocks[i].adaLN_modulation`` and ``final_layer``.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    grid = model.input_size // model.patch_size
    model.pos_embed.data.copy_(sincos_pos_embed_2d(model.pos_embed.shape[-1], grid).unsqueeze(0))
    w = model.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.x_embedder.proj.bias)
    nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    for block in model.blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    for p in (*model.final_layer.adaLN_modulation[-1].parameters(), *model.final_layer.linear.parameters()):
        nn.init.zeros_(p)
