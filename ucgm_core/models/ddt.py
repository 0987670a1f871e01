"""DDT, the decoupled diffusion transformer (MCG-NJU/DDT), released XL/2, and its converter.

Written from the documented facts (fixture README, section 4). Parameter names and shapes equal
the original's (minus the ``ema_denoiser.`` prefix of the Lightning checkpoint).

Structure: an encoder (blocks 0..E-1) on ``s_embedder(patches)`` conditioned on
c = silu(t_emb + y_emb) [B, 1, D]; then s = silu(t_emb + s) [B, N, D]; a decoder (blocks E..L-1)
on ``x_embedder(patches)`` and the final layer, both modulated **per token** by s. Patches are
channel-major (``F.unfold``). Time convention ``ReLinear``: t = 0 is noise, output x - eps.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convert import CheckpointError, check_layout, pick_weights, read_blob, strip_prefixes
from .layers import ConditionalNet, LabelEmbedder, timestep_embedding
from .lightningdit import WeightedRMSNorm, expected_layout
from .spec import ModelSpec


def ddt_rope(head_dim: int, h: int, w: int, theta: float = 10000.0) -> tuple:
    """DDT's 2-D RoPE table as (cos, sin), each [h*w, head_dim/2] (one angle per consecutive pair).

    Frequency k < head_dim/4 is ``theta^(-4k/head_dim)``; pair 2k rotates with the x (column)
    position and pair 2k+1 with the y (row) position. Positions are ``linspace(0, 16, w)`` and
    ``linspace(0, 16, h)`` whatever the grid; tokens are row-major.
    """
    freqs = theta ** (-4 * torch.arange(head_dim // 4, dtype=torch.float32) / head_dim)
    ys, xs = torch.meshgrid(torch.linspace(0, 16, h), torch.linspace(0, 16, w), indexing="ij")
    ang = torch.stack([xs.reshape(-1, 1) * freqs, ys.reshape(-1, 1) * freqs], dim=-1).flatten(1)
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive pairs of x [B, H, N, d] by angles with cos/sin [N, d/2] (float32 math)."""
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).type_as(x)


class Embed(nn.Module):
    """Patch vectors [B, N, C*p*p] -> [B, N, D] with a Linear ``proj``."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class DDTTimestepEmbedder(nn.Module):
    """t [B] -> ``mlp(sinusoidal(t, max_period=10))`` [B, D]; mlp = Linear(256, D), SiLU, Linear(D, D)."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim, max_period=10.0).to(self.mlp[0].weight.dtype))


