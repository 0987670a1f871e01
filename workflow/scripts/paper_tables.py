#!/usr/bin/env python
"""The paper's own tables (2, 3, 7) and the data and plots of its Fig. 2 at paper scale, from evaluation results.

    python workflow/scripts/paper_tables.py table --evals results/eval/*/steps*.json --rows JSON \
        --references JSON --out results/table_paper2_in1k256.csv
    python workflow/scripts/paper_tables.py fig2 --figure fig2a_lambda_steps --evals ... --coords JSON \
        --out results/figures/paper/fig2a_lambda_steps.csv
    python workflow/scripts/paper_tables.py plot --figure fig2a_lambda_steps --csv X.csv --out X.png

The command line only: the tables, the Fig. 2 CSVs (their fixed columns) and plots are
:mod:`ucgm_core.report.paper`.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from ucgm_core.stage import log
from ucgm_core.report import FIG2_COLUMNS, ReportError, fig2_frame, paper_table, plot_fig2, write_csv


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their flags."""
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
    return p


def main(argv=None) -> int:
    """Run one subcommand; a bad input ends the run with the library's message naming it (SystemExit)."""
    a = build_parser().parse_args(argv)
    try:
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
            plot_fig2(a.figure, a.csv, a.out)
            log(f"wrote {a.out}")
    except ReportError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
