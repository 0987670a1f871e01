"""VA-VAE f16d32 (LightningDiT) and REPA-E's end-to-end-tuned E2E-VA-VAE, on diffusers' ``AutoencoderKL``.

Both released files are LDM-format ``AutoencoderKL`` state dicts with the same 342 keys
(``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``); 32 latent channels, stride 16.
The LDM <-> diffusers key mapping is in :mod:`ucgm_core.autoencoders.ldm_keys`.

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
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from ..models.convert import CheckpointError, strip_prefixes
from .ldm_keys import (  # noqa: F401 - re-exported: the mapping's former home
    TRAINING_ONLY_PREFIXES,
    ldm_to_diffusers_key,
    diffusers_to_ldm_key,
    is_attention_projection,
    looks_like_ldm,
    expected_ldm_layout,
    ldm_to_diffusers_state_dict,
    diffusers_to_ldm_state_dict,
)
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
    attn = [res // 2**i in attn_res for i in range(len(ch_mult))]
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

    def __init__(
        self,
        checkpoint: Union[None, str, os.PathLike, Mapping[str, Tensor]] = None,
        *,
        ddconfig: Optional[Mapping[str, Any]] = None,
        embed_dim: int = 32,
        sample_posterior: Optional[bool] = None,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        dtype: Union[str, torch.dtype] = "float32",
        source: Union[None, str, os.PathLike] = None,
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        if source is not None:  # the name every autoencoder's weights argument has (the workflow passes it)
            if checkpoint is not None:
                raise ValueError(f"{type(self).__name__}: give checkpoint= or source=, not both")
            checkpoint = source
        if checkpoint is None:
            raise CheckpointError(
                f"{type(self).__name__}: pass checkpoint=<path to the LDM-format VA-VAE state dict> "
                "(the original reads buffers/vaes/{vavae,e2evavae}_f16d32.ckpt)"
            )
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
