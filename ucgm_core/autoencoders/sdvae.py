"""Stable Diffusion's VAE (``sd-vae-ft-ema`` / ``sd-vae-ft-mse``) and EDM2's use of it, via diffusers.

All three run :class:`diffusers.AutoencoderKL` (4 latent channels, stride 8):

==================  ==========================  ===========================  ==============================  ==================
registry name        weights (default source)    encode                       decode                          latent norm
==================  ==========================  ===========================  ==============================  ==================
``sdvae_ema_f8c4``   ``stabilityai/sd-vae-ft-ema``  posterior **mean** of x     ``clip((D(z) + 1) / 2, 0, 1)``   none, x 0.18215
``sdvae_mse_f8c4``   ``stabilityai/sd-vae-ft-mse``  same                        same                            none, x 0.18215
``edm2_sdvae_f8c4``  ``stabilityai/sd-vae-ft-mse``  posterior mean of (x+1)/2   ``clip(D(z), 0, 1)``             EDM2 mean/std, x 1
==================  ==========================  ===========================  ==============================  ==================

(``sdvae_f8c4`` is an alias of ``sdvae_mse_f8c4``: the original extraction key.) ``x`` is the image in
``[-1, 1]`` that :meth:`Autoencoder.encode` receives. EDM2 feeds the VAE pixels in ``[0, 1]``, so its
variant maps the image to ``[0, 1]`` before encoding and clips the decoder output to ``[0, 1]`` directly.
The original UCGM uses ``edm2_sdvae_f8c4`` only for decoding samples; EDM2's own encoder stores mean and
std and draws ``mean + std * eps`` at training time, which ``sample_posterior=True`` reproduces.

Latent normalisation stays outside (the data pipeline); each class exposes its documented default as
``default_normalize`` / ``default_multiplier`` (and, for EDM2, ``default_latent_stats``, which reproduces
EDM2's ``(z - raw_mean) / raw_std * 0.5`` as ``(z - mean) / std`` with ``std = raw_std / 0.5``).

Where the weights come from (``source``):

- a local diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``);
- a single weights file (``.safetensors``/``.pt``/``.ckpt``, read through
  :func:`ucgm_core.models.convert.load_checkpoint_file`, never unpickling code) in diffusers key names
  or in the original LDM key names (``encoder.down.0.block.0...``, e.g. ``vae-ft-mse-840000-ema-pruned``),
  with ``config=`` or a ``config.json`` beside it, else the standard SD-VAE config;
- a Hugging Face hub id: read from the local Hugging Face cache only, unless ``allow_download=True``
  (the only way anything here touches the network).

Every weight file is checked key by key and shape by shape; a mismatch raises
:class:`~ucgm_core.models.convert.CheckpointError` naming the file and the offending keys.

This module also holds the diffusers loading helpers shared with :mod:`.vavae` and :mod:`.dcae`.
"""

from __future__ import annotations

import json
import os
import re
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..models.convert import CheckpointError, check_layout, load_checkpoint_file, pick_weights, strip_prefixes
from .base import Autoencoder, cast_module
from .ldm_keys import ldm_to_diffusers_state_dict, looks_like_ldm

__all__ = [
    "SD_VAE_CONFIG",
    "EDM2_RAW_MEAN",
    "EDM2_RAW_STD",
    "EDM2_FINAL_STD",
    "resolve_source",
    "read_weights",
    "build_and_load",
    "load_diffusers_autoencoder",
    "KLAutoencoder",
    "SDVAE",
    "SDVAEftEMA",
    "SDVAEftMSE",
    "EDM2SDVAE",
]

#: diffusers ``config.json`` of ``stabilityai/sd-vae-ft-{ema,mse}`` (used for a bare weights file).
SD_VAE_CONFIG: Dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

#: EDM2's ``StabilityVAEEncoder`` defaults: normalised = (z - raw_mean) / raw_std * final_std.
EDM2_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
EDM2_RAW_STD = (4.17, 4.62, 3.71, 3.28)
EDM2_FINAL_STD = 0.5

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors")

PathLike = Union[str, os.PathLike]
StateDict = Dict[str, Tensor]


# ----------------------------------------------------------------------------------------------------------
# Shared loading helpers
# ----------------------------------------------------------------------------------------------------------


