"""Miniature stand-ins for every external file the paper-scale workflow consumes, in the original formats.

:func:`make_paper_assets` writes, deterministically (fixed seeds) and in a few seconds on 2 CPU cores:

* ImageNet train data twice: an ImageFolder ``imagenet/train/<wnid>/<wnid>_<k>.JPEG`` and the ILSVRC-2012
  layout ``ILSVRC2012_img_train.tar`` (a tar of per-class tars ``<wnid>.tar``), holding the same JPEG bytes
  (non-square images, 300x260 .. 560x520, so the ADM centre crop resizes at 256 and at 512);
* ADM (guided-diffusion) reference batches ``VIRTUAL_imagenet256_labeled.npz`` / ``VIRTUAL_imagenet512.npz``:
  ``arr_0`` uint8 [N, S, S, 3], ``mu`` float64 [2048], ``sigma`` float64 [2048, 2048] (symmetric positive
  definite), plus ``mu_s`` [2023] / ``sigma_s`` [2023, 2023], the spatial (sFID) statistics of guided-diffusion's
  evaluator (``mixed_6/conv`` [17, 17, 768] cut to 7 channels: 7 * 17 * 17 = 2023);
* a randomly initialised (seeded) torch-fidelity ``inception-v3-compat`` weights file **with** a finite
  classifier head, so the Inception Score is computable offline;
* tiny external networks built with this project's ports: UCGM's converted format
  ``{"model": sd, "ema": sd}`` (``torch.save``) for SiT-REPA-E / SiT-REPA / LightningDiT / DDT (256 and 512) /
  EDM2 S, L, XXL, and EDM's CIFAR-10 SongUNet as a ``torch_utils.persistence``-style ``.pkl`` snapshot;
* tiny autoencoders as single weights files: SD-VAE ft-EMA / ft-MSE (diffusers ``AutoencoderKL``
  safetensors), VA-VAE and E2E-VA-VAE (LDM ``.ckpt`` = ``{"state_dict": ...}``), DC-AE (diffusers
  ``AutoencoderDC`` safetensors);
* a CIFAR-10 python tarball (``cifar-10-python.tar.gz``) with a few images per batch.

Creation is idempotent: a file that exists is not rewritten (files are written atomically, so a file
that exists is complete). Model weights come from the seeded global RNG inside ``torch.random.fork_rng``
(the caller's RNG state is untouched) followed by a seeded perturbation, so every file is reproducible.
Usage (a session fixture)::

    assets = make_paper_assets(tmp_path_factory.mktemp("paper"))
    net = assets.networks["edm2_s_512"]
    state = convert_external(net)          # the matching converter with the right kwargs
    ae = load_autoencoder(assets.autoencoders["dcae_f32c32"])
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import os
import pickle
import sys
import tarfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "PaperAssets",
    "ExternalNet",
    "TinyAutoencoder",
    "make_paper_assets",
    "convert_external",
    "build_external",
    "load_autoencoder",
    "NETWORK_SPECS",
    "MINI_RESOLUTION",
    "AUTOENCODER_SPECS",
    "INCEPTION_FILENAME",
]

SEED = 20240531

# ----------------------------------------------------------------------------------------------------------
# result types
# ----------------------------------------------------------------------------------------------------------


class ExternalNet(NamedTuple):
    """One tiny released-format network (unpacks as ``path, architecture, overrides, latent_shape, num_classes``).

    ``path``: the weights file. ``architecture``: the registry name (``ucgm_core.models.MODELS``).
    ``overrides``: the ``architecture_overrides`` a config must give (constructor kwargs on top of the
    registry defaults; JSON-friendly: lists, not tuples). ``latent_shape``: ``(C, S, S)`` the network runs
    on, i.e. ``in_channels`` and ``input_size``. ``num_classes``: the label count it was built with (the
    null label is ``num_classes``); 1 for the unconditional SongUNet.
    """

    path: Path
    architecture: str
    overrides: Dict[str, Any]
    latent_shape: Tuple[int, int, int]
    num_classes: int


class TinyAutoencoder(NamedTuple):
    """One tiny autoencoder: ``get_autoencoder(name, **{weights_kwarg: str(path)}, **kwargs)`` loads it.

    ``kwargs`` describe the tiny architecture (``config`` for the diffusers ones, ``ddconfig`` + ``embed_dim``
    for VA-VAE); JSON-friendly. ``latent_channels`` / ``stride``: what it encodes to.
    """

    name: str
    path: Path
    weights_kwarg: str
    kwargs: Dict[str, Any]
    latent_channels: int
    stride: int


@dataclass(frozen=True)
class PaperAssets:
    """Paths (and descriptions) of everything :func:`make_paper_assets` wrote under ``root``.

    Attributes:
        root: the folder everything lives in.
        num_classes: ImageNet classes written (the stand-ins for the 1000 ILSVRC classes).
        images_per_class: JPEGs per class.
        class_names: the wnid-like class names, sorted (``n00000000``, ``n00000001``, ...): label i = index i.
        imagenet_folder: ImageFolder root ``root/imagenet`` with ``train/<wnid>/<wnid>_<k>.JPEG``.
        imagenet_train_tar: ``root/ILSVRC2012_img_train.tar``: a tar of ``<wnid>.tar``, each holding that
            class's JPEGs (the same bytes as in the folder).
        ref_batch_256 / ref_batch_512: ADM reference batches ``VIRTUAL_imagenet256_labeled.npz`` and
            ``VIRTUAL_imagenet512.npz`` (``arr_0`` uint8 [N, S, S, 3], ``mu`` [2048], ``sigma`` [2048, 2048],
            ``mu_s`` [2023], ``sigma_s`` [2023, 2023], all statistics float64).
        ref_batch_size: N, images in each reference batch.
        inception_weights: torch-fidelity ``inception-v3-compat`` state_dict (random, seeded; finite ``fc``).
        networks: tiny external networks by name (see :data:`NETWORK_SPECS`), each an :class:`ExternalNet`.
        autoencoders: tiny autoencoders by registry name, each a :class:`TinyAutoencoder`.
        cifar10_tarball: ``root/cifar-10-python.tar.gz`` (4 images per batch: 20 train, 4 test).
    """

    root: Path
    num_classes: int
    images_per_class: int
    class_names: Tuple[str, ...]
    imagenet_folder: Path
    imagenet_train_tar: Path
    ref_batch_256: Path
    ref_batch_512: Path
    ref_batch_size: int
    inception_weights: Path
    networks: Dict[str, ExternalNet]
    autoencoders: Dict[str, TinyAutoencoder]
    cifar10_tarball: Path


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` and move ``tmp`` onto ``path``, unless ``path`` exists already (idempotence)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """The global torch RNG seeded with ``seed`` inside, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tar_bytes(members: List[Tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# 1. ImageNet stand-in
# ----------------------------------------------------------------------------------------------------------


def _synthetic_image(rng: np.random.Generator, width: int, height: int, label: int, num_classes: int):
    """A smooth, class-tinted RGB PIL image with a few random shapes (compresses like a photo, not noise)."""
    from PIL import Image, ImageDraw, ImageFilter

    hue = label / max(num_classes, 1)
    base = np.array([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * xx / width + np.sin(ang) * yy / height)[..., None]
    other = rng.uniform(0, 1, size=3)
    img = (base * (1 - 0.6 * ramp) + other * 0.6 * ramp) * 200 + 20
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = [x0, y0, min(x0 + w, width - 1), min(y0 + h, height - 1)]
        (draw.ellipse if rng.uniform() < 0.5 else draw.rectangle)(box, fill=color)
    return im.filter(ImageFilter.GaussianBlur(radius=1.5))


def _jpeg_bytes(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _imagenet_jpegs(num_classes: int, images_per_class: int) -> Dict[str, List[Tuple[str, bytes]]]:
    """``{wnid: [(file name, JPEG bytes), ...]}``; sizes alternate landscape / portrait, never square."""
    out: Dict[str, List[Tuple[str, bytes]]] = {}
    for c in range(num_classes):
        wnid = f"n{c:08d}"
        files = []
        for k in range(images_per_class):
            rng = np.random.default_rng([SEED, 1, c, k])
            long_side, short_side = int(rng.integers(330, 561)), int(rng.integers(260, 321))
            w, h = (long_side, short_side) if (c + k) % 2 == 0 else (short_side, long_side)
            files.append((f"{wnid}_{k}.JPEG", _jpeg_bytes(_synthetic_image(rng, w, h, c, num_classes))))
        out[wnid] = files
    return out


def _write_imagenet(root: Path, num_classes: int, images_per_class: int) -> Tuple[Path, Path, Tuple[str, ...]]:
    folder, tar = root / "imagenet", root / "ILSVRC2012_img_train.tar"
    wnids = tuple(f"n{c:08d}" for c in range(num_classes))
    need_folder = not all(
        (folder / "train" / w).is_dir() and len(list((folder / "train" / w).glob("*.JPEG"))) == images_per_class
        for w in wnids
    )
    if need_folder or not tar.exists():
        jpegs = _imagenet_jpegs(num_classes, images_per_class)
        for wnid, files in jpegs.items():
            for name, data in files:
                _atomic(folder / "train" / wnid / name, lambda p, d=data: p.write_bytes(d))
        outer = [(f"{wnid}.tar", _tar_bytes(files)) for wnid, files in jpegs.items()]
        _atomic(tar, lambda p: p.write_bytes(_tar_bytes(outer)))
    return folder, tar, wnids


# ----------------------------------------------------------------------------------------------------------
# 2. ADM reference batches
# ----------------------------------------------------------------------------------------------------------

FID_DIM = 2048  # pool_3
SFID_DIM = 7 * 17 * 17  # mixed_6/conv [17, 17, 768] cut to 7 channels, flattened


def _spd_stats(rng: np.random.Generator, dim: int, rank: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) like Inception pool features' statistics: mu >= 0, sigma = low-rank + diagonal (SPD)."""
    mu = rng.gamma(2.0, 0.2, size=dim)
    a = rng.standard_normal((dim, rank)) * (0.3 / np.sqrt(rank))
    sigma = a @ a.T + np.diag(rng.uniform(0.02, 0.1, size=dim))
    return mu.astype(np.float64), ((sigma + sigma.T) / 2).astype(np.float64)


def _write_ref_batch(path: Path, size: int, n: int, seed: int) -> Path:
    def write(tmp: Path) -> None:
        rng = np.random.default_rng([SEED, 2, seed])
        arr = np.stack(
            [np.asarray(_synthetic_image(rng, size, size, int(rng.integers(0, 1000)), 1000)) for _ in range(n)]
        ).astype(np.uint8)
        mu, sigma = _spd_stats(rng, FID_DIM)
        mu_s, sigma_s = _spd_stats(rng, SFID_DIM)
        with open(tmp, "wb") as f:  # np.savez on a file object: the name stays as given
            np.savez(f, arr_0=arr, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)

    return _atomic(path, write)


# ----------------------------------------------------------------------------------------------------------
# 3. Inception weights (torch-fidelity inception-v3-compat layout, with the logits layer)
# ----------------------------------------------------------------------------------------------------------

INCEPTION_FILENAME = "weights-inception-random-tiny-test.pth"


def _inception_module():
    """torch-fidelity's FeatureExtractorInceptionV3 built without any weights file or download."""
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):  # the empty placeholder: keep the init
            return None if len(state_dict) == 0 else super().load_state_dict(state_dict, *args, **kwargs)

    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty.pth")
        torch.save({}, empty)
        return _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)


def _write_inception(path: Path) -> Path:
    """He-normal conv weights (keeps activations O(1) through the 94 conv+BN+ReLU layers), BN at identity
    statistics (weight 1, bias 0, mean 0, var 1), ``fc`` ~ N(0, 64 / 2048) so that the logits differ
    between images (IS > 1), bias N(0, 0.1^2); every tensor float32."""

    def write(tmp: Path) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

        with _seeded(SEED + 3):
            net = _inception_module()
        g = torch.Generator().manual_seed(SEED + 3)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, BasicConv2d):
                    w = m.conv.weight
                    w.copy_(torch.randn(w.shape, generator=g) * np.sqrt(2.0 / w[0].numel()))
                    m.bn.weight.fill_(1.0)
                    m.bn.bias.zero_()
                    m.bn.running_mean.zero_()
                    m.bn.running_var.fill_(1.0)
            net.fc.weight.copy_(torch.randn(net.fc.weight.shape, generator=g) * (8.0 / np.sqrt(FID_DIM)))
            net.fc.bias.copy_(torch.randn(net.fc.bias.shape, generator=g) * 0.1)
        state = {
            k: v.detach().float().contiguous() if v.is_floating_point() else v.detach().clone()
            for k, v in net.state_dict().items()
        }
        torch.save(state, tmp)

    return _atomic(path, write)


# ----------------------------------------------------------------------------------------------------------
# 4. tiny external networks
# ----------------------------------------------------------------------------------------------------------

_DIT_TINY = dict(depth=2, hidden_size=64, num_heads=2)
_DDT_TINY = dict(num_groups=2, hidden_size=32, num_blocks=2, num_encoder_blocks=1)
_EDM2_TINY = dict(model_channels=8, num_blocks=1, attn_resolutions=[16], channels_per_head=8)

#: name -> (architecture, overrides, latent shape (C, S, S), conditional?, file name).
#: The miniature runs ImageNet "256" at 64 px and "512" at 128 px (tests/paper/test_paper_mini.py): the networks'
#: latent shapes below are those of the tiny VAEs at these sizes (f16 -> 4x4, f8 -> 8x8 / 16x16).
MINI_RESOLUTION = {256: 64, 512: 128}

NETWORK_SPECS: Dict[str, Tuple[str, Dict[str, Any], Tuple[int, int, int], bool, str]] = {
    "sit_xl1_repae_256": ("SiT-XL/1-REPAE", dict(_DIT_TINY), (32, 4, 4), True, "sit-xl1-repae-256.pt"),
    "sit_xl2_repa_256": ("SiT-XL/2-REPA", dict(_DIT_TINY), (4, 8, 8), True, "sit-xl2-repa-256.pt"),
    "lightningdit_xl1_256": ("LightningDiT-XL/1", dict(_DIT_TINY), (32, 4, 4), True, "lightningdit-xl1-256.pt"),
    "ddt_xl2_256": ("DDT-XL/2", dict(_DDT_TINY), (4, 8, 8), True, "ddt-xl2-256.pt"),
    "ddt_xl2_512": ("DDT-XL/2", dict(_DDT_TINY), (4, 16, 16), True, "ddt-xl2-512.pt"),
    # EDM2: three sizes (widths 8/16/16, 8/16/24, 8/16/32 at levels 16, 8, 4; 8 channels per head)
    "edm2_s_512": ("EDM2-S", dict(_EDM2_TINY, channel_mult=[1, 2, 2]), (4, 16, 16), True, "edm2-img512-s.pt"),
    "edm2_l_512": ("EDM2-L", dict(_EDM2_TINY, channel_mult=[1, 2, 3]), (4, 16, 16), True, "edm2-img512-l.pt"),
    "edm2_xxl_512": ("EDM2-XXL", dict(_EDM2_TINY, channel_mult=[1, 2, 4]), (4, 16, 16), True, "edm2-img512-xxl.pt"),
    # EDM's CIFAR-10 DDPM++ (unconditional: num_classes 1, no label map), levels 32, 16 with attention at 16
    "songunet_cifar10": (
        "SongUNet-CIFAR10",
        dict(model_channels=16, channel_mult=[1, 2], channel_mult_emb=2, num_blocks=1, attn_resolutions=[16]),
        (3, 32, 32),
        False,
        "edm-cifar10-32x32-uncond-vp.pkl",
    ),
}

# tensors that are fixed tables or buffers of the construction: never perturbed
_FIXED = ("pos_embed", "freqs", "phases", "resample_filter", "num_batches_tracked")


def _perturb_(net: nn.Module, g: torch.Generator) -> None:
    """Make the zero / near-zero initialised parts random (as the fixtures do), so the output is not
    identically 0 and depends on t and y: adaLN-Zero and final layers, zero biases, EDM2's gains, EDM's
    1e-5-scaled convs; the time MLP ~ N(0, 1/fan_in), label tables ~ N(0, 0.5^2)."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point() or any(f in name for f in _FIXED):
                continue
            if name.endswith("emb_gain"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.8 + 0.2)
            elif name == "out_gain":
                t.copy_(torch.rand(t.shape, generator=g) * 0.6 + 0.7)
            elif "y_embedder.embedding_table" in name:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            elif "t_embedder.mlp" in name and name.endswith("weight"):
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(t.shape[1]))
            elif t.numel() and t.abs().max() < 1e-3:
                if t.ndim >= 2:
                    t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(t[0].numel()))
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)


def _net_num_classes(name: str, num_classes: int) -> int:
    return num_classes if NETWORK_SPECS[name][3] else 1


def build_external(net: ExternalNet) -> nn.Module:
    """``build_model(architecture, input_size=S, in_channels=C, num_classes=K, **overrides)`` (random init)."""
    from ucgm_core.models import build_model

    c, s, _ = net.latent_shape
    return build_model(net.architecture, input_size=s, in_channels=c, num_classes=net.num_classes, **net.overrides)


def _layout_kwargs(net: ExternalNet) -> Dict[str, Any]:
    c, s, _ = net.latent_shape
    return dict(input_size=s, in_channels=c, num_classes=net.num_classes, **net.overrides)


def convert_external(net: ExternalNet, **extra: Any) -> Dict[str, Tensor]:
    """The network's file through its family's converter, with the kwargs that make it accept the tiny layout.

    SiT: ``convert_sit_checkpoint(path, variant, input_size, in_channels, num_classes, **overrides)``;
    LightningDiT / DDT: ``convert_*_checkpoint(path, input_size, in_channels, num_classes, **overrides)``;
    EDM2: ``convert_edm2_checkpoint(path, {input_size, in_channels, num_classes, **EDM2_SIZES[s], **overrides})``
    (the size argument is the FULL kwargs dict); SongUNet: ``convert_songunet_checkpoint(path,
    allow_unsafe_pickle=True, input_size, in_channels, num_classes=1, **overrides)``.
    """
    arch, kw = net.architecture, _layout_kwargs(net)
    if arch.startswith("SiT-"):
        from ucgm_core.models.sit import SIT_CHECKPOINT_VARIANT, convert_sit_checkpoint

        return convert_sit_checkpoint(net.path, SIT_CHECKPOINT_VARIANT[arch], **kw, **extra)
    if arch.startswith("LightningDiT"):
        from ucgm_core.models.lightningdit import convert_lightningdit_checkpoint

        return convert_lightningdit_checkpoint(net.path, **kw, **extra)
    if arch.startswith("DDT"):
        from ucgm_core.models.ddt import convert_ddt_checkpoint

        return convert_ddt_checkpoint(net.path, **kw, **extra)
    if arch.startswith("EDM2-"):
        from ucgm_core.models.edm2 import EDM2_SIZES, convert_edm2_checkpoint

        size = {**EDM2_SIZES[arch[len("EDM2-") :]], **kw}
        return convert_edm2_checkpoint(net.path, size, **extra)
    if arch.startswith("SongUNet"):
        from ucgm_core.models.songunet import convert_songunet_checkpoint

        extra = {"allow_unsafe_pickle": True, **extra}
        return convert_songunet_checkpoint(net.path, **kw, **extra)
    raise ValueError(f"no converter known for {arch!r}")


# --- EDM-style .pkl snapshot (torch_utils.persistence) ------------------------------------------------------


def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called: the readers must not run it
    raise RuntimeError("paper_assets: a persistence pickle was unpickled with code execution")


@contextlib.contextmanager
def _persistence_modules() -> Iterator[types.ModuleType]:
    """Temporary ``torch_utils.persistence`` module so that pickle can name its reconstruction function."""
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    fn = _reconstruct_persistent_obj
    fn.__module__, fn.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = fn
    pkg.persistence = mod
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})
    try:
        yield mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Persistent:
    """A picklable object that reduces like a ``torch_utils.persistence`` class instance."""

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __reduce_ex__(self, protocol):
        meta = dict(
            type="class",
            version=6,
            class_name=self.class_name,
            state=self.state,
            module_src="raise RuntimeError('embedded module source executed')\n",
        )
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


def _make_persistent(module: nn.Module, class_name: str) -> None:
    """``module`` (and its non-container children) now pickle as persistence objects holding ``__dict__``."""
    for m in list(module.modules()):
        if isinstance(m, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
            continue
        name = class_name if m is module else type(m).__name__

        def reduce_ex(self, protocol, _name=name):
            return _Persistent(_name, dict(self.__dict__)).__reduce_ex__(protocol)

        m.__class__ = type(type(m).__name__, (type(m),), {"__reduce_ex__": reduce_ex})


def _write_edm_pickle(path: Path, net: nn.Module, label_dim: int) -> None:
    """EDM's ``network-snapshot-*.pkl`` layout: ``{ema: EDMPrecond(model=SongUNet), loss_fn, augment_pipe,
    dataset_kwargs}``; the SongUNet carries EDM's training-only ``map_augment`` (dropped by the converter)."""
    net.map_augment = nn.Linear(9, net.noise_channels, bias=False)  # augment_dim 9, as EDM's CIFAR-10 runs
    precond = nn.Module()
    precond.model = net
    precond.img_resolution, precond.img_channels, precond.label_dim = net.input_size, net.in_channels, label_dim
    precond.use_fp16, precond.sigma_min, precond.sigma_max, precond.sigma_data = False, 0.0, float("inf"), 0.5
    _make_persistent(precond, "EDMPrecond")
    data = dict(
        ema=precond,
        loss_fn=_Persistent("EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5)),
        augment_pipe=None,
        dataset_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path="cifar10-32x32.zip",
            use_labels=False,
            xflip=False,
            resolution=32,
            max_size=50000,
        ),
    )
    with _persistence_modules():
        blob = pickle.dumps(data, protocol=4)
    path.write_bytes(blob)


