"""EDM2's magnitude-preserving U-Net (Karras et al. 2024), sizes S / L / XXL of the ImageNet-512 latent release.

Every layer keeps activations at unit magnitude: weights are normalised at run time (``MPConv``), the
SiLU is rescaled, sums and concatenations are magnitude-preserving, and the encoder blocks pixel-normalise
their input. Parameter names and shapes equal the original ``unet.*`` names without the ``unet.`` prefix,
so a released checkpoint loads after :func:`convert_edm2_checkpoint` (which also drops the training-only
``logvar_*`` uncertainty head).

As UCGM uses it (``EDM`` transport): the network receives the c_in-scaled input x_t and the model time t
and computes EDM's noise label ``c_noise = ln(sigma) / 4 = 2.68 t - 1.59`` itself; the output is EDM's F
(the transport does c_skip / c_out). :meth:`EDM2UNet.denoise` is the original ``Precond`` wrapper
``D = c_skip x + c_out F(c_in x, ln(sigma)/4, labels)`` for checks against the original.

Labels: EDM2 has no null class; it mixes a one-hot vector into the embedding. Here label ``num_classes``
means "no label branch" for that row (UCGM's ``uncond=True``), so the inherited ``forward_with_cfg`` on
``y = [y; null]`` is UCGM's guidance. Shape letters: B batch, C channels, S spatial size, E embedding width.

Released files are pickled module objects (``torch_utils.persistence``) that embed source code; see
:func:`read_persistence_pickle` for how they are read without running it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convert import (
    check_layout,
    drop_keys,
    pick_weights,
    save_state_dict,
    strip_prefixes,
)
from .edm_pickle import load_checkpoint_maybe_pickle, read_persistence_pickle  # noqa: F401 - re-exported
from .layers import ConditionalNet, channel_sdpa
from .spec import ModelSpec

__all__ = [
    "normalize",
    "mp_silu",
    "mp_sum",
    "mp_cat",
    "resample",
    "MPFourier",
    "MPConv",
    "Block",
    "EDM2UNet",
    "edm_preconditioning",
    "edm_noise_label",
    "EDM2_SIZES",
    "EDM2_MODELS",
    "edm2_kwargs_from_original",
    "expected_edm2_layout",
    "convert_edm2_checkpoint",
    "read_persistence_pickle",
    "load_checkpoint_maybe_pickle",
]


# --- magnitude-preserving primitives (EDM2 paper, Sec. 3 / App. B) ----------------------------------------


def normalize(x: Tensor, dim: Optional[Sequence[int]] = None, eps: float = 1e-4) -> Tensor:
    """``x / (eps + ||x|| / sqrt(n))`` over ``dim`` (default: all but dim 0), n the number of reduced elements.

    The norm is taken in float32. Shape preserved.
    """
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    """SiLU scaled to unit output magnitude for unit-variance Gaussian input: ``silu(x) / 0.596``."""
    return F.silu(x) / 0.596


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving blend ``((1 - t) a + t b) / sqrt((1 - t)^2 + t^2)``."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving channel concat of a [B, Na, ...] and b [B, Nb, ...], b weighted by t.

    ``cat(w_a a, w_b b)`` with ``w_a = C (1 - t) / sqrt(Na)``, ``w_b = C t / sqrt(Nb)``,
    ``C = sqrt((Na + Nb) / ((1 - t)^2 + t^2))``.
    """
    na, nb = a.shape[1], b.shape[1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], dim=1)


def resample(x: Tensor, mode: str = "keep") -> Tensor:
    """2x resampling with the [1, 1] box filter: ``down`` = 2x2 average (stride 2), ``up`` = nearest x2.

    [B, C, S, S] -> [B, C, S/2, S/2] (down) or [B, C, 2S, 2S] (up); ``keep`` returns x.
    """
    if mode == "keep":
        return x
    c = x.shape[1]
    f = torch.full((c, 1, 2, 2), 0.25, dtype=x.dtype, device=x.device)
    if mode == "down":
        return F.conv2d(x, f, groups=c, stride=2)
    if mode == "up":
        return F.conv_transpose2d(x, f * 4, groups=c, stride=2)
    raise ValueError(f"resample mode must be 'keep', 'down' or 'up', got {mode!r}")