def resolve_source(source: PathLike, *, subfolder: Optional[str] = None, allow_download: bool = False) -> Path:
    """A local folder or file for ``source``.

    An existing local path is returned as is (joined with ``subfolder``). Otherwise ``source`` must look like
    a hub id (``owner/name``): it is looked up in the local Hugging Face cache, and downloaded only when
    ``allow_download`` is true.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path / subfolder if subfolder else path
    text = str(source)
    if not _HUB_ID.match(text):
        raise CheckpointError(f"{text}: no such file or folder (and not a Hugging Face hub id 'owner/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - diffusers depends on huggingface_hub
        raise CheckpointError(f"{text}: huggingface_hub is needed to read a hub id ({e})") from None
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        folder = snapshot_download(
            text, allow_patterns=[f"{prefix}config.json", f"{prefix}*.safetensors"], local_files_only=not allow_download
        )
    except Exception as e:  # noqa: BLE001 - offline miss, unknown repo, network error
        hint = (
            ""
            if allow_download
            else "; it is not in the local Hugging Face cache and downloading was not asked for "
            "(pass allow_download=True, or give a local folder/file)"
        )
        raise CheckpointError(
            f"{text}: cannot load from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}){hint}"
        ) from None
    return Path(folder) / subfolder if subfolder else Path(folder)


def _find_weights(folder: Path) -> Path:
    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    listing = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"{folder}: no weights file found (looked for {list(_WEIGHT_NAMES)} or a single "
        f"*.safetensors); folder holds {listing[:20]}"
    )


def _read_config(config: Union[None, PathLike, Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read config ({type(e).__name__}: {e})") from None


def read_weights(path: PathLike, preferred=("state_dict", "vae")) -> StateDict:
    """The state dict in a weights file, via :func:`load_checkpoint_file` (no code is unpickled), with
    ``module.`` / ``_orig_mod.`` wrapper prefixes removed."""
    blob = load_checkpoint_file(path)
    return strip_prefixes(pick_weights(blob, preferred=preferred, source=str(path)))


def _layout(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def build_and_load(cls, config: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> nn.Module:
    """``cls.from_config(config)`` loaded strictly with ``state`` after a full key/shape check.

    The module is built on the ``meta`` device and takes the tensors of ``state`` (no random init of a
    large network that is overwritten anyway); a ``state`` on ``meta`` therefore gives a ``meta`` module.
    """
    config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = cls.from_config(config)
    check_layout(state, _layout(model), source)
    model.load_state_dict(dict(state), strict=True, assign=True)
    if not all(v.is_meta for v in state.values()):
        left = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
        if left:  # non-persistent buffers would stay on meta: build normally instead
            model = cls.from_config(config)
            model.load_state_dict(dict(state), strict=True)
    return model.eval().requires_grad_(False)


def load_diffusers_autoencoder(
    cls,
    source: PathLike,
    *,
    config: Union[None, PathLike, Mapping[str, Any]] = None,
    default_config: Optional[Mapping[str, Any]] = None,
    subfolder: Optional[str] = None,
    allow_download: bool = False,
    convert_original: Optional[Callable[[StateDict, Dict[str, Tuple[int, ...]], str], StateDict]] = None,
) -> nn.Module:
    """A diffusers autoencoder of class ``cls`` from a folder, a single weights file or a hub id.

    ``convert_original(state, diffusers_layout, source)``, if given, is called when the file's keys are not
    diffusers names (it should return ``state`` unchanged when it does not recognise them either).
    """
    path = resolve_source(source, subfolder=subfolder, allow_download=allow_download)
    weights = _find_weights(path) if path.is_dir() else path
    beside = weights.parent / "config.json"
    if config is not None:
        cfg = _read_config(config)
    else:
        cfg = _read_config(beside) if beside.is_file() else None
    if cfg is None:
        if default_config is None:
            raise CheckpointError(
                f"{weights}: no config.json beside the weights; pass config=<dict, config.json or "
                f"folder> describing the {cls.__name__}"
            )
        cfg = dict(default_config)
    name = cfg.get("_class_name")
    if name is not None and name != cls.__name__:
        raise CheckpointError(f"{weights}: config describes a {name}, expected {cls.__name__}")
    state = read_weights(weights)
    if convert_original is not None:
        with torch.device("meta"):
            layout = _layout(cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")}))
        if not set(state) <= set(layout):
            state = convert_original(state, layout, str(weights))
    return build_and_load(cls, cfg, state, str(weights))


# ----------------------------------------------------------------------------------------------------------
# Shared KL-autoencoder wrapper (SD-VAE, EDM2's SD-VAE, VA-VAE)
# ----------------------------------------------------------------------------------------------------------


class KLAutoencoder(Autoencoder):
    """A wrapped :class:`diffusers.AutoencoderKL` (attribute ``vae``).

    ``encode`` returns the posterior mean, or ``mean + std * eps`` when ``sample_posterior``; ``eps`` is
    drawn on the CPU (from ``generator`` / ``seed``, else the global CPU RNG, as the original VA-VAE does)
    and then moved to the model's device. Subclasses choose the pixel convention with ``vae_pixels_01``.
    """

    latent_channels: int = 4
    stride: int = 8
    #: documented latent normalisation of the original configs (applied outside, by the data pipeline)
    default_normalize: bool = True
    default_multiplier: float = 1.0
    default_latent_stats: Optional[Dict[str, Tensor]] = None
    #: the VAE itself takes pixels in [0, 1] (EDM2) instead of [-1, 1]
    vae_pixels_01: bool = False

    def _setup(self, vae: nn.Module, *, sample_posterior: bool, seed: Optional[int], generator, dtype) -> None:
        self.vae = cast_module(vae, dtype)
        cfg = vae.config
        self.latent_channels = int(cfg.latent_channels)
        self.stride = 2 ** (len(cfg.block_out_channels) - 1)
        self.sample_posterior = bool(sample_posterior)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator

    def _param(self) -> Tensor:
        return next(self.vae.parameters())

    def _check(self, x: Tensor, channels: int, factor: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{type(self).__name__}: expected {what} [B, {channels}, H, W] with H and W divisible "
                f"by {factor}, got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def posterior(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``(mean, std)`` of the diagonal Gaussian posterior for images in ``[-1, 1]`` (float32)."""
        self._check(images, int(self.vae.config.in_channels), self.stride, "images")
        p = self._param()
        x = images.to(device=p.device, dtype=p.dtype)
        if self.vae_pixels_01:
            x = (x + 1) / 2
        with self.compute(x.device):
            dist = self.vae.encode(x).latent_dist
            return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        mean, std = self.posterior(images)
        if not self.sample_posterior:
            return mean
        eps = torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype).to(mean.device)
        return mean + std * eps

    @torch.no_grad()
    def decode_raw(self, latents: Tensor) -> Tensor:
        """The decoder's own output ``decoder(post_quant_conv(z))`` (float32, unclipped)."""
        self._check(latents, self.latent_channels, 1, "latents")
        p = self._param()
        with self.compute(p.device):
            return self.vae.decode(latents.to(device=p.device, dtype=p.dtype)).sample.float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        x = self.decode_raw(latents)
        return (x if self.vae_pixels_01 else (x + 1) / 2).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------
