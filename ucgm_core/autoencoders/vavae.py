"""VA-VAE f16d32 (LightningDiT) and REPA-E's end-to-end-tuned E2E-VA-VAE, on diffusers' ``AutoencoderKL``.

Both released files are LDM-format ``AutoencoderKL`` state dicts with the same 342 keys
(``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``); 32 latent channels, stride 16.
They are converted here onto :class:`diffusers.AutoencoderKL` by a key mapping:

==============================================  ====================================================
LDM                                             diffusers (L = number of levels)
==============================================  ====================================================
``{enc,dec}.norm_out``                          ``{enc,dec}.conv_norm_out``
``encoder.down.i.block.j`` / ``.attn.j``        ``encoder.down_blocks.i.resnets.j`` / ``.attentions.j``
``encoder.down.i.downsample.conv``              ``encoder.down_blocks.i.downsamplers.0.conv``
``{enc,dec}.mid.block_1`` / ``block_2``         ``{…}.mid_block.resnets.0`` / ``.resnets.1``
``{enc,dec}.mid.attn_1``                        ``{…}.mid_block.attentions.0``
``decoder.up.i.block.j`` / ``.attn.j``          ``decoder.up_blocks.(L-1-i).resnets.j`` / ``.attentions.j``
``decoder.up.i.upsample.conv``                  ``decoder.up_blocks.(L-1-i).upsamplers.0.conv``
``….nin_shortcut``                              ``….conv_shortcut``
attention ``norm, q, k, v, proj_out``           ``group_norm, to_q, to_k, to_v, to_out.0``
==============================================  ====================================================

The attention projection weights are 1x1 conv kernels ``[C, C, 1, 1]`` in LDM and linear ``[C, C]`` in
diffusers. Levels at an attention resolution use the ``Attn…`` block variants. Every key and shape is
checked (:func:`~ucgm_core.models.convert.check_layout`, in LDM names) before loading; the keys a raw
training checkpoint adds (``loss.``, ``foundation_model.``, ``linear_proj.``, ``model_ema.``) are dropped,
anything else unexpected is an error naming the file.

- ``vavae_f16d32`` (:class:`VAVAE`) encodes to ``posterior.sample()`` = ``mean + std * eps`` with ``eps``
  from the CPU RNG (as LightningDiT's and UCGM's wrappers), ``e2evavae_f16d32`` (:class:`E2EVAVAE`) to the
  posterior **mean**. Both decode to ``clip((D(z) + 1) / 2, 0, 1)``. Defaults: per-channel latent
  normalisation on, multiplier 1.0 (applied outside). diffusers' ``scaling_factor`` is never used.
- ``checkpoint``: the LDM-format file (``.ckpt``/``.pt`` read with ``torch.load(weights_only=True)``, or
  ``.safetensors``), a bare state dict or one under ``state_dict`` (Lightning) / ``vae`` (REPA-E);
  or an already loaded state dict (also on ``meta``, which gives a ``meta`` module: a layout check).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..models.convert import CheckpointError, check_layout, drop_keys, strip_prefixes
from .sdvae import KLAutoencoder, build_and_load, read_weights

__all__ = [
    "VAVAE_F16D32_DDCONFIG",
    "TRAINING_ONLY_PREFIXES",
    "ldm_vae_config_to_diffusers",
    "ldm_to_diffusers_key",
    "diffusers_to_ldm_key",
    "is_attention_projection",
    "looks_like_ldm",
    "ldm_to_diffusers_state_dict",
    "diffusers_to_ldm_state_dict",
    "VAVAE",
    "E2EVAVAE",
]

#: ``ddconfig`` of VA-VAE f16d32 (LightningDiT ``vavae/configs/f16d32_vfdinov2.yaml``); ``embed_dim`` 32.
VAVAE_F16D32_DDCONFIG: Dict[str, Any] = {
    "double_z": True,
    "z_channels": 32,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "dropout": 0.0,
}

#: key prefixes of a raw VA-VAE training checkpoint that sampling never uses
TRAINING_ONLY_PREFIXES = ("loss.", "foundation_model.", "linear_proj.", "model_ema.")

_ATTN_TO_DIFFUSERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_TO_LDM = {v: k for k, v in _ATTN_TO_DIFFUSERS.items()}
_RESNET_PARTS = ("norm1", "conv1", "norm2", "conv2")
_PARAM = r"(weight|bias)"


def ldm_vae_config_to_diffusers(ddconfig: Mapping[str, Any], embed_dim: int) -> Dict[str, Any]:
    """The :class:`diffusers.AutoencoderKL` config of an LDM ``AutoencoderKL(ddconfig, embed_dim)``."""
    dd = dict(VAVAE_F16D32_DDCONFIG, **dict(ddconfig))
    ch_mult = [int(m) for m in dd["ch_mult"]]
    if not dd.get("double_z", True):
        raise ValueError("only double_z=True (a Gaussian posterior) maps onto diffusers' AutoencoderKL")
    if int(dd["z_channels"]) != int(embed_dim):
        raise ValueError(f"z_channels ({dd['z_channels']}) must equal embed_dim ({embed_dim}) for diffusers")
    if ch_mult[0] != 1:
        raise ValueError(f"ch_mult must start with 1 for diffusers (conv_in width), got {ch_mult}")
    attn_res = {int(r) for r in dd["attn_resolutions"]}
    res = int(dd["resolution"])
    attn = [res // 2 ** i in attn_res for i in range(len(ch_mult))]
    return {
        "in_channels": int(dd["in_channels"]),
        "out_channels": int(dd["out_ch"]),
        "down_block_types": ["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn],
        "up_block_types": ["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn)],
        "block_out_channels": [int(dd["ch"]) * m for m in ch_mult],
        "layers_per_block": int(dd["num_res_blocks"]),
        "act_fn": "silu",
        "latent_channels": int(embed_dim),
        "norm_num_groups": 32,
        "sample_size": res,
        "mid_block_add_attention": True,
        "use_quant_conv": True,
        "use_post_quant_conv": True,
    }


def _resnet_tail(tail: str, to_diffusers: bool) -> Optional[str]:
    m = re.fullmatch(r"(\w+)\." + _PARAM, tail)
    if not m:
        return None
    part = m.group(1)
    if part in _RESNET_PARTS:
        return tail
    src, dst = ("nin_shortcut", "conv_shortcut") if to_diffusers else ("conv_shortcut", "nin_shortcut")
    return f"{dst}.{m.group(2)}" if part == src else None


def _attn_tail(tail: str, to_diffusers: bool) -> Optional[str]:
    m = re.fullmatch(r"(\w+(?:\.0)?)\." + _PARAM, tail)
    table = _ATTN_TO_DIFFUSERS if to_diffusers else _ATTN_TO_LDM
    if not m or m.group(1) not in table:
        return None
    return f"{table[m.group(1)]}.{m.group(2)}"


def ldm_to_diffusers_key(key: str, num_levels: int) -> Optional[str]:
    """The diffusers name of LDM key ``key`` (``None`` when it is not an autoencoder key)."""
    if re.fullmatch(r"(post_)?quant_conv\." + _PARAM, key) or re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\." + _PARAM, key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.norm_out\." + _PARAM, key):
        return f"{m.group(1)}.conv_norm_out.{m.group(2)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)", key):
        part, kind = m.group(2), m.group(2)[:-2]
        tail = _resnet_tail(m.group(3), True) if kind == "block" else _attn_tail(m.group(3), True)
        if tail is None:
            return None
        sub = "attentions.0" if kind == "attn" else f"resnets.{int(part[-1]) - 1}"
        return f"{m.group(1)}.mid_block.{sub}.{tail}"
    if m := re.fullmatch(r"(encoder)\.down\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key) or \
            re.fullmatch(r"(decoder)\.up\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key):
        enc = m.group(1) == "encoder"
        level = int(m.group(2)) if enc else num_levels - 1 - int(m.group(2))
        tail = _resnet_tail(m.group(5), True) if m.group(3) == "block" else _attn_tail(m.group(5), True)
        if tail is None or not 0 <= level < num_levels:
            return None
        sub = "resnets" if m.group(3) == "block" else "attentions"
        return f"{m.group(1)}.{'down' if enc else 'up'}_blocks.{level}.{sub}.{m.group(4)}.{tail}"
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\." + _PARAM, key):
        return f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\." + _PARAM, key):
        level = num_levels - 1 - int(m.group(1))
        return f"decoder.up_blocks.{level}.upsamplers.0.conv.{m.group(2)}" if 0 <= level < num_levels else None
    return None


def diffusers_to_ldm_key(key: str, num_levels: int) -> Optional[str]:
    """The LDM name of diffusers ``AutoencoderKL`` key ``key`` (inverse of :func:`ldm_to_diffusers_key`)."""
    if re.fullmatch(r"(post_)?quant_conv\." + _PARAM, key) or re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\." + _PARAM, key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\." + _PARAM, key):
        return f"{m.group(1)}.norm_out.{m.group(2)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        if m.group(2) == "resnets":
            tail, sub = _resnet_tail(m.group(4), False), f"block_{int(m.group(3)) + 1}"
        else:
            tail, sub = _attn_tail(m.group(4), False), "attn_1"
        return f"{m.group(1)}.mid.{sub}.{tail}" if tail else None
    if m := re.fullmatch(r"(encoder)\.down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key) or \
            re.fullmatch(r"(decoder)\.up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        enc = m.group(1) == "encoder"
        level = int(m.group(2)) if enc else num_levels - 1 - int(m.group(2))
        tail = _resnet_tail(m.group(5), False) if m.group(3) == "resnets" else _attn_tail(m.group(5), False)
        if tail is None or not 0 <= level < num_levels:
            return None
        sub = "block" if m.group(3) == "resnets" else "attn"
        return f"{m.group(1)}.{'down' if enc else 'up'}.{level}.{sub}.{m.group(4)}.{tail}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\." + _PARAM, key):
        return f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\." + _PARAM, key):
        return f"decoder.up.{num_levels - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
    return None


def is_attention_projection(diffusers_key: str) -> bool:
    """Whether a diffusers key is an attention q/k/v/out weight (``[C, C]`` here, ``[C, C, 1, 1]`` in LDM)."""
    return bool(re.search(r"\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key))


def looks_like_ldm(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` uses LDM autoencoder names (``encoder.down.*``, ``decoder.up.*``, ``*.mid.*``)."""
    return any(re.match(r"(encoder\.down\.\d|decoder\.up\.\d|(encoder|decoder)\.mid\.)", k) for k in state)


