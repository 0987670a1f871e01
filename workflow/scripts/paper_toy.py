#!/usr/bin/env python
"""The trained-toy miniatures of the paper's Fig. 2a, 2b, 2c, 3 and 4 (ucgm_core.figures_paper.toy_runs).

Run by Snakemake's ``script:`` directive (workflow/rules/paper_toy.smk), or by hand:

    python workflow/scripts/paper_toy.py train gmix-Linear-l0-z0 results/paper_mini/toy/gmix-Linear-l0-z0.pt
    python workflow/scripts/paper_toy.py figure fig2a out.csv out.png results/paper_mini/toy/*.pt
    python workflow/scripts/paper_toy.py plot fig2a out.csv out.png

Settings: a JSON mapping of config ``paper_toy`` keys (``--settings``; defaults of ``TrainSettings`` and
``EvalSettings`` where absent). One thread: the networks are too small for a second one to help.
"""


import argparse
import json
import time
from pathlib import Path
from typing import Callable, List

import torch

from ucgm_core.figures_paper.plots import PLOTS
from ucgm_core.figures_paper.toy_runs import (
    data_floor,
    figure_rows,
    load_models,
    parse_model_key,
    save_model,
    split_settings,
    train_model,
    FIG2_DATASET,
)


def train(key: str, out: str, settings: dict, log: Callable[[str], None]) -> None:
    """Train the toy model ``key`` and cache it at ``out``."""
    spec = parse_model_key(key)
    train_settings, _ = split_settings(settings)
    ckpt = train_model(spec, train_settings, log=log)
    save_model(ckpt, out)
    log(f"{key}: trained {train_settings.train_steps} steps in {ckpt['seconds']:.1f} s "
        f"({ckpt['cpu_seconds']:.1f} s CPU) -> {out}")


def figure(name: str, csv: str, png: str, models: List[str], settings: dict, log: Callable[[str], None]) -> None:
    """Sample and measure the cached ``models`` for figure ``name``, write its CSV, plot it."""
    _, ev = split_settings(settings)
    start, cpu_start = time.perf_counter(), time.process_time()
    df, notes = figure_rows(name, load_models(models), ev)
    Path(csv).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(csv).with_name(f".{Path(csv).name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(csv)
    for line in notes:
        log(line)
    if name.startswith("fig2"):
        log(f"{name}: metric floor (two independent {FIG2_DATASET} draws of {ev.eval_samples} points): "
            f"{data_floor(FIG2_DATASET, ev):.4f}")
    PLOTS[name](csv, png)
    log(f"{name}: {len(df)} rows in {time.perf_counter() - start:.1f} s ({time.process_time() - cpu_start:.1f} s CPU) "
        f"-> {csv}, {png}")


def stdout_log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _file_logger(path: str) -> Callable[[str], None]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", buffering=1)

    def write(msg: str) -> None:
        handle.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")

    return write


def from_snakemake(smk) -> None:
    """Entry point under ``script:``: the rule's ``params.task`` says what to do."""
    log = _file_logger(str(smk.log[0]))
    settings = json.loads(smk.params.settings)
    if smk.params.task == "train":
        train(smk.wildcards.toymodel, str(smk.output[0]), settings, log)
    elif smk.params.task == "figure":
        figure(smk.params.figure, str(smk.output.csv), str(smk.output.png), [str(p) for p in smk.input], settings, log)
    else:
        raise ValueError(f"paper_toy.py: params.task={smk.params.task!r}; expected 'train' or 'figure'")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("train", help="train one toy model")
    p.add_argument("key")
    p.add_argument("out")
    p = sub.add_parser("figure", help="sample and measure, write a figure's CSV and PNG")
    p.add_argument("name", choices=sorted(PLOTS))
    p.add_argument("csv")
    p.add_argument("png")
    p.add_argument("models", nargs="+")
    p = sub.add_parser("plot", help="plot a figure's CSV (either scale)")
    p.add_argument("name", choices=sorted(PLOTS))
    p.add_argument("csv")
    p.add_argument("png")
    for p in sub.choices.values():
        p.add_argument("--settings", default="{}", help="JSON mapping of config paper_toy keys")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    if args.task == "train":
        train(args.key, args.out, settings, stdout_log)
    elif args.task == "figure":
        figure(args.name, args.csv, args.png, args.models, settings, stdout_log)
    else:
        PLOTS[args.name](args.csv, args.png)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "snakemake" in globals():
        from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
    else:
        main()
