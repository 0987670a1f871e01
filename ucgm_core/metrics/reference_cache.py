"""The reference side of an evaluation, computed once and cached: reference features and FID statistics under
``cache_dir``, keyed by (reference id, extractor, sha256 of its weights, the reference's fingerprint), each file
written atomically; a stale entry (another fingerprint or weights) is cleared and recomputed, never reused.
Split from ``fidelity.py`` (issue 12)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from typing import Sequence

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics

from .features import default_layer, extract_features
from .imageutil import atomic_torch_save, atomic_write, sha256_file, to_uint8
from .specs import FeatureExtractorSpec, ReferenceSet, default_metrics_cache_dir

__all__ = ["reference_features", "reference_statistics", "reference_compute_count", "load_stats"]

_COUNTERS = {"reference_feature_computations": 0}


def reference_compute_count() -> int:
    """How many times reference features were computed (not loaded from the cache) in this process."""
    return _COUNTERS["reference_feature_computations"]


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
    want = {
        "reference_fingerprint": json.loads(json.dumps(reference.fingerprint, default=str)),
        "extractor": extractor_name,
        "extractor_weights_sha256": weights_sha,
    }
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


def load_stats(path: str) -> dict:
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


def _write_meta(
    folder: str, reference: ReferenceSet, spec: FeatureExtractorSpec, sha: str, n: int, images=None
) -> None:
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


def reference_features(
    reference: ReferenceSet,
    extractor: FeatureExtractorSpec,
    layers: Sequence[str],
    *,
    cache_dir: str | None = None,
    batch_size: int = 64,
    cuda: bool | None = None,
    save_cpu_ram: bool | None = None,
    _fe=None,
) -> tuple[dict[str, torch.Tensor] | None, str]:
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
    feats = extract_features(
        images, extractor, layers, batch_size=batch_size, cuda=cuda, save_cpu_ram=save_cpu_ram, _fe=_fe
    )
    _COUNTERS["reference_feature_computations"] += 1
    os.makedirs(folder, exist_ok=True)
    for k, p in paths.items():
        _save_tensor(p, feats[k])
    _write_meta(folder, reference, extractor, sha, len(next(iter(feats.values()))), images)
    return feats, "computed"


def reference_statistics(
    reference: ReferenceSet,
    extractor: FeatureExtractorSpec,
    layer: str | None = None,
    *,
    cache_dir: str | None = None,
    **kw,
) -> tuple[dict | None, str, int | None]:
    """FID statistics {mu, sigma} (float64) of the reference in ``layer`` (default: the extractor's FID layer).

    Order: ``reference.stats_path``; the cached .npz; the cached features (stats are then cached); features
    computed from ``reference.images``. Returns (stats or None, source, number of reference images
    or None if unknown).
    """
    cache_dir = cache_dir or default_metrics_cache_dir()
    layer = layer or default_layer(extractor.name, "fid")
    sha = extractor.sha256()
    folder = _cache_folder(cache_dir, reference, extractor.name, sha)
    stats_path = os.path.join(folder, f"fid-stats-{_slug(layer)}.npz")
    if reference.stats_path is not None:
        return load_stats(reference.stats_path), f"stats_file:{sha256_file(reference.stats_path)}", None
    if os.path.isfile(stats_path):
        stale = _stale_cache(folder, reference, extractor.name, sha)
        if stale is None:
            _check_fingerprint(folder, reference)
            return load_stats(stats_path), "cache", _read_meta(folder).get("num_reference")
        _clear_cache(folder, stale)
    feats, source = reference_features(reference, extractor, [layer], cache_dir=cache_dir, **kw)
    if feats is None:
        return None, "none", None
    stats = fid_features_to_statistics(feats[layer].double())
    _save_stats(stats_path, stats)
    return load_stats(stats_path), source, int(len(feats[layer]))