def _num_levels(layout: Mapping[str, Sequence[int]]) -> int:
    levels = [int(m.group(1)) for k in layout if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))]
    return max(levels) + 1 if levels else 0


def expected_ldm_layout(diffusers_layout: Mapping[str, Sequence[int]]) -> Dict[str, Tuple[int, ...]]:
    """The LDM ``{key: shape}`` that maps onto ``diffusers_layout`` (a diffusers ``AutoencoderKL`` layout)."""
    n = _num_levels(diffusers_layout)
    out = {}
    for k, shape in diffusers_layout.items():
        ldm = diffusers_to_ldm_key(k, n)
        if ldm is None:
            raise ValueError(f"diffusers key {k!r} has no LDM counterpart")
        out[ldm] = tuple(shape) + ((1, 1) if is_attention_projection(k) else ())
    return out


def ldm_to_diffusers_state_dict(state: Mapping[str, Tensor], diffusers_layout: Mapping[str, Sequence[int]],
                                source: str = "<checkpoint>") -> Dict[str, Tensor]:
    """Convert an LDM-format autoencoder state dict onto a diffusers ``AutoencoderKL`` of ``diffusers_layout``.

    Wrapper prefixes and :data:`TRAINING_ONLY_PREFIXES` are removed; then every key and shape is checked in
    LDM names (:class:`CheckpointError` naming ``source`` and the missing / unexpected / mis-shaped keys).
    """
    state = drop_keys(strip_prefixes(state), TRAINING_ONLY_PREFIXES)
    check_layout(state, expected_ldm_layout(diffusers_layout), source)
    n = _num_levels(diffusers_layout)
    out = {}
    for k, v in state.items():
        new = ldm_to_diffusers_key(k, n)
        out[new] = v.reshape(tuple(diffusers_layout[new]))
    check_layout(out, diffusers_layout, source)  # the mapping is one to one: cannot fail after the check above
    return out