def _write_network(root: Path, name: str, num_classes: int, index: int) -> ExternalNet:
    arch, overrides, shape, _, filename = NETWORK_SPECS[name]
    net = ExternalNet(root / "models" / filename, arch, dict(overrides), shape, _net_num_classes(name, num_classes))

    def write(tmp: Path) -> None:
        with _seeded(SEED + 100 + index):
            model = build_external(net).eval()
        _perturb_(model, torch.Generator().manual_seed(SEED + 200 + index))
        if arch.startswith("SongUNet"):
            _write_edm_pickle(tmp, model, label_dim=0)
        else:
            sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            torch.save({"model": sd, "ema": {k: v.clone() for k, v in sd.items()}}, tmp)

    _atomic(net.path, write)
    return net


# ----------------------------------------------------------------------------------------------------------
# 5. tiny autoencoders
# ----------------------------------------------------------------------------------------------------------

TINY_SDVAE_CONFIG: Dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[4, 8, 16, 16],
    layers_per_block=1,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=4,
    sample_size=256,
    scaling_factor=0.18215,
)

# LDM ddconfig: the VA-VAE wrapper fixes norm_num_groups at 32 (as the LDM code), so ch >= 32 at full
# resolution, which is what costs time (about 0.1-0.3 s per 256 px image on 2 cores). num_res_blocks 0 would
# halve it but vavae.py infers the level count from the encoder's block keys, which that config lacks.
TINY_VAVAE_DDCONFIG: Dict[str, Any] = dict(
    double_z=True,
    z_channels=32,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 1, 1, 1, 1],
    num_res_blocks=1,
    attn_resolutions=[16],
    dropout=0.0,
)

