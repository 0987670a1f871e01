"""The paper's own tables (2, 3, 7) and the CSVs and plots of its Fig. 2 at paper scale, from evaluation files.

A paper table has the columns of the results table (:data:`~ucgm_core.report.table.COLUMNS`) plus ``kind``:
``run`` for a row we sample and evaluate (the paper's NFE and FID beside ours), ``reference`` for a competitor's
number the paper prints (label and paper columns only; never run). A Fig. 2 CSV has the columns fixed for both
scales (``paper`` and ``paper_mini``): fig2a ``lambda,steps,metric,value,paper_log_fid``, fig2b
``transport,zeta,metric,value``, fig2c ``kappa,steps,metric,value``; the plots are
``ucgm_core.figures_paper.plots.plot_fig2a(csv, png)`` and its siblings.
"""

from __future__ import annotations

import importlib
import json
import math
from typing import Dict, List, Mapping, Sequence

import pandas as pd

from .table import COLUMNS, ReportError, row

__all__ = [
    "TABLE_COLUMNS",
    "FIG2_COLUMNS",
    "FIG2_COORDS",
    "paper_log_fid",
    "reference_row",
    "paper_table",
    "fig2_frame",
    "plot_fig2",
]

TABLE_COLUMNS = ["kind"] + COLUMNS

# The CSV columns of each Fig. 2 panel (the same at paper scale and in the miniature) and the coordinates a
# sampler contributes (the rest of a row is its steps and its measured FID).
FIG2_COLUMNS: Dict[str, List[str]] = {
    "fig2a_lambda_steps": ["lambda", "steps", "metric", "value", "paper_log_fid"],
    "fig2b_zeta_transport": ["transport", "zeta", "metric", "value"],
    "fig2c_kappa_steps": ["kappa", "steps", "metric", "value"],
}
FIG2_COORDS: Dict[str, List[str]] = {
    "fig2a_lambda_steps": ["lambda"],
    "fig2b_zeta_transport": ["transport", "zeta"],
    "fig2c_kappa_steps": ["kappa"],
}


def paper_log_fid(lam: float, steps: int) -> float:
    """Fig. 2a's printed log FID at (lambda, steps), NaN where the paper prints no cell. The printed cells live in
    ``ucgm_core.figures_paper.plots.PAPER_FIG2A_LOG_FID`` (shared with the miniature). Quirk: the figure labels
    neither its columns nor the log's base; they are printed as read, beside our FID, and converted nowhere."""
    from ..figures_paper.plots import PAPER_FIG2A_LOG_FID

    return PAPER_FIG2A_LOG_FID.get((round(float(lam), 6), int(steps)), math.nan)


def reference_row(ref: Mapping, where: str) -> Dict:
    """One ``kind = reference`` row: the paper's printed number for a competitor, nothing measured."""
    missing = [k for k in ("label", "nfe", "fid", "source") if ref.get(k) is None]
    if missing:
        raise ReportError(
            f"{where}: reference row lacks {', '.join(missing)}; expected "
            "{kind: reference, label, steps (optional), nfe, fid, source}"
        )
    if ref.get("kind", "reference") != "reference":
        raise ReportError(f"{where}.kind: {ref['kind']!r}; expected 'reference'")
    out = {c: None for c in TABLE_COLUMNS}
    out.update(
        kind="reference",
        label=ref["label"],
        steps=ref.get("steps"),
        paper_nfe=ref["nfe"],
        paper_fid=ref["fid"],
        paper_source=ref["source"],
    )
    return out


def paper_table(evals: Sequence[str], rows: Mapping, references: Sequence[Mapping]) -> pd.DataFrame:
    """Our rows (one per evaluation, in the given order, with the paper's NFE and FID of that sampler and step
    count beside them), then the reference rows."""
    ours = [{"kind": "run", **row(e, rows)} for e in evals]
    refs = [reference_row(r, f"--references[{i}]") for i, r in enumerate(references)]
    return pd.DataFrame(ours + refs, columns=TABLE_COLUMNS)


def _fig2_record(figure: str, r: Mapping, c: Mapping) -> Dict:
    """The CSV row of an evaluation (its table row ``r``) at the sampler's coordinates ``c``."""
    rec = {k: c[k] for k in FIG2_COORDS[figure]}
    if "steps" in FIG2_COLUMNS[figure]:
        rec["steps"] = int(r["steps"])
    rec.update(metric="fid", value=r["fid"])
    if figure == "fig2a_lambda_steps":
        rec["paper_log_fid"] = paper_log_fid(float(c["lambda"]), int(r["steps"]))
    return rec


def fig2_frame(figure: str, evals: Sequence[str], coords: Mapping[str, Mapping]) -> pd.DataFrame:
    """The CSV of one Fig. 2 panel: one row per evaluation (metric ``fid``), at the sampler's coordinates.
    Raises ReportError naming the figure, sampler or evaluation when a sampler has no coordinates or two
    evaluations fall in the same cell."""
    if figure not in FIG2_COLUMNS:
        raise ReportError(f"--figure: {figure!r} is not a Fig. 2 panel; expected one of {sorted(FIG2_COLUMNS)}")
    keys = FIG2_COORDS[figure]
    records, seen = [], {}
    for path in evals:
        r = row(path)
        sampler = r["sampler"]
        c = coords.get(sampler)
        if c is None or any(k not in c for k in keys):
            raise ReportError(
                f"{figure}: evaluation {path} (sampler {sampler!r}) has no {'/'.join(keys)} in "
                f"--coords {json.dumps(c)}; expected {keys} for every sampler of the figure"
            )
        cell = tuple(c[k] for k in keys) + ((r["steps"],) if "steps" in FIG2_COLUMNS[figure] else ())
        if cell in seen:
            raise ReportError(
                f"{figure}: evaluations {seen[cell]} and {path} are the same cell {cell}; "
                "expected one evaluation per cell"
            )
        seen[cell] = path
        records.append(_fig2_record(figure, r, c))
    sort = [k for k in FIG2_COLUMNS[figure] if k in ("lambda", "kappa", "steps", "transport")]
    df = pd.DataFrame(records, columns=FIG2_COLUMNS[figure])
    return df.sort_values(sort, kind="stable").reset_index(drop=True) if figure != "fig2b_zeta_transport" else df


def plot_fig2(figure: str, csv: str, out: str) -> None:
    """Plot a Fig. 2 CSV with ``ucgm_core.figures_paper.plots.plot_<fig2a|fig2b|fig2c>(csv, png)``, the
    plotting functions shared with the miniature."""
    name = "plot_" + figure.split("_", 1)[0]
    try:
        plots = importlib.import_module("ucgm_core.figures_paper.plots")
    except ImportError as e:
        raise ReportError(f"{figure}: ucgm_core.figures_paper.plots cannot be imported ({e}); it provides {name}")
    fn = getattr(plots, name, None)
    if fn is None:
        raise ReportError(f"{figure}: ucgm_core.figures_paper.plots has no {name}(csv, png)")
    fn(csv, out)
