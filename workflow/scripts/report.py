#!/usr/bin/env python
"""Tables and figures from evaluation results and sample shards.

    python workflow/scripts/report.py table --evals results/eval/*/steps*.json --out results/table_fmnist.csv
    python workflow/scripts/report.py fid-vs-nfe --evals results/eval/ucgm/steps*.json --out fig.png [--title T]
    python workflow/scripts/report.py grid --shard results/samples/ucgm/steps8/shard-0000.npz --size 10 --out g.png
    python workflow/scripts/report.py rows-grid --shards a/shard-0000.npz b/shard-0000.npz --labels A B --out g.png
    python workflow/scripts/report.py rows-grid --shards ... --labels-json '["A", "B"]' --out g.png

A table has one row per (sampler, steps) with FID, IS, KID, precision and recall, the sampler method and what
it is (``sampler_source``: UCGM-S, a generic baseline, or the original repository@commit and function that a
baseline row's sampler reproduces), NFE as the papers count it and the network rows per image actually run
(``evaluations_per_image``), the paper's reported FID and NFE for that row (``--rows``: sampler -> label and
paper numbers, from the config), and the evaluation contract (sample count, seed, quantisation, extractor
and its weights' hash, reference set, checkpoint hash, all knobs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log  # noqa: E402

from ucgm_core.figures import class_rows, plot_fid_vs_nfe, save_grid, save_labelled_rows  # noqa: E402

COLUMNS = ["label", "sampler", "model", "experiment", "method", "sampler_source", "steps", "nfe",
           "evaluations_per_image", "fid", "is", "is_std", "kid",
           "kid_std", "precision", "recall", "paper_nfe", "paper_fid", "paper_source", "num_samples", "seed",
           "quantize", "extractor", "extractor_weights_sha256", "reference", "num_reference",
           "checkpoint", "checkpoint_sha256", "checkpoint_step", "options", "guidance", "evaluation"]


def row(path: str, rows: dict | None = None) -> dict:
    """One table row from an evaluation JSON; ``rows[sampler]`` may add ``label`` and ``paper`` entries."""
    with open(path) as f:  # an EvaluationResult JSON (ucgm_core.metrics.fidelity), read without torch
        r = json.load(f)
    ctx = r.get("context", {})
    s = ctx.get("samples", {})
    extra = (rows or {}).get(ctx.get("sampler"), {})
    paper = next((p for p in extra.get("paper", []) if p.get("steps") == s.get("steps")), {})
    return {
        "label": extra.get("label") or ctx.get("sampler"), "sampler": ctx.get("sampler"), "model": ctx.get("model"),
        "experiment": ctx.get("experiment"), "paper_nfe": paper.get("nfe"), "paper_fid": paper.get("fid"),
        "paper_source": paper.get("source"), "quantize": s.get("quantize"), "method": s.get("method"),
        "sampler_source": s.get("sampler_source"), "steps": s.get("steps"), "nfe": s.get("nfe"),
        "evaluations_per_image": s.get("evaluations_per_image"), "fid": r.get("fid"), "is": r.get("is_mean"),
        "is_std": r.get("is_std"),
        "kid": r.get("kid_mean"), "kid_std": r.get("kid_std"), "precision": r.get("precision"),
        "recall": r.get("recall"), "num_samples": r.get("num_samples"), "seed": s.get("seed"),
        "extractor": r.get("extractor"), "extractor_weights_sha256": r.get("extractor_weights_sha256"),
        "reference": r.get("reference_id"), "num_reference": r.get("num_reference"), "checkpoint": s.get("checkpoint"),
        "checkpoint_sha256": s.get("checkpoint_sha256"), "checkpoint_step": s.get("checkpoint_step"),
        "options": json.dumps(s.get("options", {}), sort_keys=True),
        "guidance": json.dumps(s.get("guidance", {}), sort_keys=True), "evaluation": os.path.relpath(path),
    }


def json_labels(text: str) -> list:
    """``--labels-json``: a JSON list of strings; a clear error naming the option otherwise."""
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--labels-json: not valid JSON ({e}); expected a list of strings") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise SystemExit(f"--labels-json: {text[:200]!r} is not a list of strings")
    return labels


def atomic_csv(df: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)


def main(argv=None) -> int:
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
    a = p.parse_args(argv)

    if a.cmd == "table":
        rows = json.loads(a.rows)
        df = pd.DataFrame([row(e, rows) for e in a.evals], columns=COLUMNS)
        atomic_csv(df, Path(a.out))
        with pd.option_context("display.width", 200, "display.max_columns", 12):
            log(f"{a.out}:\n{df[['sampler', 'model', 'method', 'steps', 'nfe', 'fid', 'is', 'kid', 'precision', 'recall']]}")
    elif a.cmd == "fid-vs-nfe":
        rows = [row(e) for e in a.evals]
        series = {}
        for r in rows:
            label = f"{r['sampler']} ({r['method']}, {r['model']})"
            series.setdefault(label, []).append((r["nfe"], r[a.metric]))
        plot_fid_vs_nfe(series, a.out, title=a.title, metric=a.metric.upper() if a.metric != "is" else "IS")
        log(f"wrote {a.out}")
    elif a.cmd == "rows-grid":
        labels = a.labels if a.labels is not None else json_labels(a.labels_json)
        if len(labels) != len(a.shards):
            raise SystemExit(f"{len(a.shards)} shards but {len(labels)} labels")
        rows = []
        for path in a.shards:
            with np.load(path) as z:
                imgs = z["images"][: a.per_row]
            rows.append(np.repeat(imgs, 3, axis=1) if imgs.shape[1] == 1 else imgs)
        # matplotlib reads "$...$" as mathtext: an escaped "$" is drawn as itself
        save_labelled_rows(rows, [label.replace("$", r"\$") for label in labels], a.out)
        for path, label in zip(a.shards, labels):
            log(f"row {label} <- {path}")
        log(f"wrote {a.out}")
    else:
        with np.load(a.shard) as z:
            images, labels = z["images"], z["labels"]
        n = a.size * a.size
        num_classes = int(labels.max()) + 1
        if num_classes == a.size and len(images) >= n:
            # labels cycle through the classes: arrange so that each row is one class
            images = images[class_rows(a.size, a.size)]
        save_grid(images, a.out, a.size, a.size)
        log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