# SD-VAE variants
# ----------------------------------------------------------------------------------------------------------


def _convert_ldm(state: StateDict, layout, source: str) -> StateDict:
    if not looks_like_ldm(state):
        return state
    return ldm_to_diffusers_state_dict(state, layout, source)


class SDVAE(KLAutoencoder):
    """SD-VAE ft-EMA (posterior mean; decode ``clip((x+1)/2)``); defaults: no normalisation, x 0.18215.

    Args:
        source: local diffusers folder, single weights file (diffusers or LDM key names) or hub id;
            default :attr:`default_source`.
        config: diffusers config (dict, ``config.json`` or folder) for a single weights file.
        subfolder: subfolder of ``source`` holding the VAE (e.g. ``"vae"`` of a pipeline).
        allow_download: allow fetching a hub id over the network (otherwise the local HF cache only).
        sample_posterior: encode to ``mean + std * eps`` instead of the mean (the original uses the mean).
        seed / generator: CPU RNG for ``sample_posterior``.
        dtype: model dtype (the original runs float32); latents and images come back as float32.
    """

    default_source = "stabilityai/sd-vae-ft-ema"
    default_normalize = False
    default_multiplier = 0.18215

    def __init__(
        self,
        source: Optional[PathLike] = None,
        *,
        config=None,
        subfolder: Optional[str] = None,
        allow_download: bool = False,
        sample_posterior: bool = False,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        dtype: Union[str, torch.dtype] = "float32",
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        vae = load_diffusers_autoencoder(
            AutoencoderKL,
            source if source is not None else self.default_source,
            config=config,
            default_config=SD_VAE_CONFIG,
            subfolder=subfolder,
            allow_download=allow_download,
            convert_original=_convert_ldm,
        )
        self._setup(vae, sample_posterior=sample_posterior, seed=seed, generator=generator, dtype=dtype)


class SDVAEftEMA(SDVAE):
    """``sdvae_ema_f8c4``: ``stabilityai/sd-vae-ft-ema`` (the VAE of UCGM's configs and of decoding)."""


class SDVAEftMSE(SDVAE):
    """``sdvae_mse_f8c4`` / ``sdvae_f8c4``: ``stabilityai/sd-vae-ft-mse`` (UCGM's latent extraction)."""

    default_source = "stabilityai/sd-vae-ft-mse"


class EDM2SDVAE(SDVAE):
    """``edm2_sdvae_f8c4``: sd-vae-ft-mse with EDM2's pixel convention.

    The VAE sees pixels in ``[0, 1]``: ``encode`` maps the ``[-1, 1]`` image to ``(x + 1) / 2`` first
    (posterior mean by default; EDM2's training draws a sample, ``sample_posterior=True``), and
    ``decode`` returns ``clip(D(z), 0, 1)``. Defaults: normalisation on, x 1.0, with
    ``default_latent_stats`` = EDM2's ``raw_mean`` and ``raw_std / 0.5`` (shape ``[1, 4, 1, 1]``).
    """

    default_source = "stabilityai/sd-vae-ft-mse"
    default_normalize = True
    default_multiplier = 1.0
    default_latent_stats = {
        "mean": torch.tensor(EDM2_RAW_MEAN, dtype=torch.float32).view(1, 4, 1, 1),
        "std": (torch.tensor(EDM2_RAW_STD, dtype=torch.float32) / EDM2_FINAL_STD).view(1, 4, 1, 1),
    }
    vae_pixels_01 = True
