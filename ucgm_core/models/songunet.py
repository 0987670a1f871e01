"""EDM's SongUNet in the DDPM++ configuration of its CIFAR-10 release (Karras et al. 2022), UCGM's "UNet+".

DDPM++ flags only: positional noise embedding of width ``model_channels`` ([sin, cos] order), standard
encoder/decoder, [1, 1] resampling filter, single-head attention, GroupNorm (min(32, C/4) groups, eps 1e-6),
residual scale sqrt(1/2). Parameter and buffer names equal the original ``SongUNet``'s (an ``EDMPrecond``
checkpoint adds ``model.``), so a released checkpoint loads after :func:`convert_songunet_checkpoint`
(which also drops the training-only augmentation-label map ``map_augment``).

As UCGM uses it (``EDM`` transport): input x_t is already c_in-scaled, the network computes the noise label
``c_noise = 2.68 t - 1.59 = ln(sigma) / 4`` from the model time t and returns EDM's F.
:meth:`SongUNet.denoise` is the original ``EDMPrecond`` wrapper, for checks.

Labels: with ``num_classes >= 2`` a ``map_label`` linear takes ``onehot(y) * sqrt(K)``; label ``K`` (null) is
the all-zero row, which is how EDM drops labels. With ``num_classes = 1`` (UCGM's CIFAR setting) there is
no label map and y is ignored. Shape letters: B batch, C channels, S spatial size, E embedding width.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convert import CheckpointError, check_layout, drop_keys, pick_weights, save_state_dict, strip_prefixes
from .edm2 import edm_noise_label, edm_preconditioning
from .edm_pickle import load_checkpoint_maybe_pickle
from .layers import ConditionalNet, channel_sdpa
from .spec import ModelSpec

__all__ = [
    "SongUNet",
    "UNetBlock",
    "SONGUNET_CIFAR10",
    "SONGUNET_MODELS",
    "songunet_kwargs_from_original",
    "expected_songunet_layout",
    "convert_songunet_checkpoint",
    "CheckpointError",
]


def _xavier(shape: Sequence[int], fan_in: int, fan_out: int, scale: float) -> Tensor:
    """EDM's xavier-uniform init times ``scale`` (1e-5 for its near-zero layers)."""
    return (torch.rand(shape) * 2 - 1) * (math.sqrt(6 / (fan_in + fan_out)) * scale)