class MPFourier(nn.Module):
    """Fourier features ``sqrt(2) cos(x f + phi)`` with fixed random buffers ``freqs`` (2 pi N(0,1)) and
    ``phases`` (2 pi U[0,1)). x [B] -> [B, C]."""

    def __init__(self, channels: int, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.outer(x.float(), self.freqs.float()) + self.phases.float()
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Weight-normalised conv (``kernel`` k) or linear (``kernel=None``), no bias.

    Effective weight ``normalize(w) * gain / sqrt(fan_in)``; in train mode (with grad enabled) the stored
    weight is also re-normalised in place before use (forced weight normalisation).
    Conv: [B, Cin, S, S] -> [B, Cout, S, S] ('same' padding); linear: [B, Cin] -> [B, Cout].
    Weight [Cout, Cin, k, k] or [Cout, Cin].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Optional[int]) -> None:
        super().__init__()
        self.out_channels = out_channels
        shape = (out_channels, in_channels) + ((kernel, kernel) if kernel else ())
        self.weight = nn.Parameter(torch.randn(shape))

    def forward(self, x: Tensor, gain: Union[float, Tensor] = 1.0) -> Tensor:
        w = self.weight.float()
        # Forced normalisation only in a differentiated forward: UCGM-T also evaluates the online model in
        # train mode under no_grad (teacher / consistency targets) before backward, and an in-place update
        # there would invalidate the weights saved for the gradient ("modified by an inplace operation").
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = (normalize(w) * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class Block(nn.Module):
    """EDM2 residual block, ``flavor`` 'enc' or 'dec', optional 2x resampling and multi-head attention.

    x [B, Cin, S, S], emb [B, E] -> [B, Cout, S', S'] (S' = S/2 down, 2S up):
    enc: x = pixnorm(skip(resample(x))); dec: x = resample(x), skipped after the residual branch.
    Residual ``y = conv1(mp_silu(conv0(mp_silu(x)) * (1 + emb_linear(emb, gain=emb_gain))))``,
    ``x = mp_sum(x, y, res_balance)``; attention (q, k, v pixel-normalised per head, qkv channel index
    ``(head * Ch + c) * 3 + {q, k, v}``) blended with ``attn_balance``; finally clipped to +-clip_act.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str = "enc",
        resample_mode: str = "keep",
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: Optional[float] = 256.0,
    ) -> None:
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"flavor must be 'enc' or 'dec', got {flavor!r}")
        self.out_channels, self.flavor, self.resample_mode = out_channels, flavor, resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, 3)
        self.emb_linear = MPConv(emb_channels, out_channels, None)
        self.conv_res1 = MPConv(out_channels, out_channels, 3)
        self.conv_skip = MPConv(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, 1) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, 1) if self.num_heads else None
        self.use_sdpa: Optional[bool] = None  # None: scaled_dot_product_attention on CUDA, EDM2's einsum elsewhere

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head self-attention over the S*S positions with cosine-normalised q, k, v. [B, C, S, S]."""
        b, c, h, w = x.shape
        qkv = self.attn_qkv(x).reshape(b, self.num_heads, c // self.num_heads, 3, h * w)
        q, k, v = normalize(qkv, dim=[2]).unbind(3)  # each [B, heads, Ch, N]
        if self.use_sdpa if self.use_sdpa is not None else x.is_cuda:  # fused kernel; the CPU keeps EDM2's einsum
            return self.attn_proj(channel_sdpa(q, k, v).reshape(b, c, h, w))
        attn = torch.einsum("bhcq,bhck->bhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
        y = torch.einsum("bhqk,bhck->bhcq", attn, v)
        return self.attn_proj(y.reshape(b, c, h, w))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=[1])  # pixel norm
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self.attention(x), self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x


# --- EDM preconditioning (shared with SongUNet) ---------------------------------------------------------


def edm_noise_label(t: Tensor) -> Tensor:
    """UCGM's EDM-transport noise label ``c_noise = 2.68 t - 1.59 = ln(sigma) / 4`` for
    ``sigma(t) = exp(4 (2.68 t - 1.59))``. t [B] -> [B] float32."""
    return 2.68 * t.float() - 1.59


def edm_preconditioning(sigma: Tensor, sigma_data: float = 0.5) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM's (c_in, c_skip, c_out, c_noise) for sigma [B], each [B] float32:

    ``c_in = 1/sqrt(s^2 + sd^2)``, ``c_skip = sd^2/(s^2 + sd^2)``, ``c_out = s sd/sqrt(s^2 + sd^2)``,
    ``c_noise = ln(s)/4``.
    """
    s = sigma.float().reshape(-1)
    c_in = 1 / (sigma_data**2 + s**2).sqrt()
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    return c_in, c_skip, c_out, s.log() / 4


# --- the network ----------------------------------------------------------------------------------------


class EDM2UNet(ConditionalNet):
    """EDM2 U-Net ``F(x_t, t, y)`` in UCGM's EDM-transport convention.

    x_t [B, C, S, S] (already c_in-scaled), t [B] model time (c_noise = 2.68 t - 1.59), y [B] long in
    0..K with K = ``num_classes`` meaning "no label" -> F [B, C, S, S].

    Level l (resolution S >> l) has width ``model_channels * channel_mult[l]``; the encoder has a 3x3
    conv (input + a constant-ones channel) at level 0, a down block at the others, then ``num_blocks``
    blocks; the decoder has ``in0`` (attention) and ``in1`` at the lowest level or an up block, then
    ``num_blocks + 1`` blocks, each mp-concatenating one encoder skip. Attention where the resolution is
    in ``attn_resolutions``. ``out_conv`` (gain ``out_gain``) maps to C channels.
    """

    def __init__(
        self,
        input_size: int = 64,
        in_channels: int = 4,
        num_classes: int = 1000,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_noise: Optional[int] = None,
        channel_mult_emb: Optional[int] = None,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: Optional[float] = 256.0,
    ) -> None:
        super().__init__()
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        self.label_balance, self.concat_balance = label_balance, concat_balance
        widths = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise else widths[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb else max(widths)
        blk = dict(
            channels_per_head=channels_per_head,
            dropout=dropout,
            res_balance=res_balance,
            attn_balance=attn_balance,
            clip_act=clip_act,
        )

        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, None)
        self.emb_label = MPConv(num_classes, cemb, None) if num_classes else None

        self.enc = nn.ModuleDict()
        cout = in_channels + 1
        for level, width in enumerate(widths):
            res = input_size >> level
            if level == 0:
                cin, cout = cout, width
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, "enc", resample_mode="down", **blk)
            for i in range(num_blocks):
                cin, cout = cout, width
                self.enc[f"{res}x{res}_block{i}"] = Block(
                    cin, cout, cemb, "enc", attention=res in attn_resolutions, **blk
                )

        skips = [m.out_channels for m in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, width in reversed(list(enumerate(widths))):
            res = input_size >> level
            if level == len(widths) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, "dec", attention=True, **blk)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, "dec", **blk)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, "dec", resample_mode="up", **blk)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), width
                self.dec[f"{res}x{res}_block{i}"] = Block(
                    cin, cout, cemb, "dec", attention=res in attn_resolutions, **blk
                )
        self.out_conv = MPConv(cout, in_channels, 3)

    def embedding(
        self, c_noise: Tensor, class_labels: Optional[Tensor] = None, uncond: Optional[Tensor] = None
    ) -> Tensor:
        """emb [B, E] = mp_silu(mp_sum(emb_noise(fourier(c_noise)), emb_label(onehot * sqrt(K)), label_balance)).

        c_noise [B]; class_labels [B or 1, K] float (None: no label branch); uncond [B] bool: rows that
        skip the label branch.
        """
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None and class_labels is not None:
            if uncond is None or not bool(uncond.all()):
                cond = mp_sum(emb, self.emb_label(class_labels * math.sqrt(class_labels.shape[1])), self.label_balance)
                emb = cond if uncond is None else torch.where(uncond[:, None], emb, cond)
        return mp_silu(emb)

    def unet(
        self, x: Tensor, c_noise: Tensor, class_labels: Optional[Tensor] = None, uncond: Optional[Tensor] = None
    ) -> Tensor:
        """The original ``UNet.forward``: x [B, C, S, S] (c_in-scaled), c_noise [B], class_labels [B, K]
        one-hot float or None -> F [B, C, S, S]."""
        emb = self.embedding(c_noise, class_labels, uncond)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)

    def labels_onehot(self, y: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        """y [B] long in 0..K -> (one-hot [B, K] float or None when K = 0, uncond mask [B] = (y == K))."""
        uncond = y == self.num_classes
        if not self.num_classes:
            return None, uncond
        return F.one_hot(y.clamp(max=self.num_classes - 1), self.num_classes).float(), uncond

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x_t [B, C, S, S], t [B] (or scalar), y [B] long -> EDM's F [B, C, S, S]."""
        t = self.check_inputs(x, t, y)
        onehot, uncond = self.labels_onehot(y)
        return self.unet(x, edm_noise_label(t), onehot, uncond)

    def denoise(
        self, x: Tensor, sigma: Tensor, class_labels: Optional[Tensor] = None, sigma_data: float = 0.5
    ) -> Tensor:
        """The original ``Precond`` (float32): D = c_skip x + c_out F(c_in x, ln(sigma)/4, labels).

        x [B, C, S, S] noisy (unscaled), sigma [B], class_labels [B, K] float; None gives the all-zero
        label row, as ``Precond`` does (not the same as no label branch). -> D [B, C, S, S].
        """
        x = x.float()
        c_in, c_skip, c_out, c_noise = (c[:, None, None, None] for c in edm_preconditioning(sigma, sigma_data))
        if self.num_classes:
            class_labels = (
                torch.zeros(1, self.num_classes, device=x.device)
                if class_labels is None
                else class_labels.float().reshape(-1, self.num_classes)
            )
        else:
            class_labels = None
        f = self.unet(c_in * x, c_noise.flatten(), class_labels)
        return c_skip * x + c_out * f.float()


# --- released configurations -----------------------------------------------------------------------------

#: model_channels and (training-only) dropout of the ImageNet-512 latent releases (64 x 64 x 4 inputs).
EDM2_SIZES: Dict[str, Dict[str, Any]] = {
    "XS": dict(model_channels=128, dropout=0.0),
    "S": dict(model_channels=192, dropout=0.0),
    "M": dict(model_channels=256, dropout=0.1),
    "L": dict(model_channels=320, dropout=0.1),
    "XL": dict(model_channels=384, dropout=0.1),
    "XXL": dict(model_channels=448, dropout=0.1),
}
_IMG512 = dict(input_size=64, in_channels=4, num_classes=1000)
_ORIGINAL_RENAMES = {"img_resolution": "input_size", "img_channels": "in_channels", "label_dim": "num_classes"}
_IGNORED_ORIGINAL_KWARGS = {"use_fp16", "sigma_data", "logvar_channels"}
#: Original keys that sampling never uses (the training-time uncertainty head of ``Precond``).
EDM2_IRRELEVANT_PREFIXES = ("logvar_fourier.", "logvar_linear.")


def _size_kwargs(size: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    if isinstance(size, Mapping):
        return dict(size)
    name = size[len("EDM2-") :] if size.upper().startswith("EDM2-") else size
    if name.upper() not in EDM2_SIZES:
        raise ValueError(f"unknown EDM2 size {size!r}; expected one of {sorted(EDM2_SIZES)}")
    return {**_IMG512, **EDM2_SIZES[name.upper()]}


def edm2_kwargs_from_original(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Our constructor kwargs from EDM2 ``Precond(**config)`` kwargs (which include the UNet kwargs)."""
    return {_ORIGINAL_RENAMES.get(k, k): v for k, v in config.items() if k not in _IGNORED_ORIGINAL_KWARGS}


def expected_edm2_layout(**model_kwargs: Any) -> Dict[str, tuple]:
    """``{key: shape}`` of ``EDM2UNet(**model_kwargs).state_dict()``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = EDM2UNet(**model_kwargs)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


# --- converter --------------------------------------------------------------------------------------------


def convert_edm2_checkpoint(
    path_or_state: Union[str, os.PathLike, Mapping[str, Any]],
    size: Union[str, Mapping[str, Any]] = "S",
    allow_unsafe_pickle: bool = False,
    *,
    output: Optional[Union[str, os.PathLike]] = None,
    source: Optional[str] = None,
) -> Dict[str, Tensor]:
    """An EDM2 checkpoint -> a state_dict that ``EDM2UNet(**kwargs of size)`` loads strictly.

    Args:
        path_or_state: a plain state_dict / safetensors / ``torch.save`` file (read without unpickling
            code), a released ``edm2-img512-{size}-*.pkl`` (only with ``allow_unsafe_pickle``), or an
            already loaded blob. EMA weights (``ema``) are preferred.
        size: ``"S"``, ``"L"``, ``"XXL"`` (also ``"EDM2-S"`` ..., and XS/M/XL) or a dict of our constructor kwargs.
        allow_unsafe_pickle: opt in to reading a ``.pkl`` snapshot. UNSAFE IN PRINCIPLE: such files are made to
            be unpickled with code execution. We read them with an inert unpickler that never runs the embedded
            code (see :func:`read_persistence_pickle`), but the pickle is still parsed; only use files from a
            source you trust, and keep the converted state_dict (``output``) instead of the pickle.
        output: if given, the converted state_dict is written there (``.safetensors`` or ``torch.save``).
        source: name used in error messages (defaults to the path).

    ``unet.`` / ``module.`` / ``_orig_mod.`` prefixes are stripped and ``logvar_*`` dropped; every key and
    shape is checked against our model's layout (meta device). Raises :class:`CheckpointError` naming the
    file and the offending keys.
    """
    kwargs = _size_kwargs(size)
    if isinstance(path_or_state, Mapping):
        blob, source = path_or_state, source or "<state_dict>"
    else:
        blob, source = load_checkpoint_maybe_pickle(path_or_state, allow_unsafe_pickle), source or str(path_or_state)
    state = pick_weights(blob, source=source)
    state = strip_prefixes(state, ("module.", "_orig_mod.", "unet."))
    state = drop_keys(state, EDM2_IRRELEVANT_PREFIXES)
    expected = expected_edm2_layout(**kwargs)
    check_layout(state, expected, source=f"{source} (EDM2 {size if isinstance(size, str) else 'custom'})")
    state = {k: state[k] for k in expected}
    if output is not None:
        save_state_dict(state, output, metadata={"network": "EDM2UNet", "source": str(source), "kwargs": kwargs})
    return state


def _spec(size: str) -> ModelSpec:
    return ModelSpec(EDM2UNet, dict(EDM2_SIZES[size]), transport="EDM")


#: Registry entries (merged into ``MODELS`` by ``external.py``); build with input_size=64, in_channels=4,
#: num_classes=1000 (512 px on SD-VAE f8c4, EDM2's latent normalisation).
EDM2_MODELS: Dict[str, ModelSpec] = {f"EDM2-{s}": _spec(s) for s in ("S", "L", "XXL")}
