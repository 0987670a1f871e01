"""A small CNN classifier as a torch-fidelity feature extractor for small datasets.

The standard Inception features are meaningless for 28x28 grey images (and cost 0.2-0.6 s per image on a
CPU), so for small datasets such as Fashion-MNIST the pipeline trains a small classifier on the dataset
itself and measures FID / KID / precision-recall in its penultimate features and IS from its logits.

* :func:`train_classifier` trains it (about a minute on 2 CPU cores for Fashion-MNIST) and saves a plain
  file ``{"format", "config", "state_dict", "train_info"}`` (tensors and plain Python only, loadable with
  ``torch.load(weights_only=True)``).
* :class:`ClassifierFeatureExtractor` is registered with torch-fidelity under
  :data:`CLASSIFIER_EXTRACTOR_NAME` when this module is imported; it reads the saved file through
  torch-fidelity's ``feature_extractor_weights_path`` argument and accepts uint8 [B,3,H,W] input as
  torch-fidelity passes it (RGB is averaged back to grey for a grey classifier; other sizes are resized).
  Features: ``"features"`` (penultimate, for FID/KID/PRC), ``"logits_unbiased"`` (for IS; the last layer
  has no bias, so these are the classifier's true logits) and its alias ``"logits"``.

The pipeline trains it through ``workflow/scripts/extractor.py`` (rule ``extractor``).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from .imageutil import atomic_torch_save, atomic_write, sha256_file, to_uint8

__all__ = [
    "CLASSIFIER_EXTRACTOR_NAME",
    "ClassifierConfig",
    "SmallClassifier",
    "ClassifierFeatureExtractor",
    "train_classifier",
    "load_classifier",
    "classifier_accuracy",
    "classifier_features",
    "read_idx",
    "load_idx_dataset",
    "register",
]

CLASSIFIER_EXTRACTOR_NAME = "ucgm-classifier"
FILE_FORMAT = "ucgm-classifier/1"


@dataclass
class ClassifierConfig:
    """Architecture and input convention of the classifier (saved next to its weights)."""

    in_channels: int = 1
    resolution: int = 28
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32)  # one conv-BN-ReLU-maxpool stage per entry
    pool_size: int = 7  # spatial size after an adaptive average pool (identity for 28 -> 7)
    feature_dim: int = 128  # penultimate layer: the FID/KID/PRC features
    dropout: float = 0.25
    mean: float = 0.5  # input normalisation of x in [0, 1]
    std: float = 0.5

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "widths" in d:
            d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d


class SmallClassifier(nn.Module):
    """conv-BN-ReLU-maxpool stages, a ReLU feature layer and a bias-free linear head."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for w in config.widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        layers.append(nn.AdaptiveAvgPool2d(config.pool_size))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * config.pool_size**2, config.feature_dim)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes, bias=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B,C,H,W] (or float in [0,1]) -> normalised float [B,in_channels,res,res]."""
        cfg = self.config
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        c = x.shape[1]
        if c != cfg.in_channels:
            if cfg.in_channels == 1 and c == 3:
                x = x.mean(dim=1, keepdim=True)
            elif cfg.in_channels == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"classifier expects {cfg.in_channels} channels, got {c}")
        if x.shape[-2:] != (cfg.resolution, cfg.resolution):
            x = F.interpolate(
                x, size=(cfg.resolution, cfg.resolution), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - cfg.mean) / cfg.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised input -> (features [B, feature_dim], logits [B, num_classes])."""
        h = self.body(x).flatten(1)
        feats = F.relu(self.fc(h))
        logits = self.head(self.drop(feats))
        return feats, logits


# --------------------------------------------------------------------------------------------------------------
# saving / loading


def load_classifier(path: str | os.PathLike, map_location="cpu") -> tuple[SmallClassifier, dict]:
    """Load a saved classifier: returns (model in eval mode, the whole saved dict without the weights)."""
    blob = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a {FILE_FORMAT} file (saved by ucgm_core.metrics.classifier.train_classifier)")
    config = ClassifierConfig.from_dict(blob["config"])
    model = SmallClassifier(config)
    model.load_state_dict(blob["state_dict"])
    model.eval().requires_grad_(False)
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta


def _save_classifier(path: str, model: SmallClassifier, train_info: dict) -> str:
    blob = {
        "format": FILE_FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_info": train_info,
    }
    return atomic_torch_save(blob, path)


# --------------------------------------------------------------------------------------------------------------
# training


def _as_uint8_images(images) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"images must be [N,C,H,W] or [N,H,W], got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = to_uint8(x)  # float images are taken to be in [0, 1] and quantised like generated samples
    return x.contiguous()


@torch.no_grad()
def classifier_accuracy(model: SmallClassifier, images, labels, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on uint8 (or [0,1] float) images."""
    was_training = model.training
    model.eval()
    x = _as_uint8_images(images)
    y = torch.as_tensor(labels).long()
    correct = 0
    for i in range(0, len(x), batch_size):
        _, logits = model(model.preprocess(x[i : i + batch_size]))
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(1, len(x))


