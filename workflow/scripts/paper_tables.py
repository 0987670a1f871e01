#!/usr/bin/env python
"""The paper's own tables (2, 3, 7) and the data and plots of its Fig. 2 at paper scale, from evaluation results.

    python workflow/scripts/paper_tables.py table --evals results/eval/*/steps*.json --rows JSON \
        --references JSON --out results/table_paper2_in1k256.csv
    python workflow/scripts/paper_tables.py fig2 --figure fig2a_lambda_steps --evals ... --coords JSON \
        --out results/figures/paper/fig2a_lambda_steps.csv
    python workflow/scripts/paper_tables.py plot --figure fig2a_lambda_steps --csv X.csv --out X.png

A paper table has the columns of the README tables (workflow/scripts/report.py) plus ``kind``: ``run`` for a row
we sample and evaluate (the paper's NFE and FID beside ours), ``reference`` for a competitor's number the paper
prints (label and paper columns only; never run). A Fig. 2 CSV has the columns fixed for both scales
(``paper`` and ``paper_mini``): fig2a ``lambda,steps,metric,value,paper_log_fid``, fig2b
``transport,zeta,metric,value``, fig2c ``kappa,steps,metric,value``; the plots are
``ucgm_core.figures_paper.plots.plot_fig2a(csv, png)`` and its siblings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log  # noqa: E402
from report import COLUMNS, row  # noqa: E402

from ucgm_core.io import atomic_write  # noqa: E402

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
    from ucgm_core.figures_paper.plots import PAPER_FIG2A_LOG_FID

    return PAPER_FIG2A_LOG_FID.get((round(float(lam), 6), int(steps)), math.nan)


def write_csv(df: pd.DataFrame, out: str) -> None:
    """Write ``df`` atomically (ucgm_core.io), floats with 6 significant digits like the README tables."""
    atomic_write(out, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


def reference_row(ref: dict, where: str) -> dict:
    """One ``kind = reference`` row: the paper's printed number for a competitor, nothing measured."""
    missing = [k for k in ("label", "nfe", "fid", "source") if ref.get(k) is None]
    if missing:
        raise SystemExit(f"{where}: reference row lacks {', '.join(missing)}; expected "
                         "{kind: reference, label, steps (optional), nfe, fid, source}")
    if ref.get("kind", "reference") != "reference":
        raise SystemExit(f"{where}.kind: {ref['kind']!r}; expected 'reference'")
    out = {c: None for c in TABLE_COLUMNS}
    out.update(kind="reference", label=ref["label"], steps=ref.get("steps"), paper_nfe=ref["nfe"],
               paper_fid=ref["fid"], paper_source=ref["source"])
    return out


def paper_table(evals: Sequence[str], rows: dict, references: Sequence[dict]) -> pd.DataFrame:
    """Our rows (one per evaluation, in the given order, with the paper's NFE and FID of that sampler and step
    count beside them), then the reference rows."""
    ours = [{"kind": "run", **row(e, rows)} for e in evals]
    refs = [reference_row(r, f"--references[{i}]") for i, r in enumerate(references)]
    return pd.DataFrame(ours + refs, columns=TABLE_COLUMNS)


def fig2_frame(figure: str, evals: Sequence[str], coords: Dict[str, dict]) -> pd.DataFrame:
    """The CSV of one Fig. 2 panel: one row per evaluation (metric ``fid``), at the sampler's coordinates.
    Raises SystemExit naming the figure, sampler or evaluation when a sampler has no coordinates or two
    evaluations fall in the same cell."""
    if figure not in FIG2_COLUMNS:
        raise SystemExit(f"--figure: {figure!r} is not a Fig. 2 panel; expected one of {sorted(FIG2_COLUMNS)}")
    keys = FIG2_COORDS[figure]
    records, seen = [], {}
    for path in evals:
        r = row(path)
        sampler = r["sampler"]
        c = coords.get(sampler)
        if c is None or any(k not in c for k in keys):
            raise SystemExit(f"{figure}: evaluation {path} (sampler {sampler!r}) has no {'/'.join(keys)} in --coords "
                             f"{json.dumps(c)}; expected {keys} for every sampler of the figure")
        cell = tuple(c[k] for k in keys) + ((r["steps"],) if "steps" in FIG2_COLUMNS[figure] else ())
        if cell in seen:
            raise SystemExit(f"{figure}: evaluations {seen[cell]} and {path} are the same cell {cell}; "
                             "expected one evaluation per cell")
        seen[cell] = path
        rec = {k: c[k] for k in keys}
        if "steps" in FIG2_COLUMNS[figure]:
            rec["steps"] = int(r["steps"])
        rec.update(metric="fid", value=r["fid"])
        if figure == "fig2a_lambda_steps":
            rec["paper_log_fid"] = paper_log_fid(float(c["lambda"]), int(r["steps"]))
        records.append(rec)
    sort = [k for k in FIG2_COLUMNS[figure] if k in ("lambda", "kappa", "steps", "transport")]
    df = pd.DataFrame(records, columns=FIG2_COLUMNS[figure])
    return df.sort_values(sort, kind="stable").reset_index(drop=True) if figure != "fig2b_zeta_transport" else df


def plot(figure: str, csv: str, out: str) -> None:
    """Plot a Fig. 2 CSV with ``ucgm_core.figures_paper.plots.plot_<fig2a|fig2b|fig2c>(csv, png)``, the
    plotting functions shared with the miniature."""
    name = "plot_" + figure.split("_", 1)[0]
    try:
        plots = importlib.import_module("ucgm_core.figures_paper.plots")
    except ImportError as e:
        raise SystemExit(f"{figure}: ucgm_core.figures_paper.plots cannot be imported ({e}); it provides {name}")
    fn = getattr(plots, name, None)
    if fn is None:
        raise SystemExit(f"{figure}: ucgm_core.figures_paper.plots has no {name}(csv, png)")
    fn(csv, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="a paper table: our rows, then the reference rows")
    t.add_argument("--evals", nargs="+", required=True)
    t.add_argument("--rows", default="{}", help="JSON: sampler -> {label, paper: [{steps, nfe, fid, source}]}")
    t.add_argument("--references", default="[]", help="JSON: [{kind: reference, label, steps, nfe, fid, source}]")
    t.add_argument("--out", required=True)
    f = sub.add_parser("fig2", help="the CSV of a Fig. 2 panel")
    f.add_argument("--figure", required=True, choices=sorted(FIG2_COLUMNS))
    f.add_argument("--evals", nargs="+", required=True)
    f.add_argument("--coords", required=True, help="JSON: sampler -> {lambda | transport, zeta | kappa}")
    f.add_argument("--out", required=True)
    g = sub.add_parser("plot", help="the PNG of a Fig. 2 panel from its CSV")
    g.add_argument("--figure", required=True, choices=sorted(FIG2_COLUMNS))
    g.add_argument("--csv", required=True)
    g.add_argument("--out", required=True)
    a = p.parse_args(argv)

    if a.cmd == "table":
        df = paper_table(a.evals, json.loads(a.rows), json.loads(a.references))
        write_csv(df, a.out)
        with pd.option_context("display.width", 200, "display.max_columns", 12):
            log(f"{a.out}:\n{df[['kind', 'label', 'steps', 'nfe', 'fid', 'paper_nfe', 'paper_fid']]}")
    elif a.cmd == "fig2":
        df = fig2_frame(a.figure, a.evals, json.loads(a.coords))
        write_csv(df, a.out)
        log(f"{a.out}:\n{df}")
    else:
        plot(a.figure, a.csv, a.out)
        log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