class Conv(nn.Module):
    """Conv with bias and optional 2x resampling before it, [B, Cin, S, S] -> [B, Cout, S', S'].

    ``down``: depthwise 2x2 average, stride 2; ``up``: depthwise transposed conv with the filter x4 (nearest
    x2). The filter is the persistent buffer ``resample_filter`` [1, 1, 2, 2] (all 1/4), present only when
    resampling. Weight [Cout, Cin, k, k], 'same' padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        up: bool = False,
        down: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.weight = nn.Parameter(
            _xavier(
                (out_channels, in_channels, kernel, kernel),
                in_channels * kernel**2,
                out_channels * kernel**2,
                init_scale,
            )
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if up or down:
            f = torch.ones(2)
            self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None])

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if self.up:
            x = F.conv_transpose2d(x, (self.resample_filter * 4).tile([c, 1, 1, 1]), groups=c, stride=2)
        if self.down:
            x = F.conv2d(x, self.resample_filter.tile([c, 1, 1, 1]), groups=c, stride=2)
        return F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2) + self.bias.reshape(1, -1, 1, 1)


def _linear(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    lin = nn.Linear(in_features, out_features)
    with torch.no_grad():
        lin.weight.copy_(_xavier(lin.weight.shape, in_features, out_features, init_scale))
        lin.bias.zero_()
    return lin


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class UNetBlock(nn.Module):
    """DDPM++ residual block, x [B, Cin, S, S], emb [B, E] -> [B, Cout, S', S'].

    ``h = conv1(drop(silu(norm1(conv0(silu(norm0(x))) + affine(emb)))))``, ``x = (h + skip(x)) / sqrt(2)``
    (``skip`` a 1x1 conv when widths differ or resampling); with attention, single-head self-attention on
    ``norm2(x)`` (qkv channel index c * 3 + {q, k, v}, softmax in float32), ``x = (proj(a) + x) / sqrt(2)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.dropout = in_channels, out_channels, dropout
        self.attention = attention
        self.use_sdpa: Optional[bool] = None  # None: scaled_dot_product_attention on CUDA, EDM's einsum elsewhere
        self.norm0 = _group_norm(in_channels)
        self.conv0 = Conv(in_channels, out_channels, 3, up=up, down=down)
        self.affine = _linear(emb_channels, out_channels)
        self.norm1 = _group_norm(out_channels)
        self.conv1 = Conv(out_channels, out_channels, 3, init_scale=1e-5)
        self.skip = (
            Conv(in_channels, out_channels, 1, up=up, down=down) if in_channels != out_channels or up or down else None
        )
        if attention:
            self.norm2 = _group_norm(out_channels)
            self.qkv = Conv(out_channels, out_channels * 3, 1, init_scale=math.sqrt(0.2))
            self.proj = Conv(out_channels, out_channels, 1, init_scale=1e-5)

    def attend(self, x: Tensor) -> Tensor:
        """Single-head attention over the S*S positions, [B, C, S, S] -> [B, C, S, S] (before ``proj``)."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, h * w).unbind(2)  # each [B, C, N]
        if self.use_sdpa if self.use_sdpa is not None else x.is_cuda:  # fused kernel; the CPU keeps EDM's einsum
            return channel_sdpa(q[:, None], k[:, None], v[:, None]).reshape(b, c, h, w)
        attn = torch.einsum("bcq,bck->bqk", q.float(), (k / math.sqrt(c)).float()).softmax(dim=2).to(q.dtype)
        return torch.einsum("bqk,bck->bcq", attn, v).reshape(b, c, h, w)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (self.skip(x) if self.skip is not None else x)) * math.sqrt(0.5)
        if self.attention:
            x = (self.proj(self.attend(x)) + x) * math.sqrt(0.5)
        return x


def positional_embedding(c_noise: Tensor, channels: int, max_positions: float = 10000.0) -> Tensor:
    """DDPM++ noise embedding [B] -> [B, channels] = ``[sin(c f), cos(c f)]``, f_k = (1/max_positions)^(k/(N-1)),
    k < N = channels/2 (EDM builds [cos, sin] with ``endpoint=True`` and then swaps the halves)."""
    half = channels // 2
    freqs = (1 / max_positions) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - 1))
    args = torch.outer(c_noise, freqs.to(c_noise.dtype))
    return torch.cat([args.sin(), args.cos()], dim=1)


class SongUNet(ConditionalNet):
    """SongUNet (DDPM++) ``F(x_t, t, y)`` in UCGM's EDM-transport convention.

    x_t [B, C, S, S] (c_in-scaled), t [B] model time, y [B] long in 0..K (K = null) -> F [B, C, S, S].
    Level l (resolution S >> l) has width ``model_channels * channel_mult[l]``; the encoder has a 3x3 conv
    at level 0 (to ``model_channels``), a down block at the others, then ``num_blocks`` blocks (attention where
    the resolution is in ``attn_resolutions``); the decoder has ``in0`` (attention) and ``in1`` at the lowest
    level or an up block, then ``num_blocks + 1`` blocks that concatenate one encoder skip each (attention
    only in the last, if the resolution qualifies); output ``aux_conv(silu(aux_norm(x)))`` at full size.
    """

    def __init__(
        self,
        input_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 1,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (2, 2, 2),
        channel_mult_emb: int = 4,
        channel_mult_noise: int = 1,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.13,
    ) -> None:
        super().__init__()
        self.input_size, self.in_channels, self.num_classes = input_size, in_channels, num_classes
        emb = model_channels * channel_mult_emb
        self.noise_channels = noise = model_channels * channel_mult_noise
        if num_classes >= 2:
            self.map_label = _linear(num_classes, noise)
        else:
            self.map_label = None
        self.map_layer0 = _linear(noise, emb)
        self.map_layer1 = _linear(emb, emb)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = input_size >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, emb, down=True, dropout=dropout)
            for i in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(
                    cin, cout, emb, attention=res in attn_resolutions, dropout=dropout
                )

        skips = [self._width(m) for m in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = input_size >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, emb, attention=True, dropout=dropout)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, emb, dropout=dropout)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, emb, up=True, dropout=dropout)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = i == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, emb, attention=attn, dropout=dropout)
        self.dec[f"{input_size}x{input_size}_aux_norm"] = _group_norm(cout)
        self.dec[f"{input_size}x{input_size}_aux_conv"] = Conv(cout, in_channels, 3, init_scale=1e-5)

    @staticmethod
    def _width(m: nn.Module) -> int:
        return m.out_channels if isinstance(m, UNetBlock) else m.weight.shape[0]

    def embedding(self, c_noise: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """emb [B, E] = silu(map_layer1(silu(map_layer0(posemb(c_noise) + map_label(onehot * sqrt(K)))))).

        c_noise [B]; class_labels [B or 1, K] float, ignored without ``map_label``.
        """
        emb = positional_embedding(c_noise, self.noise_channels)
        if self.map_label is not None and class_labels is not None:
            emb = emb + self.map_label(class_labels * math.sqrt(self.num_classes))
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def unet(self, x: Tensor, c_noise: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        """The original ``SongUNet.forward``: x [B, C, S, S] (c_in-scaled), c_noise [B], class_labels [B, K]
        one-hot float (None: no label term) -> F [B, C, S, S]."""
        emb = self.embedding(c_noise, class_labels)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for name, block in self.dec.items():
            if name.endswith("_aux_norm"):
                x = F.silu(block(x))
            elif name.endswith("_aux_conv"):
                x = block(x)
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return x

    def labels_onehot(self, y: Tensor) -> Optional[Tensor]:
        """y [B] long -> one-hot [B, K] float with the null label K as the zero row (None without labels)."""
        if self.map_label is None:
            return None
        return F.one_hot(y, self.num_classes + 1)[:, : self.num_classes].float()

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x_t [B, C, S, S], t [B] (or scalar), y [B] long -> EDM's F [B, C, S, S]."""
        t = self.check_inputs(x, t, y)
        return self.unet(x, edm_noise_label(t), self.labels_onehot(y))

    def denoise(
        self, x: Tensor, sigma: Tensor, class_labels: Optional[Tensor] = None, sigma_data: float = 0.5
    ) -> Tensor:
        """The original ``EDMPrecond`` (float32): D = c_skip x + c_out F(c_in x, ln(sigma)/4, labels).

        x [B, C, S, S] noisy (unscaled), sigma [B], class_labels [B, K] float (None: the zero row).
        """
        x = x.float()
        c_in, c_skip, c_out, c_noise = (c[:, None, None, None] for c in edm_preconditioning(sigma, sigma_data))
        if self.map_label is not None:
            class_labels = (
                torch.zeros(1, self.num_classes, device=x.device)
                if class_labels is None
                else class_labels.float().reshape(-1, self.num_classes)
            )
        f = self.unet(c_in * x, c_noise.flatten(), class_labels)
        return c_skip * x + c_out * f.float()