# DC-AE f32c32 shape: 6 stages (stride 2^5 = 32), 32 latent channels, ResBlock x3 + EfficientViT x3 as released
TINY_DCAE_CONFIG: Dict[str, Any] = dict(
    in_channels=3,
    latent_channels=32,
    attention_head_dim=8,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_block_out_channels=[8, 8, 16, 16, 32, 32],
    decoder_block_out_channels=[8, 8, 16, 16, 32, 32],
    encoder_layers_per_block=[0, 1, 1, 1, 1, 1],
    decoder_layers_per_block=[0, 1, 1, 1, 1, 1],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types=["batch_norm"] * 3 + ["rms_norm"] * 3,
    decoder_act_fns=["relu"] * 3 + ["silu"] * 3,
    scaling_factor=1.0,
)

#: file -> (writer kind, config, seed offset); registry names -> file, weights kwarg, kwargs, channels, stride
_AE_FILES: Dict[str, Tuple[str, Dict[str, Any], int]] = {
    "sd-vae-ft-ema.safetensors": ("sdvae", TINY_SDVAE_CONFIG, 0),
    "sd-vae-ft-mse.safetensors": ("sdvae", TINY_SDVAE_CONFIG, 1),
    "vavae_f16d32.ckpt": ("ldm", TINY_VAVAE_DDCONFIG, 2),
    "e2evavae_f16d32.ckpt": ("ldm", TINY_VAVAE_DDCONFIG, 3),
    "dc-ae-f32c32-in-1.0.safetensors": ("dcae", TINY_DCAE_CONFIG, 4),
}
AUTOENCODER_SPECS: Dict[str, Tuple[str, str, Dict[str, Any], int, int]] = {
    "sdvae_ema_f8c4": ("sd-vae-ft-ema.safetensors", "source", {"config": TINY_SDVAE_CONFIG}, 4, 8),
    "sdvae_mse_f8c4": ("sd-vae-ft-mse.safetensors", "source", {"config": TINY_SDVAE_CONFIG}, 4, 8),
    "sdvae_f8c4": ("sd-vae-ft-mse.safetensors", "source", {"config": TINY_SDVAE_CONFIG}, 4, 8),
    "edm2_sdvae_f8c4": ("sd-vae-ft-mse.safetensors", "source", {"config": TINY_SDVAE_CONFIG}, 4, 8),
    "vavae_f16d32": ("vavae_f16d32.ckpt", "checkpoint", {"ddconfig": TINY_VAVAE_DDCONFIG, "embed_dim": 32}, 32, 16),
    "e2evavae_f16d32": (
        "e2evavae_f16d32.ckpt",
        "checkpoint",
        {"ddconfig": TINY_VAVAE_DDCONFIG, "embed_dim": 32},
        32,
        16,
    ),
    "dcae_f32c32": ("dc-ae-f32c32-in-1.0.safetensors", "source", {"config": TINY_DCAE_CONFIG}, 32, 32),
}


