#!/usr/bin/env python
"""Tables and figures from evaluation results and sample shards (rules in workflow/rules/report.smk, ``shell:``).

    python workflow/scripts/report.py table --evals results/eval/*/steps*.json --out results/table_fmnist.csv
    python workflow/scripts/report.py fid-vs-nfe --evals results/eval/ucgm/steps*.json --out fig.png [--title T]
    python workflow/scripts/report.py grid --shard results/samples/ucgm/steps8/shard-0000.npz --size 10 --out g.png
    python workflow/scripts/report.py rows-grid --shards a/shard-0000.npz b/shard-0000.npz --labels A B --out g.png
    python workflow/scripts/report.py rows-grid --shards ... --labels-json '["A", "B"]' --out g.png

The command line only: the table and its columns are :mod:`ucgm_core.report.table` (``--rows``: sampler ->
label and paper numbers, from the config), the figures :mod:`ucgm_core.figures`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ucgm_core.stage import log
from ucgm_core.figures import plot_fid_vs_nfe, shard_grid, shard_rows_grid
from ucgm_core.report import labels_from_json, metric_series, results_table, write_csv


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--evals", nargs="+", required=True)
    t.add_argument("--rows", default="{}", help="JSON: sampler -> {label, paper: [{steps, nfe, fid, source}]}")
    t.add_argument("--out", required=True)
    f = sub.add_parser("fid-vs-nfe")
    f.add_argument("--evals", nargs="+", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--title", default="")
    f.add_argument("--metric", default="fid", choices=["fid", "kid", "is", "precision", "recall"])
    g = sub.add_parser("grid")
    g.add_argument("--shard", required=True)
    g.add_argument("--size", type=int, default=10)
    g.add_argument("--out", required=True)
    r = sub.add_parser("rows-grid", help="one row of images per shard (a model's samples), like the paper's figure 1")
    r.add_argument("--shards", nargs="+", required=True)
    labels = r.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", nargs="+")
    labels.add_argument("--labels-json", help="the labels as a JSON list of strings (any text, even a leading '-')")
    r.add_argument("--per-row", type=int, default=8)
    r.add_argument("--out", required=True)
    return p


def main(argv=None) -> int:
    """Run one subcommand; a bad input ends the run with one line naming it (SystemExit)."""
    a = build_parser().parse_args(argv)
    try:
        if a.cmd == "table":
            df = results_table(a.evals, json.loads(a.rows))
            write_csv(df, Path(a.out))
            with pd.option_context("display.width", 200, "display.max_columns", 12):
                log(
                    f"{a.out}:\n{df[['sampler', 'model', 'method', 'steps', 'nfe', 'fid', 'is', 'kid', 'precision', 'recall']]}"
                )
            return 0
        if a.cmd == "fid-vs-nfe":
            metric = a.metric.upper() if a.metric != "is" else "IS"
            plot_fid_vs_nfe(metric_series(a.evals, a.metric), a.out, title=a.title, metric=metric)
        elif a.cmd == "rows-grid":
            labels = a.labels if a.labels is not None else labels_from_json(a.labels_json)
            shard_rows_grid(a.shards, labels, a.per_row, a.out)
            for path, label in zip(a.shards, labels):
                log(f"row {label} <- {path}")
        else:
            shard_grid(a.shard, a.size, a.out)
    except ValueError as e:  # ReportError and a shard/label count mismatch
        raise SystemExit(str(e)) from None
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