# --- released configuration -------------------------------------------------------------------------------

#: EDM's CIFAR-10 DDPM++ network (train.py --arch=ddpmpp); num_classes 1 (unconditional) or 10.
#: Dropout is training-only; UCGM's "UNet+" trains/tunes with 0.2 (EDM trained with 0.13).
SONGUNET_CIFAR10: Dict[str, Any] = dict(
    model_channels=128,
    channel_mult=(2, 2, 2),
    channel_mult_emb=4,
    channel_mult_noise=1,
    num_blocks=4,
    attn_resolutions=(16,),
    dropout=0.2,
)
# EDMPrecond/SongUNet kwargs that must have their DDPM++ values (others are not implemented).
_DDPMPP_FLAGS = dict(
    embedding_type="positional",
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=[1, 1],
    model_type="SongUNet",
)
_IGNORED_ORIGINAL_KWARGS = {
    "use_fp16",
    "sigma_data",
    "sigma_min",
    "sigma_max",
    "augment_dim",
    "label_dropout",
    "out_channels",
    *_DDPMPP_FLAGS,
}
_RENAMES = {"img_resolution": "input_size", "img_channels": "in_channels", "label_dim": "num_classes"}
#: Original keys (after ``model.``) that sampling never uses: augmentation labels are training-only.
SONGUNET_IRRELEVANT_PREFIXES = ("map_augment.",)