def _perturb_norms_(model: nn.Module, g: torch.Generator) -> None:
    """Norm affine parameters (initialised to 1 / 0) made random so that a wrong mapping would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))


def _write_autoencoder(path: Path, kind: str, config: Mapping[str, Any], offset: int) -> None:
    def write(tmp: Path) -> None:
        from safetensors.torch import save_file

        with _seeded(SEED + 300 + offset):
            if kind == "sdvae":
                from diffusers import AutoencoderKL

                model = AutoencoderKL(**config)
            elif kind == "dcae":
                from diffusers import AutoencoderDC

                model = AutoencoderDC(**config)
            else:
                from diffusers import AutoencoderKL

                from ucgm_core.autoencoders.vavae import ldm_vae_config_to_diffusers

                model = AutoencoderKL(**ldm_vae_config_to_diffusers(config, int(config["z_channels"])))
        _perturb_norms_(model, torch.Generator().manual_seed(SEED + 400 + offset))
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        if kind == "ldm":
            from ucgm_core.autoencoders.vavae import diffusers_to_ldm_state_dict

            torch.save({"state_dict": diffusers_to_ldm_state_dict(state)}, tmp)
        else:
            save_file(state, str(tmp), metadata={"format": "pt"})

    _atomic(path, write)


def load_autoencoder(ae: TinyAutoencoder, **extra: Any):
    """``get_autoencoder(ae.name, **{ae.weights_kwarg: str(ae.path)}, **ae.kwargs, **extra)``."""
    from ucgm_core.autoencoders import get_autoencoder

    return get_autoencoder(ae.name, **{ae.weights_kwarg: str(ae.path)}, **ae.kwargs, **extra)


# ----------------------------------------------------------------------------------------------------------
# 6. CIFAR-10 tarball (content from tests/data/test_data_shards.py's writer)
# ----------------------------------------------------------------------------------------------------------


def _cifar_writer():
    # loaded by path: tests/data is not on sys.path when only tests/paper is collected
    spec = importlib.util.spec_from_file_location(
        "_paper_assets_test_data_shards", Path(__file__).parents[1] / "data" / "test_data_shards.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    _write_cifar = mod._write_cifar
    return _write_cifar


def _write_cifar10(path: Path) -> Path:
    def write(tmp: Path) -> None:
        raw = tmp.with_name(tmp.name + ".raw")
        try:
            _cifar_writer()(raw, n_per_batch=4, seed=SEED % 2**31)
            # re-compress with a fixed gzip header (no time stamp, no file name): byte-identical reruns
            with gzip.open(raw, "rb") as f:
                tar = f.read()
            with open(tmp, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
                gz.write(tar)
        finally:
            if raw.exists():
                raw.unlink()

    return _atomic(path, write)


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------

REF_BATCH_SIZE = 12


def make_paper_assets(root: Path, *, num_classes: int = 4, images_per_class: int = 3) -> PaperAssets:
    """Write (or find, if already there) every stand-in under ``root`` and return their paths.

    ``num_classes`` / ``images_per_class``: the ImageNet stand-in's size; the conditional networks are
    built with ``num_classes`` labels too (null label = ``num_classes``). Changing them for an existing
    ``root`` is not detected for files that already exist: use a fresh root.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder, tar, wnids = _write_imagenet(root, num_classes, images_per_class)
    ref256 = _write_ref_batch(root / "VIRTUAL_imagenet256_labeled.npz", 256, REF_BATCH_SIZE, 256)
    ref512 = _write_ref_batch(root / "VIRTUAL_imagenet512.npz", 512, REF_BATCH_SIZE, 512)
    inception = _write_inception(root / "inception" / INCEPTION_FILENAME)
    networks = {name: _write_network(root, name, num_classes, i) for i, name in enumerate(NETWORK_SPECS)}
    ae_dir = root / "autoencoders"
    for filename, (kind, config, offset) in _AE_FILES.items():
        _write_autoencoder(ae_dir / filename, kind, config, offset)
    autoencoders = {
        name: TinyAutoencoder(name, ae_dir / f, kwarg, dict(kw), c, s)
        for name, (f, kwarg, kw, c, s) in AUTOENCODER_SPECS.items()
    }
    cifar = _write_cifar10(root / "cifar-10-python.tar.gz")
    return PaperAssets(
        root=root,
        num_classes=num_classes,
        images_per_class=images_per_class,
        class_names=wnids,
        imagenet_folder=folder,
        imagenet_train_tar=tar,
        ref_batch_256=ref256,
        ref_batch_512=ref512,
        ref_batch_size=REF_BATCH_SIZE,
        inception_weights=inception,
        networks=networks,
        autoencoders=autoencoders,
        cifar10_tarball=cifar,
    )


if __name__ == "__main__":  # python tests/paper/paper_assets.py DIR: build and time
    import time

    t0 = time.time()
    a = make_paper_assets(Path(sys.argv[1] if len(sys.argv) > 1 else "paper_assets_out"))
    print(f"built in {time.time() - t0:.1f} s under {a.root}")