class DDTAttention(nn.Module):
    """MHSA on [B, N, D]: qkv (no bias), RMSNorm(weight) on q and k per head, RoPE, SDPA, proj (bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = WeightedRMSNorm(dim // num_heads)
        self.k_norm = WeightedRMSNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DDTSwiGLU(nn.Module):
    """Bias-free SwiGLU: ``w2(silu(w1 x) * w3 x)``; [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DDTBlock(nn.Module):
    """adaLN block; ``adaLN_modulation = [Linear(D, 6D)]`` (no SiLU) of c [B, 1, D] or [B, N, D].

    x <- x + g_a Attn(norm1(x) (1 + sc_a) + sh_a); x <- x + g_m FFN(norm2(x) (1 + sc_m) + sh_m).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = WeightedRMSNorm(dim)
        self.attn = DDTAttention(dim, num_heads)
        self.norm2 = WeightedRMSNorm(dim)
        self.mlp = DDTSwiGLU(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: tuple) -> Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g_a * self.attn(self.norm1(x) * (1 + sc_a) + sh_a, rope)
        return x + g_m * self.mlp(self.norm2(x) * (1 + sc_m) + sh_m)


class DDTFinalLayer(nn.Module):
    """[B, N, D] -> [B, N, C*p*p]: ``linear(LayerNorm(x) (1 + scale) + shift)``, modulation from s [B, N, D]."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(s).chunk(2, dim=-1)
        return self.linear(F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift)


class DDT(ConditionalNet):
    """DDT velocity network: x [B, C, S, S], t [B] raw in [0, 1] (0 = noise), y [B] in 0..K -> x - eps.

    ``num_groups`` is the number of attention heads. ``input_size`` only fixes the accepted input
    size (no parameter depends on it, so 256 px and 512 px checkpoints share one layout).
    Guidance (inherited ``forward_with_cfg``) takes UCGM's [cond; null] batch on all channels.
    """

    def __init__(
        self,
        input_size: int = 32,
        in_channels: int = 4,
        num_groups: int = 16,
        hidden_size: int = 1152,
        num_blocks: int = 28,
        num_encoder_blocks: int = 22,
        patch_size: int = 2,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if input_size % patch_size or hidden_size % num_groups or (hidden_size // num_groups) % 4:
            raise ValueError(
                f"need input_size % patch_size == 0 and head_dim = hidden_size / num_groups divisible by 4, got "
                f"input_size={input_size}, patch_size={patch_size}, hidden_size={hidden_size}, num_groups={num_groups}"
            )
        if not 0 <= num_encoder_blocks <= num_blocks:
            raise ValueError(f"need 0 <= num_encoder_blocks <= num_blocks, got {num_encoder_blocks}, {num_blocks}")
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.patch_size, self.num_heads, self.num_encoder_blocks = patch_size, num_groups, num_encoder_blocks
        patch_dim = in_channels * patch_size**2
        self.x_embedder = Embed(patch_dim, hidden_size)
        self.s_embedder = Embed(patch_dim, hidden_size)
        self.t_embedder = DDTTimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.final_layer = DDTFinalLayer(hidden_size, patch_dim)
        mlp_hidden = int(2 * 4 * hidden_size / 3)
        self.blocks = nn.ModuleList(DDTBlock(hidden_size, num_groups, mlp_hidden) for _ in range(num_blocks))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x [B, C, S, S], t [B], y [B] long -> velocity x - eps [B, C, S, S]."""
        t = self.check_inputs(x, t, y)
        b, _, h, w = x.shape
        p = self.patch_size
        cos, sin = ddt_rope(self.blocks[0].attn.qkv.in_features // self.num_heads, h // p, w // p)
        rope = (cos.to(x.device), sin.to(x.device))
        patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # [B, N, C*p*p], channel-major
        t_emb = self.t_embedder(t).unsqueeze(1)  # [B, 1, D]
        c = F.silu(t_emb + self.y_embedder(y).unsqueeze(1))
        s = self.s_embedder(patches)
        for block in self.blocks[: self.num_encoder_blocks]:
            s = block(s, c, rope)
        s = F.silu(t_emb + s)  # per-token condition [B, N, D]
        h_tok = self.x_embedder(patches)
        for block in self.blocks[self.num_encoder_blocks :]:
            h_tok = block(h_tok, s, rope)
        out = self.final_layer(h_tok, s)
        return F.fold(out.transpose(1, 2), (h, w), kernel_size=p, stride=p)


# Released DDT-XL/2 (SD-VAE-ft-ema f8c4; 256 px -> 32x32x4, 512 px -> 64x64x4).
DDT_XL2 = dict(num_groups=16, hidden_size=1152, num_blocks=28, num_encoder_blocks=22, patch_size=2)
DDT_MODELS = {"DDT-XL/2": ModelSpec(DDT, dict(DDT_XL2), transport="ReLinear")}

# Lightning checkpoint prefixes: EMA weights first, the raw copy as a fallback. Everything else in the
# file (``diffusion_trainer.*``: the REPA projector, ...) is not used for sampling and is dropped.
DDT_WEIGHT_PREFIXES = ("ema_denoiser.", "denoiser.")


def convert_ddt_checkpoint(path_or_state: Union[str, os.PathLike, Mapping[str, Any]], **model_kwargs: Any) -> dict:
    """A released DDT Lightning checkpoint (or a UCGM-converted/bare state_dict) -> state_dict of :class:`DDT`.

    Takes ``['ema']``/``['state_dict']``/the bare dict; then keeps only ``ema_denoiser.*`` (else
    ``denoiser.*``) with the prefix stripped, strips ``module.``/``_orig_mod.``, and checks every key
    and shape against ``DDT(**model_kwargs)`` (default XL/2). Raises :class:`CheckpointError`
    naming the file and offending keys.
    """
    blob, source = read_blob(path_or_state)
    state = pick_weights(blob, source=source)
    for prefix in DDT_WEIGHT_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = strip_prefixes(state)
    kwargs = {"input_size": 32, "in_channels": 4, "num_classes": 1000, **DDT_XL2, **model_kwargs}
    check_layout(state, expected_layout(DDT, **kwargs), source=source)
    return state


__all__ = ["DDT", "DDT_MODELS", "convert_ddt_checkpoint", "ddt_rope", "apply_rope", "CheckpointError"]
