"""The results table: one row per evaluation JSON (``ucgm_core.metrics.fidelity.EvaluationResult``).

A row has the sampler, its method and what it is (``sampler_source``), NFE as the papers count it and the
network rows per image actually run (``evaluations_per_image``), FID, IS, KID, precision and recall, the paper's
reported FID and NFE for that row (``rows``: sampler -> label and paper numbers, from the config) and the
evaluation contract (sample count, seed, quantisation, extractor and its weights' hash, reference set,
checkpoint hash, all knobs). Evaluation files are read as JSON, without torch.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Sequence, Tuple

import pandas as pd

from ..io import atomic_write

__all__ = ["COLUMNS", "ReportError", "row", "results_table", "metric_series", "labels_from_json", "write_csv"]

COLUMNS = [
    "label",
    "sampler",
    "model",
    "experiment",
    "method",
    "sampler_source",
    "steps",
    "nfe",
    "evaluations_per_image",
    "fid",
    "is",
    "is_std",
    "kid",
    "kid_std",
    "precision",
    "recall",
    "paper_nfe",
    "paper_fid",
    "paper_source",
    "num_samples",
    "seed",
    "quantize",
    "extractor",
    "extractor_weights_sha256",
    "reference",
    "num_reference",
    "checkpoint",
    "checkpoint_sha256",
    "checkpoint_step",
    "options",
    "guidance",
    "evaluation",
]


class ReportError(ValueError):
    """A report input that cannot be used as given (the message names the file, option or row)."""


def row(path: str, rows: Mapping | None = None) -> Dict:
    """One table row from an evaluation JSON; ``rows[sampler]`` may add ``label`` and ``paper`` entries.
    Quirk: every field is optional (``.get``): an evaluation written by an older version still makes a row,
    with empty cells where it lacks a field."""
    with open(path) as f:
        r = json.load(f)
    ctx = r.get("context", {})
    s = ctx.get("samples", {})
    extra = (rows or {}).get(ctx.get("sampler"), {})
    paper = next((p for p in extra.get("paper", []) if p.get("steps") == s.get("steps")), {})
    return {
        "label": extra.get("label") or ctx.get("sampler"),
        "sampler": ctx.get("sampler"),
        "model": ctx.get("model"),
        "experiment": ctx.get("experiment"),
        "paper_nfe": paper.get("nfe"),
        "paper_fid": paper.get("fid"),
        "paper_source": paper.get("source"),
        "quantize": s.get("quantize"),
        "method": s.get("method"),
        "sampler_source": s.get("sampler_source"),
        "steps": s.get("steps"),
        "nfe": s.get("nfe"),
        "evaluations_per_image": s.get("evaluations_per_image"),
        "fid": r.get("fid"),
        "is": r.get("is_mean"),
        "is_std": r.get("is_std"),
        "kid": r.get("kid_mean"),
        "kid_std": r.get("kid_std"),
        "precision": r.get("precision"),
        "recall": r.get("recall"),
        "num_samples": r.get("num_samples"),
        "seed": s.get("seed"),
        "extractor": r.get("extractor"),
        "extractor_weights_sha256": r.get("extractor_weights_sha256"),
        "reference": r.get("reference_id"),
        "num_reference": r.get("num_reference"),
        "checkpoint": s.get("checkpoint"),
        "checkpoint_sha256": s.get("checkpoint_sha256"),
        "checkpoint_step": s.get("checkpoint_step"),
        "options": json.dumps(s.get("options", {}), sort_keys=True),
        "guidance": json.dumps(s.get("guidance", {}), sort_keys=True),
        "evaluation": os.path.relpath(path),
    }


def results_table(evals: Sequence[str], rows: Mapping) -> pd.DataFrame:
    """The README table: one row per evaluation file, in the given order, with the columns ``COLUMNS``."""
    return pd.DataFrame([row(e, rows) for e in evals], columns=COLUMNS)


def metric_series(evals: Sequence[str], metric: str) -> Dict[str, List[Tuple[float, float]]]:
    """``{"sampler (method, model)": [(nfe, metric value), ...]}`` of the evaluations, for an X-versus-NFE plot."""
    series: Dict[str, List[Tuple[float, float]]] = {}
    for r in (row(e) for e in evals):
        series.setdefault(f"{r['sampler']} ({r['method']}, {r['model']})", []).append((r["nfe"], r[metric]))
    return series


def labels_from_json(text: str, option: str = "--labels-json") -> List[str]:
    """A JSON list of strings (e.g. row labels that may start with '-'); ReportError naming ``option`` else."""
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{option}: not valid JSON ({e}); expected a list of strings") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ReportError(f"{option}: {text[:200]!r} is not a list of strings")
    return labels


def write_csv(df: pd.DataFrame, out: str | os.PathLike) -> None:
    """Write ``df`` atomically (ucgm_core.io), floats with 6 significant digits (every report CSV)."""
    atomic_write(out, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
