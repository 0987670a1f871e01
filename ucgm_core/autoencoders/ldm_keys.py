"""The key mapping between LDM-format ``AutoencoderKL`` state dicts (LightningDiT's VA-VAE, REPA-E's
E2E-VA-VAE, original Stable Diffusion checkpoints) and diffusers' ``AutoencoderKL``, both ways.

LDM-format files are converted onto :class:`diffusers.AutoencoderKL` by a key mapping:

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
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..models.convert import check_layout, drop_keys, strip_prefixes

__all__ = [
    "TRAINING_ONLY_PREFIXES",
    "ldm_to_diffusers_key",
    "diffusers_to_ldm_key",
    "is_attention_projection",
    "looks_like_ldm",
    "expected_ldm_layout",
    "ldm_to_diffusers_state_dict",
    "diffusers_to_ldm_state_dict",
]

#: key prefixes of a raw VA-VAE training checkpoint that sampling never uses
TRAINING_ONLY_PREFIXES = ("loss.", "foundation_model.", "linear_proj.", "model_ema.")

_ATTN_TO_DIFFUSERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_TO_LDM = {v: k for k, v in _ATTN_TO_DIFFUSERS.items()}
_RESNET_PARTS = ("norm1", "conv1", "norm2", "conv2")
_PARAM = r"(weight|bias)"


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
    if re.fullmatch(r"(post_)?quant_conv\." + _PARAM, key) or re.fullmatch(
        r"(encoder|decoder)\.conv_(in|out)\." + _PARAM, key
    ):
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
    if m := re.fullmatch(r"(encoder)\.down\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key) or re.fullmatch(
        r"(decoder)\.up\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key
    ):
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
    if re.fullmatch(r"(post_)?quant_conv\." + _PARAM, key) or re.fullmatch(
        r"(encoder|decoder)\.conv_(in|out)\." + _PARAM, key
    ):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\." + _PARAM, key):
        return f"{m.group(1)}.norm_out.{m.group(2)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        if m.group(2) == "resnets":
            tail, sub = _resnet_tail(m.group(4), False), f"block_{int(m.group(3)) + 1}"
        else:
            tail, sub = _attn_tail(m.group(4), False), "attn_1"
        return f"{m.group(1)}.mid.{sub}.{tail}" if tail else None
    if m := re.fullmatch(r"(encoder)\.down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key) or re.fullmatch(
        r"(decoder)\.up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key
    ):
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


def ldm_to_diffusers_state_dict(
    state: Mapping[str, Tensor], diffusers_layout: Mapping[str, Sequence[int]], source: str = "<checkpoint>"
) -> Dict[str, Tensor]:
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
