"""The two stages of the toy miniatures (rules ``paper_toy_model`` and ``paper_toy_fig*``): train and cache one
toy model; sample and measure the cached models of one figure, write its CSV and plot it.

``settings`` is the config's ``paper_toy`` mapping (``TrainSettings`` / ``EvalSettings`` defaults where absent,
:func:`~ucgm_core.figures_paper.toy_runs.split_settings`); ``log`` receives one line per event.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Optional, Sequence

import torch

from ..io import atomic_write
from .plots import PLOTS
from .toy_runs import (
    FIG2_DATASET,
    data_floor,
    figure_rows,
    load_models,
    parse_model_key,
    save_model,
    split_settings,
    train_model,
)

__all__ = ["train_toy", "toy_figure", "plot_toy_figure"]


def train_toy(key: str, out: str, settings: Mapping, log: Callable[[str], None], parent: Optional[str] = None) -> None:
    """Train the toy model ``key`` (e.g. ``gmix-Linear-l0-z0``) and cache it at ``out``; a tuned model
    (``moons-Linear-l1-z1-tuned``) starts from the cached ``parent`` file (its lambda = 0 model)."""
    spec = parse_model_key(key)
    if spec.tuned != (parent is not None):
        raise ValueError(
            f"toy model {key}: parent file {parent!r}; expected "
            + (f"the cached {spec.parent.key}.pt" if spec.tuned else "none (trained from scratch)")
        )
    train_settings, _ = split_settings(dict(settings))
    start = None if parent is None else torch.load(parent, map_location="cpu", weights_only=True)
    ckpt = train_model(spec, train_settings, log=log, parent=start)
    save_model(ckpt, out)
    origin = "" if parent is None else f" from {parent}"
    log(
        f"{key}: trained {ckpt['steps']} steps{origin} in {ckpt['seconds']:.1f} s "
        f"({ckpt['cpu_seconds']:.1f} s CPU) -> {out}"
    )


def toy_figure(
    name: str, csv: str, png: str, models: Sequence[str], settings: Mapping, log: Callable[[str], None]
) -> None:
    """Sample and measure the cached ``models`` for figure ``name``, write its CSV (atomically), plot it."""
    _, ev = split_settings(dict(settings))
    start, cpu_start = time.perf_counter(), time.process_time()
    df, notes = figure_rows(name, load_models(models), ev)
    atomic_write(csv, lambda tmp: df.to_csv(tmp, index=False))
    for line in notes:
        log(line)
    if name.startswith("fig2"):
        log(
            f"{name}: metric floor (two independent {FIG2_DATASET} draws of {ev.eval_samples} points): "
            f"{data_floor(FIG2_DATASET, ev):.4f}"
        )
    PLOTS[name](csv, png)
    log(
        f"{name}: {len(df)} rows in {time.perf_counter() - start:.1f} s ({time.process_time() - cpu_start:.1f} s CPU) "
        f"-> {csv}, {png}"
    )


def plot_toy_figure(name: str, csv: str, png: str) -> None:
    """Plot a toy figure's CSV (either scale) with its plot of :data:`~ucgm_core.figures_paper.plots.PLOTS`."""
    if name not in PLOTS:
        raise ValueError(f"unknown toy figure {name!r}; expected one of {sorted(PLOTS)}")
    PLOTS[name](csv, png)