def songunet_kwargs_from_original(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Our constructor kwargs from EDM ``EDMPrecond(model_type='SongUNet', ...)`` kwargs (DDPM++ flags only)."""
    for k, want in _DDPMPP_FLAGS.items():
        got = config.get(k, want)
        if (list(got) if isinstance(want, list) else got) != want:
            raise NotImplementedError(f"SongUNet with {k}={got!r} is not implemented (only DDPM++)")
    out = {_RENAMES.get(k, k): v for k, v in config.items() if k not in _IGNORED_ORIGINAL_KWARGS}
    if out.get("num_classes", 0) == 0:
        out["num_classes"] = 1
    return out


def expected_songunet_layout(**model_kwargs: Any) -> Dict[str, tuple]:
    """``{key: shape}`` of ``SongUNet(**model_kwargs).state_dict()``, built on the meta device."""
    with torch.device("meta"):
        net = SongUNet(**model_kwargs)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def convert_songunet_checkpoint(
    path_or_state: Union[str, os.PathLike, Mapping[str, Any]],
    num_classes: Optional[int] = None,
    allow_unsafe_pickle: bool = False,
    *,
    output: Optional[Union[str, os.PathLike]] = None,
    source: Optional[str] = None,
    **model_overrides: Any,
) -> Dict[str, Tensor]:
    """An EDM SongUNet (DDPM++) checkpoint -> a state_dict that ``SongUNet`` (CIFAR-10 config) loads strictly.

    Args:
        path_or_state: a plain state_dict / safetensors / ``torch.save`` file (read without unpickling code),
            a released ``edm-cifar10-32x32-{uncond,cond}-vp.pkl`` (only with ``allow_unsafe_pickle``), or an
            already loaded blob. EMA weights (``ema``) are preferred.
        num_classes: 1 (unconditional) or the label count; None infers it from ``map_label.weight``.
        allow_unsafe_pickle: opt in to reading a ``.pkl`` snapshot. UNSAFE IN PRINCIPLE: such files are made to
            be unpickled with code execution. They are read with an inert unpickler that never runs the
            embedded code (:func:`~ucgm_core.models.edm2.read_persistence_pickle`), but the pickle is still
            parsed; only use trusted files and keep the converted state_dict (``output``) instead.
        output: if given, the converted state_dict is written there (``.safetensors`` or ``torch.save``).
        source: name used in error messages (defaults to the path).
        model_overrides: constructor kwargs replacing the CIFAR-10 ones (e.g. for small test nets).

    ``model.`` / ``module.`` / ``_orig_mod.`` prefixes are stripped, ``map_augment.*`` dropped, and every key and
    shape is checked against our model's layout (meta device); :class:`CheckpointError` names the file and keys.
    """
    if isinstance(path_or_state, Mapping):
        blob, source = path_or_state, source or "<state_dict>"
    else:
        blob, source = load_checkpoint_maybe_pickle(path_or_state, allow_unsafe_pickle), source or str(path_or_state)
    state = pick_weights(blob, source=source)
    state = strip_prefixes(state, ("module.", "_orig_mod.", "model."))
    state = drop_keys(state, SONGUNET_IRRELEVANT_PREFIXES)
    if num_classes is None:
        w = state.get("map_label.weight")
        num_classes = int(w.shape[1]) if isinstance(w, Tensor) and w.ndim == 2 else 1
    kwargs = {**SONGUNET_CIFAR10, "input_size": 32, "in_channels": 3, "num_classes": num_classes, **model_overrides}
    expected = expected_songunet_layout(**kwargs)
    check_layout(state, expected, source=f"{source} (SongUNet, num_classes={num_classes})")
    state = {k: state[k] for k in expected}
    if output is not None:
        save_state_dict(state, output, metadata={"network": "SongUNet", "source": str(source), "kwargs": kwargs})
    return state


#: Registry entry (merged into ``MODELS`` by ``external.py``); UCGM builds it with input_size=32,
#: in_channels=3, num_classes=1 (unconditional CIFAR-10 pixels).
SONGUNET_MODELS: Dict[str, ModelSpec] = {
    "SongUNet-CIFAR10": ModelSpec(SongUNet, dict(SONGUNET_CIFAR10), transport="EDM")
}
