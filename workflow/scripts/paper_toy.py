#!/usr/bin/env python
"""The trained-toy miniatures of the paper's Fig. 2a, 2b, 2c, 3 and 4 (ucgm_core.figures_paper.toy_stage).

Run by Snakemake's ``script:`` directive (workflow/rules/paper_toy.smk), or by hand:

    python workflow/scripts/paper_toy.py train gmix-Linear-l0-z0 results/paper_mini/toy/gmix-Linear-l0-z0.pt
    python workflow/scripts/paper_toy.py train moons-Linear-l1-z1-tuned out.pt --parent moons-Linear-l0-z0.pt
    python workflow/scripts/paper_toy.py figure fig2a out.csv out.png results/paper_mini/toy/*.pt
    python workflow/scripts/paper_toy.py plot fig2a out.csv out.png

Settings: a JSON mapping of config ``paper_toy`` keys (``--settings``; defaults of ``TrainSettings`` and
``EvalSettings`` where absent). One thread: the networks are too small for a second one to help.
"""

import argparse
import json
from functools import partial
from pathlib import Path
from typing import List

import torch

from ucgm_core.figures_paper.plots import PLOTS
from ucgm_core.figures_paper.toy_stage import plot_toy_figure, toy_figure, train_toy
from ucgm_core.stage import log as stamped_log


def from_snakemake(smk) -> None:
    """Entry point under ``script:``: the rule's ``params.task`` says what to do; messages go to ``log[0]``."""
    Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
    log = partial(stamped_log, file=open(smk.log[0], "a", buffering=1))
    settings = json.loads(smk.params.settings)
    if smk.params.task == "train":
        parent = str(smk.input.parent) if "parent" in smk.input.keys() else None
        train_toy(smk.wildcards.toymodel, str(smk.output[0]), settings, log, parent)
    elif smk.params.task == "figure":
        toy_figure(
            smk.params.figure, str(smk.output.csv), str(smk.output.png), [str(p) for p in smk.input], settings, log
        )
    else:
        raise ValueError(f"paper_toy.py: params.task={smk.params.task!r}; expected 'train' or 'figure'")


def main(argv: List[str] | None = None) -> None:
    """Run one subcommand by hand; messages go to stdout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("train", help="train one toy model")
    p.add_argument("key")
    p.add_argument("out")
    p.add_argument("--parent", help="the cached lambda = 0 model a '-tuned' model starts from")
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
    log = stamped_log
    if args.task == "train":
        train_toy(args.key, args.out, json.loads(args.settings), log, args.parent)
    elif args.task == "figure":
        toy_figure(args.name, args.csv, args.png, args.models, json.loads(args.settings), log)
    else:
        plot_toy_figure(args.name, args.csv, args.png)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "snakemake" in globals():
        from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
    else:
        main()