def diffusers_to_ldm_state_dict(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The inverse conversion: a diffusers ``AutoencoderKL`` state dict in LDM names and shapes."""
    n = _num_levels(state)
    out = {}
    for k, v in state.items():
        ldm = diffusers_to_ldm_key(k, n)
        if ldm is None:
            raise ValueError(f"diffusers key {k!r} has no LDM counterpart")
        out[ldm] = v[..., None, None] if is_attention_projection(k) else v
    return out


class VAVAE(KLAutoencoder):
    """``vavae_f16d32``: LightningDiT's VA-VAE; ``encode`` = ``posterior.sample()`` (CPU-RNG noise).

    Args:
        checkpoint: LDM-format weights file or state dict (see the module docstring); required.
        ddconfig / embed_dim: the LDM architecture (default: f16d32, 32 channels, stride 16).
        sample_posterior: ``True`` here (the original), ``False`` for the posterior mean.
        seed / generator: CPU RNG for the posterior noise (default: the global CPU RNG, as the original).
        dtype: model dtype (float32 as the original).
    """

    default_normalize = True
    default_multiplier = 1.0
    default_sample_posterior = True

    def __init__(self, checkpoint: Union[None, str, os.PathLike, Mapping[str, Tensor]] = None, *,
                 ddconfig: Optional[Mapping[str, Any]] = None, embed_dim: int = 32,
                 sample_posterior: Optional[bool] = None, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, dtype: Union[str, torch.dtype] = "float32",
                 source: Union[None, str, os.PathLike] = None):
        super().__init__()
        from diffusers import AutoencoderKL

        if source is not None:  # the name every autoencoder's weights argument has (the workflow passes it)
            if checkpoint is not None:
                raise ValueError(f"{type(self).__name__}: give checkpoint= or source=, not both")
            checkpoint = source
        if checkpoint is None:
            raise CheckpointError(f"{type(self).__name__}: pass checkpoint=<path to the LDM-format VA-VAE state dict> "
                                  "(the original reads buffers/vaes/{vavae,e2evavae}_f16d32.ckpt)")
        if isinstance(checkpoint, Mapping):
            state, source = strip_prefixes(checkpoint), "<state_dict>"
        else:
            state, source = read_weights(checkpoint, preferred=("state_dict", "vae")), str(checkpoint)
        config = ldm_vae_config_to_diffusers(ddconfig or VAVAE_F16D32_DDCONFIG, embed_dim)
        with torch.device("meta"):
            layout = {k: tuple(v.shape) for k, v in AutoencoderKL.from_config(config).state_dict().items()}
        vae = build_and_load(AutoencoderKL, config, ldm_to_diffusers_state_dict(state, layout, source), source)
        if sample_posterior is None:
            sample_posterior = self.default_sample_posterior
        self._setup(vae, sample_posterior=sample_posterior, seed=seed, generator=generator, dtype=dtype)


class E2EVAVAE(VAVAE):
    """``e2evavae_f16d32``: REPA-E's end-to-end-tuned VA-VAE (same layout); ``encode`` = posterior mean."""

    default_sample_posterior = False
