"""TiT, the UCGM transformer backbone (method doc Sec. 3.1).

A DiT with adaLN-Zero blocks, parameter-free RMSNorm, QK-norm, SwiGLU, 2-D RoPE and a fixed
2-D sin-cos position embedding. Constructor arguments and state_dict names/shapes match the
original, so released UCGM checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import (
    dit_initialize_,
    ConditionalNet,
    GeluMlp,
    LabelEmbedder,
    RMSNorm,
    SwiGLU,
    TimestepEmbedder,
    VisionRoPE2d,
    modulate,
    unpatchify,
)


class _LayerNormNoAffine(nn.Module):
    """Weightless LayerNorm over the last dim (used when ``use_rmsnorm=False``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def make_norm(use_rmsnorm: bool) -> nn.Module:
    """Weightless RMSNorm (default) or weightless LayerNorm, both eps 1e-6."""
    return RMSNorm(1e-6) if use_rmsnorm else _LayerNormNoAffine()


class PatchEmbed(nn.Module):
    """[B, C, S, S] -> [B, (S/p)^2, D] with a stride-p conv ``proj``; tokens row-major."""

    def __init__(self, patch: int, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """MHSA: qkv (bias) -> [B, N, 3, H, d]; q, k <- RoPE(RMSNorm(q, k)); SDPA (scale d^-1/2)."""

    def __init__(self, dim: int, num_heads: int, use_qknorm: bool = True, use_rmsnorm: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = make_norm(use_rmsnorm) if use_qknorm else nn.Identity()
        self.k_norm = make_norm(use_rmsnorm) if use_qknorm else nn.Identity()

    def forward(self, x: Tensor, rope: nn.Module) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = rope(self.q_norm(q)), rope(self.k_norm(k))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TiTBlock(nn.Module):
    """adaLN-Zero block; ``Linear(SiLU(c))`` gives (shift, scale, gate) for attention and FFN.

    x <- x + g_a * Attn(modulate(norm(x), sh_a, sc_a));  x <- x + g_m * FFN(modulate(norm(x), sh_m, sc_m)).
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_hidden: int, use_qknorm: bool, use_swiglu: bool, use_rmsnorm: bool
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(use_rmsnorm)
        self.attn = Attention(dim, num_heads, use_qknorm, use_rmsnorm)
        self.norm2 = make_norm(use_rmsnorm)
        self.mlp = SwiGLU(dim, mlp_hidden) if use_swiglu else GeluMlp(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: nn.Module) -> Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh_a, sc_a), rope)
        return x + g_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


class FinalLayer(nn.Module):
    """[B, N, D] -> [B, N, p*p*C_out]: ``linear(modulate(norm(x), shift, scale))``."""

    def __init__(self, dim: int, patch: int, out_channels: int, use_rmsnorm: bool) -> None:
        super().__init__()
        self.norm_final = make_norm(use_rmsnorm)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TiT(ConditionalNet):
    """TiT velocity network ``F(x, t, y)``: x [B, C, S, S], t [B] raw in [0, 1], y [B] in 0..K.

    Label K = ``num_classes`` is the null (unconditional) label. Output [B, C_out, S, S] with
    C_out = 2C if ``learn_sigma`` else C.
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.0,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        use_qknorm: bool = True,
        use_swiglu: bool = True,
        use_rope: bool = True,
        use_rmsnorm: bool = True,
        wo_shift: bool = False,
    ) -> None:
        super().__init__()
        if wo_shift:
            raise NotImplementedError("wo_shift=True is not implemented (all UCGM configs use the default False)")
        if input_size % patch_size or hidden_size % num_heads:
            raise ValueError(
                f"need input_size % patch_size == 0 and hidden_size % num_heads == 0, got "
                f"input_size={input_size}, patch_size={patch_size}, hidden_size={hidden_size}, num_heads={num_heads}"
            )
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.patch_size, self.num_heads = patch_size, num_heads
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        grid = input_size // patch_size
        mlp_hidden = int(2 / 3 * mlp_ratio * hidden_size) if use_swiglu else int(mlp_ratio * hidden_size)

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size), requires_grad=False)
        self.feat_rope = VisionRoPE2d(hidden_size // num_heads, grid) if use_rope else nn.Identity()
        self.blocks = nn.ModuleList(
            TiTBlock(hidden_size, num_heads, mlp_hidden, use_qknorm, use_swiglu, use_rmsnorm) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, use_rmsnorm)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official init: xavier-uniform linears (zero bias), adaLN and final layer zero, N(0, .02) embeddings."""
        dit_initialize_(self)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        t = self.check_inputs(x, t, y)
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c, self.feat_rope)
        return unpatchify(self.final_layer(h, c), self.patch_size, self.out_channels)


def _cfg(depth: int, hidden_size: int, num_heads: int, patch_size: int) -> Dict[str, int]:
    return dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=patch_size)


# Official sizes (original ``TiT_models``): depth / width / heads per family, patch per entry.
_FAMILIES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
    "1p0B": (24, 1536, 24),
    "1p6B": (28, 1792, 28),
}
_PATCHES = {"S": (1, 2), "B": (1, 2), "L": (2,), "XL": (1, 2, 4), "1p0B": (1, 2), "1p6B": (1, 2)}
TIT_CONFIGS: Dict[str, Dict[str, int]] = {
    f"TiT-{fam}/{p}": _cfg(*_FAMILIES[fam], p) for fam, patches in _PATCHES.items() for p in patches
}