@torch.no_grad()
def classifier_features(model: SmallClassifier, images, batch_size: int = 500) -> torch.Tensor:
    """Penultimate features of uint8 images (the same as torch-fidelity's ``"features"`` layer)."""
    model.eval()
    x = _as_uint8_images(images)
    out = [model(model.preprocess(x[i : i + batch_size]))[0] for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def train_classifier(
    images,
    labels,
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int | None = None,
    epochs: float | None = None,
    max_seconds: float | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    config: ClassifierConfig | None = None,
    test_images=None,
    test_labels=None,
    extra_info: dict | None = None,
    verbose: bool = False,
) -> str:
    """Train the small classifier and save it to ``out_path``; returns the path.

    ``images``: uint8 [N,C,H,W] (or float in [0,1], quantised like generated samples), ``labels``: ints
    in [0, num_classes). The length of training is ``steps`` or ``epochs`` (default 3 epochs, capped at
    3000 steps; Fashion-MNIST: 1404 steps, about a minute on 2 CPU cores, about 90.6% test accuracy);
    ``max_seconds`` optionally stops earlier (then the result depends on machine speed).
    AdamW with a short warm-up and cosine decay. With ``test_images``/``test_labels`` the test accuracy is
    measured and stored in the file's ``train_info``. Deterministic for a given seed and step count (the
    file is byte-identical on the same software and hardware); ``<out_path>.json`` gets the wall time etc.
    """
    x = _as_uint8_images(images)
    y = torch.as_tensor(labels).long().contiguous()
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if config is None:
        config = ClassifierConfig(in_channels=x.shape[1], resolution=x.shape[-1], num_classes=int(y.max().item()) + 1)
    n = len(x)
    steps_per_epoch = max(1, n // batch_size)
    if steps is None:
        steps = int(math.ceil(epochs * steps_per_epoch)) if epochs is not None else min(3 * steps_per_epoch, 3000)
    steps = max(1, int(steps))

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SmallClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        p = (step - warmup) / max(1, steps - warmup)
        return lr * 0.5 * (1.0 + math.cos(math.pi * p))

    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    pos = 0
    done = 0
    last_loss = float("nan")
    for step in range(steps):
        if pos + batch_size > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        _, logits = model(model.preprocess(x[idx]))
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        last_loss = loss.item()
        if verbose and (step % 100 == 0 or step == steps - 1):
            print(f"step {step}/{steps} loss {last_loss:.4f} {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    train_seconds = time.perf_counter() - t0
    model.eval()

    # Only run-independent facts go into the weights file, so that the same training on the same software
    # and hardware gives a byte-identical file (its sha256 keys reference caches and the evaluation
    # contract); wall time, versions and caller notes go to the "<out_path>.json" sidecar.
    info = {
        "seed": int(seed),
        "steps": int(done),
        "steps_planned": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "num_train": int(n),
        "final_loss": float(last_loss),
    }
    if test_images is not None and test_labels is not None:
        info["test_accuracy"] = float(classifier_accuracy(model, test_images, test_labels))
        info["num_test"] = int(len(test_labels))
    out_path = os.fspath(out_path)
    _save_classifier(out_path, model, info)
    sidecar = {
        **info,
        **(extra_info or {}),
        "train_seconds": float(train_seconds),
        "torch_version": str(torch.__version__),
        "torch_threads": int(torch.get_num_threads()),
        "sha256": sha256_file(out_path),
        "config": config.to_dict(),
    }
    atomic_write(out_path + ".json", lambda tmp: open(tmp, "w").write(json.dumps(sidecar, indent=2) + "\n"))
    return out_path


# --------------------------------------------------------------------------------------------------------------
# torch-fidelity feature extractor


class ClassifierFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """torch-fidelity wrapper around a saved :class:`SmallClassifier` (pass the file as
    ``feature_extractor_weights_path``). Input: uint8 [B,3,H,W] (or [B,1,H,W])."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f'feature extractor "{name}" needs feature_extractor_weights_path= pointing to a classifier '
                "trained with ucgm_core.metrics.classifier.train_classifier"
            )
        model, meta = load_classifier(feature_extractor_weights_path)
        self.model = model
        self.meta = meta
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
            raise ValueError("Expecting a uint8 image batch [B,C,H,W]")
        feats, logits = self.model(self.model.preprocess(x))
        out = {"features": feats.float(), "logits_unbiased": logits.float(), "logits": logits.float()}
        return tuple(out[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits_unbiased", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return (torch.rand([1, 3, 28, 28]) * 255).to(torch.uint8)


def register(name: str = CLASSIFIER_EXTRACTOR_NAME) -> str:
    """Register :class:`ClassifierFeatureExtractor` with torch-fidelity under ``name`` (idempotent)."""
    existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if existing is None:
        torch_fidelity.register_feature_extractor(name, ClassifierFeatureExtractor)
    elif existing is not ClassifierFeatureExtractor:
        # a reloaded module defines a new class object; keep the registry pointing at the current one
        if getattr(existing, "__qualname__", None) == ClassifierFeatureExtractor.__qualname__:
            FEATURE_EXTRACTORS_REGISTRY[name] = ClassifierFeatureExtractor
        else:
            raise ValueError(f'feature extractor name "{name}" is already registered to {existing}')
    return name


register()


# --------------------------------------------------------------------------------------------------------------
# IDX reading (Fashion-MNIST / MNIST files) and the CLI


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally .gz), e.g. ``train-images-idx3-ubyte.gz``, into a numpy array."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: size mismatch ({arr.size} vs {shape})")
    return arr.reshape(shape)


def load_idx_dataset(folder: str | os.PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images [N,1,H,W], int64 labels [N]) from an MNIST-layout folder; split 'train' or 't10k'."""
    folder = os.fspath(folder)

    def find(stem: str) -> str:
        for name in (stem + ".gz", stem):
            p = os.path.join(folder, name)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(f"{stem}(.gz) not found in {folder}")

    imgs = read_idx(find(f"{split}-images-idx3-ubyte"))
    labs = read_idx(find(f"{split}-labels-idx1-ubyte"))
    return torch.from_numpy(imgs.copy()).unsqueeze(1), torch.from_numpy(labs.astype(np.int64))
