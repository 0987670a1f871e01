"""SiT as released by REPA (SiT-XL/2, SD-VAE latents) and REPA-E (SiT-XL/1, f16d32 latents).

A plain DiT/SiT: conv patch embedding + fixed 2-D sin-cos position table, adaLN-Zero blocks with
affine-free LayerNorm (eps 1e-6), multi-head attention with qkv bias and a tanh-GELU MLP.
Parameter names and shapes equal the originals', so a released checkpoint loads after
:func:`convert_sit_checkpoint` has picked the EMA weights and dropped what sampling does not use
(REPA's ``projectors.*``; REPA-E's ``projectors.*`` and ``bn.*``, whose running statistics only
de-normalise latents in REPA-E's own sampler; UCGM uses its own latent mean/std instead).

Time convention (``Linear`` transport): x_t = (1 - t) x + t z, **t = 1 is noise**; the raw float t
enters the time embedding (no x1000); the output is the velocity dx_t/dt = z - x. Label
``num_classes`` (1000) is the null label. Shape letters: B batch, N tokens, D width, C channels.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convert import CheckpointError, check_layout, drop_keys, load_checkpoint_file, pick_weights, strip_prefixes
from .tit import PatchEmbed  # [B, C, S, S] -> [B, (S/p)^2, D], the same stride-p conv
from .layers import (
    dit_initialize_,
    ConditionalNet,
    GeluMlp,
    LabelEmbedder,
    TimestepEmbedder,
    modulate,
    unpatchify,
)
from .spec import ModelSpec

__all__ = [
    "SiT",
    "SIT_VARIANTS",
    "SIT_MODELS",
    "SIT_CHECKPOINT_VARIANT",
    "sit_kwargs_from_original",
    "convert_sit_checkpoint",
    "expected_sit_layout",
    "CheckpointError",
]


def _layer_norm(x: Tensor) -> Tensor:
    """Affine-free LayerNorm over the last dim, eps 1e-6."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class Attention(nn.Module):
    """Multi-head self-attention, [B, N, D] -> [B, N, D]: ``qkv`` (bias) -> SDPA (scale d^-1/2) -> ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SiTBlock(nn.Module):
    """adaLN-Zero block. ``adaLN_modulation = [SiLU, Linear(D, 6D)]`` on c [B, D] gives, in order,
    shift/scale/gate for attention then for the MLP; modulation is ``LN(x) (1 + scale) + shift``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.mlp = GeluMlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_a.unsqueeze(1) * self.attn(modulate(_layer_norm(x), sh_a, sc_a))
        return x + g_m.unsqueeze(1) * self.mlp(modulate(_layer_norm(x), sh_m, sc_m))


class FinalLayer(nn.Module):
    """[B, N, D] -> [B, N, p*p*C]: ``linear(LN(x) (1 + scale) + shift)``, (shift, scale) from c."""

    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(_layer_norm(x), shift, scale))


class SiT(ConditionalNet):
    """SiT velocity network ``F(x, t, y) = z - x``.

    x [B, C, S, S] (S = ``input_size``), t [B] in [0, 1] with 1 = noise, y [B] long in 0..K with
    K = ``num_classes`` the null label. Output [B, C, S, S]. The label table always has K + 1 rows;
    ``class_dropout_prob`` only matters in train mode.
    ``forward_with_cfg`` (inherited) guides all channels, ``u + w (c - u)``, when lo <= t[0] <= hi,
    as REPA's sampler does.
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
    ) -> None:
        super().__init__()
        if input_size % patch_size or hidden_size % num_heads or hidden_size % 4:
            raise ValueError(
                f"need input_size % patch_size == 0 and hidden_size divisible by num_heads and by 4, got "
                f"input_size={input_size}, patch_size={patch_size}, hidden_size={hidden_size}, num_heads={num_heads}"
            )
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.patch_size, self.out_channels = patch_size, in_channels
        grid = input_size // patch_size
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(SiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT init: xavier linears/patch conv (zero bias), N(0, .02) embeddings, adaLN and final layer zero;
        ``pos_embed`` is the fixed 2-D sin-cos table [1, N, D]."""
        dit_initialize_(self)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x [B, C, S, S], t [B] (or scalar), y [B] long -> velocity z - x [B, C, S, S]."""
        t = self.check_inputs(x, t, y)
        h = self.x_embedder(x) + self.pos_embed  # [B, N, D]
        c = self.t_embedder(t) + self.y_embedder(y)  # [B, D]
        for block in self.blocks:
            h = block(h, c)
        return unpatchify(self.final_layer(h, c), self.patch_size, self.out_channels)


# --- released configurations -----------------------------------------------------------------

_XL = dict(depth=28, hidden_size=1152, num_heads=16)
#: Full constructor kwargs of the released models, by converter variant.
SIT_VARIANTS: Dict[str, Dict[str, Any]] = {
    "repa": dict(input_size=32, in_channels=4, num_classes=1000, patch_size=2, **_XL),  # SiT-XL/2, SD-VAE f8c4
    "repae": dict(input_size=16, in_channels=32, num_classes=1000, patch_size=1, **_XL),  # SiT-XL/1, f16d32
}
#: Key prefixes of the original that sampling never uses, by variant.
_IRRELEVANT = {"repa": ("projectors.",), "repae": ("projectors.", "bn.")}
# Original constructor kwargs that only concern training-time modules or that equal our fixed choice.
_IGNORED_ORIGINAL_KWARGS = {
    "path_type",
    "use_cfg",
    "encoder_depth",
    "z_dims",
    "projector_dim",
    "bn_momentum",
    "fused_attn",
}


def sit_kwargs_from_original(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Our constructor kwargs from the REPA / REPA-E ``SiT`` constructor kwargs.

    Drops the training-only ones (projector sizes, encoder depth, BN momentum, fused-attention flag);
    raises ``NotImplementedError`` for options no release uses (``qk_norm=True``, a decoder width
    different from ``hidden_size``).
    """
    cfg = dict(config)
    if cfg.pop("qk_norm", False):
        raise NotImplementedError("SiT with qk_norm=True is not implemented (no REPA/REPA-E release uses it)")
    dec = cfg.pop("decoder_hidden_size", cfg.get("hidden_size", 1152))
    if dec != cfg.get("hidden_size", 1152):
        raise NotImplementedError(f"decoder_hidden_size={dec} != hidden_size is not implemented")
    return {k: v for k, v in cfg.items() if k not in _IGNORED_ORIGINAL_KWARGS}


