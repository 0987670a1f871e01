"""The outcome of an evaluation: :class:`EvaluationResult`, the metric values plus the evaluation contract
(samples, extractor and its weights' sha256, reference id and fingerprint, settings, quantisation, context),
saved and loaded as JSON (schema ``ucgm-evaluation/1``). Split from ``fidelity.py`` (issue 12)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_fidelity

from .imageutil import atomic_write

__all__ = ["SCHEMA", "EvaluationResult"]

SCHEMA = "ucgm-evaluation/1"


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
