"""LightningDiT (hustvl/LightningDiT), with the flags of the released XL/1 model, and its converter.

Written from the documented facts (fixture README, section 3). Module and parameter names and
shapes equal the original's, so a released checkpoint loads after :func:`convert_lightningdit_checkpoint`
(EMA pick, prefix strip, layout check) with ``strict=True``.

Differences from TiT: RMSNorm has a learned ``weight``, no QK-norm, SwiGLU/RoPE/RMSNorm are the
released flags, label dropout 0.1 in train mode. Time convention ``ReLinear``: t = 0 is noise,
x_t = t x + (1 - t) eps, output x - eps. Shape letters: B batch, N tokens, D width, C channels.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .convert import check_layout, pick_weights, read_blob, strip_prefixes
from .layers import (
    ConditionalNet,
    LabelEmbedder,
    SwiGLU,
    TimestepEmbedder,
    VisionRoPE2d,
    modulate,
    sincos_pos_embed_2d,
    unpatchify,
)
from .spec import ModelSpec
from .tit import Attention, PatchEmbed


class WeightedRMSNorm(nn.Module):
    """RMSNorm with a learned ``weight`` [D]: ``(x / sqrt(mean(x^2) + eps))`` in float32, cast back, ``* weight``.

    Shape: [..., D] -> [..., D]. Shared with DDT (same formula, same key name).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LightningDiTBlock(nn.Module):
    """adaLN-Zero block; ``adaLN_modulation = [SiLU, Linear(D, 6D)]`` of c [B, D].

    x <- x + g_a Attn(modulate(norm1(x))); x <- x + g_m SwiGLU(modulate(norm2(x))); x [B, N, D].
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = WeightedRMSNorm(dim)  # registration order = the original's state_dict order
        self.norm2 = WeightedRMSNorm(dim)
        self.attn = Attention(dim, num_heads, use_qknorm=False)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: nn.Module) -> Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh_a, sc_a), rope)
        return x + g_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


class LightningDiTFinalLayer(nn.Module):
    """[B, N, D] -> [B, N, p*p*C]: ``linear(modulate(norm_final(x), shift, scale))``, c [B, D]."""

    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = WeightedRMSNorm(dim)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class LightningDiT(ConditionalNet):
    """LightningDiT velocity network: x [B, C, S, S], t [B] raw in [0, 1] (0 = noise), y [B] in 0..K.

    Returns x - eps, [B, C, S, S]. Label K = ``num_classes`` is the null label. Only the released
    flags (SwiGLU, RoPE, RMSNorm, no QK-norm, shift on, no learned sigma) are implemented.
    """

    def __init__(
        self,
        input_size: int = 16,
        patch_size: int = 1,
        in_channels: int = 32,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if input_size % patch_size or hidden_size % num_heads:
            raise ValueError(
                f"need input_size % patch_size == 0 and hidden_size % num_heads == 0, got input_size={input_size}, "
                f"patch_size={patch_size}, hidden_size={hidden_size}, num_heads={num_heads}"
            )
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.patch_size, self.out_channels = patch_size, in_channels
        grid = input_size // patch_size
        mlp_hidden = int(2 * int(hidden_size * mlp_ratio) / 3)  # SwiGLU: 2/3 of the MLP width (3072 for XL)

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(hidden_size, grid).unsqueeze(0), requires_grad=False)
        self.feat_rope = VisionRoPE2d(hidden_size // num_heads, grid)
        self.blocks = nn.ModuleList(LightningDiTBlock(hidden_size, num_heads, mlp_hidden) for _ in range(depth))
        self.final_layer = LightningDiTFinalLayer(hidden_size, patch_size, self.out_channels)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x [B, C, S, S], t [B], y [B] long -> velocity x - eps [B, C, S, S]."""
        t = self.check_inputs(x, t, y)
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c, self.feat_rope)
        return unpatchify(self.final_layer(h, c), self.patch_size, self.out_channels)

    def forward_with_cfg(
        self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float, cfg_interval: Optional[Sequence[float]] = None
    ) -> Tensor:
        """Guidance on ``x = [x_c; x_u]`` [2B, C, S, S], ``y = [y; null]``, as UCGM's port does it.

        Inside ``lo <= t[0] <= hi`` (model-native t; no interval = always): both halves of
        ``[x_c; x_c]`` are evaluated, and **only channels 0-2** become ``u + w (c - u)`` (in both
        halves); channels 3+ keep each row's own output (cond rows first, null rows second).
        Outside: the conditional half alone, duplicated. Output [2B, C, S, S].
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
        if cfg_interval is not None and not cfg_interval[0] <= t0 <= cfg_interval[1]:
            out = self(half, t[:n], y[:n])
            return torch.cat([out, out])
        out = self(torch.cat([half, half]), t, y)
        cond, uncond = out[:, :3].chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), out[:, 3:]], dim=1)


# Released XL/1 (VA-VAE f16d32 latents, 256 px -> 16x16x32).
LIGHTNINGDIT_XL1 = dict(patch_size=1, hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1)
LIGHTNINGDIT_MODELS = {"LightningDiT-XL/1": ModelSpec(LightningDiT, dict(LIGHTNINGDIT_XL1), transport="ReLinear")}


def expected_layout(model_cls: type, **kwargs: Any) -> dict:
    """``{key: shape}`` of ``model_cls(**kwargs)``'s state_dict, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = model_cls(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_lightningdit_checkpoint(
    path_or_state: Union[str, os.PathLike, Mapping[str, Any]], **model_kwargs: Any
) -> dict:
    """A released (or UCGM-converted) LightningDiT checkpoint -> state_dict of :class:`LightningDiT`.

    Takes ``['ema']`` first (then ``model``/``state_dict``/the bare dict), strips ``module.`` /
    ``_orig_mod.``, and checks every key and shape against ``LightningDiT(**model_kwargs)``
    (default: XL/1 at input_size 16, 32 channels, 1000 classes). The release has no
    sampling-irrelevant keys. Raises :class:`CheckpointError` naming the file and offending keys.
    """
    blob, source = read_blob(path_or_state)
    state = strip_prefixes(pick_weights(blob, source=source))
    kwargs = {"input_size": 16, "in_channels": 32, "num_classes": 1000, **LIGHTNINGDIT_XL1, **model_kwargs}
    check_layout(state, expected_layout(LightningDiT, **kwargs), source=source)
    return state


__all__ = [
    "WeightedRMSNorm",
    "LightningDiT",
    "LIGHTNINGDIT_MODELS",
    "convert_lightningdit_checkpoint",
    "expected_layout",
]