def expected_sit_layout(**model_kwargs: Any) -> Dict[str, tuple]:
    """``{key: shape}`` of ``SiT(**model_kwargs).state_dict()``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = SiT(**model_kwargs)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _remap_legacy_decoder_blocks(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Old REPA files name the last blocks ``decoder_blocks.i``; they are ``blocks.(i + encoder_depth)``,
    where encoder_depth is the number of ``blocks.*`` present in such a file."""
    if not any(k.startswith("decoder_blocks.") for k in state):
        return state
    enc = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    out = {}
    for k, v in state.items():
        if k.startswith("decoder_blocks."):
            _, i, rest = k.split(".", 2)
            k = f"blocks.{int(i) + enc}.{rest}"
        out[k] = v
    return out


def convert_sit_checkpoint(
    path_or_state: Union[str, os.PathLike, Mapping[str, Any]],
    variant: str = "repa",
    *,
    source: Optional[str] = None,
    **model_overrides: Any,
) -> Dict[str, Tensor]:
    """A REPA / REPA-E SiT checkpoint -> a state_dict that ``SiT(**SIT_VARIANTS[variant])`` loads strictly.

    Args:
        path_or_state: a checkpoint file (read without unpickling code) or an already loaded blob:
            a bare state_dict (REPA's released ``last.pt``) or a dict holding it under ``ema`` (REPA
            ``train.py`` files, REPA-E ``checkpoints/NNNNNNN.pt``, which may also carry ``vae``), etc.
        variant: ``"repa"`` (SiT-XL/2, drops ``projectors.*``) or ``"repae"`` (SiT-XL/1, also drops
            ``bn.*``).
        source: name used in error messages (defaults to the path).
        model_overrides: constructor kwargs replacing the variant's (e.g. for small test nets).

    EMA weights are preferred; ``module.`` / ``_orig_mod.`` prefixes are stripped; legacy
    ``decoder_blocks.i`` are renamed. Every key and shape is checked against the layout of our model
    (built on the meta device). Raises :class:`CheckpointError` naming the file and the offending keys.
    """
    if variant not in SIT_VARIANTS:
        raise ValueError(f"unknown SiT variant {variant!r}; expected one of {sorted(SIT_VARIANTS)}")
    if isinstance(path_or_state, Mapping):
        blob, source = path_or_state, source or "<state_dict>"
    else:
        blob, source = load_checkpoint_file(path_or_state), source or str(path_or_state)
    state = pick_weights(blob, source=source)
    state = strip_prefixes(state, ("module.", "_orig_mod."))
    state = _remap_legacy_decoder_blocks(state)
    state = drop_keys(state, _IRRELEVANT[variant])
    expected = expected_sit_layout(**{**SIT_VARIANTS[variant], **model_overrides})
    check_layout(state, expected, source=f"{source} (SiT variant {variant!r})")
    return {k: state[k] for k in expected}


def _spec(variant: str) -> ModelSpec:
    defaults = {k: v for k, v in SIT_VARIANTS[variant].items() if k not in ("input_size", "in_channels", "num_classes")}
    return ModelSpec(SiT, defaults, transport="Linear")


#: Registry entries (merged into ``MODELS`` by ``external.py``). Build with input_size = image/VAE stride:
#: REPA 256 px on SD-VAE -> 32 x 32 x 4; REPA-E 256 px on f16d32 -> 16 x 16 x 32.
SIT_MODELS: Dict[str, ModelSpec] = {"SiT-XL/2-REPA": _spec("repa"), "SiT-XL/1-REPAE": _spec("repae")}
#: Which converter variant each registry entry's released checkpoint needs.
SIT_CHECKPOINT_VARIANT: Dict[str, str] = {"SiT-XL/2-REPA": "repa", "SiT-XL/1-REPAE": "repae"}
