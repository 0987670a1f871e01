"""Plots of the paper's Fig. 2a, 2b, 2c, 3 and 4 from their CSV tables, one function per figure.

Both scales write the same CSV columns (``COLUMNS``) and plot through these functions: the miniature
(``results/figures/paper_mini/<name>.csv``, toy models, ``toy_runs``) and the paper scale
(``results/figures/paper/<name>.csv``, built from evaluation JSONs of the ImageNet runs):

* ``fig2a_lambda_steps.csv``: ``lambda,steps,metric,value,paper_log_fid``; ``paper_log_fid`` is the paper's
  printed cell (log FID-50K) for lambda x steps in {1, 2, 4, 8, 16}, empty where the paper prints none.
* ``fig2b_zeta_transport.csv``: ``transport,zeta,metric,value``.
* ``fig2c_kappa_steps.csv``: ``kappa,steps,metric,value``.
* ``fig3_toy2d.csv``: ``dataset,lambda,trajectory,step,t,x,y`` (one row per point of a sampler trajectory).
* ``fig4_xhat_per_lambda.csv``: ``lambda,step,t,sample,x,y`` (the toy's x_hat points; at paper scale,
  x and y may name an image's position in a grid file instead).

``metric`` names what ``value`` is (``fid``, ``sliced_w2``, ...); the plots label their axes with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from ..figures import atomic_savefig, pyplot

COLUMNS: Dict[str, List[str]] = {
    "fig2a": ["lambda", "steps", "metric", "value", "paper_log_fid"],
    "fig2b": ["transport", "zeta", "metric", "value"],
    "fig2c": ["kappa", "steps", "metric", "value"],
    "fig3": ["dataset", "lambda", "trajectory", "step", "t", "x", "y"],
    "fig4": ["lambda", "step", "t", "sample", "x", "y"],
}

# The paper's Fig. 2a heatmap cells (log FID-50K, XL/1 on VA-VAE; ../shared/docs/paper_tables_figures.md):
# rows lambda, columns read as 1, 2, 4, 8, 16 steps (the text: lambda = 1 best at 2 steps, 0.5 at 16).
_FIG2A_PRINTED = {
    1.0: (4.07, 2.07, 2.15, 2.34, 2.56),
    0.75: (4.14, 1.69, 0.84, 0.56, 0.47),
    0.5: (4.22, 1.81, 0.50, 0.19, 0.19),
    0.25: (4.31, 2.15, 0.75, 0.27, 0.19),
    0.0: (4.41, 2.48, 1.07, 0.43, 0.24),
}
PAPER_FIG2A_LOG_FID: Dict[Tuple[float, int], float] = {
    (lam, steps): value for lam, row in _FIG2A_PRINTED.items() for steps, value in zip((1, 2, 4, 8, 16), row)
}


def read_figure_csv(figure: str, path: str | os.PathLike) -> pd.DataFrame:
    """Read a figure's CSV and check its columns against ``COLUMNS[figure]``."""
    if figure not in COLUMNS:
        raise ValueError(f"figure {figure!r} is unknown; expected one of {sorted(COLUMNS)}")
    df = pd.read_csv(path)
    if list(df.columns) != COLUMNS[figure]:
        raise ValueError(f"{path}: columns {list(df.columns)}; expected {COLUMNS[figure]} for {figure}")
    if df.empty:
        raise ValueError(f"{path}: no rows; expected the data of {figure}")
    return df


def _metric(df: pd.DataFrame) -> str:
    return ", ".join(sorted(df["metric"].astype(str).unique()))


def plot_fig2a(csv: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Heatmap of ``value`` over lambda (rows, 1 at the top as in the paper) x steps, the paper's log FID
    printed under each cell where it has one; the best lambda of each column is boxed."""
    df = read_figure_csv("fig2a", csv)
    lams = sorted(df["lambda"].unique(), reverse=True)
    steps = sorted(df["steps"].unique())
    grid = df.pivot_table(index="lambda", columns="steps", values="value").reindex(index=lams, columns=steps)
    paper = df.pivot_table(index="lambda", columns="steps", values="paper_log_fid").reindex(index=lams, columns=steps)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(steps) + 2.2, 0.75 * len(lams) + 1.4))
    values = grid.to_numpy(dtype=float)
    shown = np.log10(np.clip(values, 1e-12, None))
    im = ax.imshow(shown, cmap="viridis_r", aspect="auto")
    best = np.nanargmin(values, axis=0)
    for i in range(len(lams)):
        for j in range(len(steps)):
            text = f"{values[i, j]:.3g}"
            if np.isfinite(paper.to_numpy(dtype=float)[i, j]):
                text += f"\n(paper {paper.to_numpy(dtype=float)[i, j]:.2f})"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shown[i, j] > np.nanmean(shown) else "black",
                fontweight="bold" if best[j] == i else "normal",
            )
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_yticks(range(len(lams)), [f"{v:g}" for v in lams])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("lambda (consistency ratio)")
    fig.colorbar(im, ax=ax, label=f"log10 {_metric(df)}")
    ax.set_title(f"Fig. 2a: {_metric(df)} (bold: best lambda per column)", fontsize=9)
    path = atomic_savefig(fig, png)
    plt.close(fig)
    return path


def plot_fig2b(csv: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Bars of ``value`` per transport, one bar for each zeta."""
    df = read_figure_csv("fig2b", csv)
    transports = list(dict.fromkeys(df["transport"]))
    zetas = sorted(df["zeta"].unique(), reverse=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(transports) + 1.5, 3.2))
    width = 0.8 / len(zetas)
    for k, zeta in enumerate(zetas):
        sub = df[df["zeta"] == zeta].set_index("transport").reindex(transports)
        xs = np.arange(len(transports)) + (k - (len(zetas) - 1) / 2) * width
        ax.bar(xs, sub["value"].to_numpy(dtype=float), width, label=f"zeta = {zeta:g}")
    ax.set_xticks(range(len(transports)), transports)
    ax.set_ylabel(_metric(df))
    ax.set_title("Fig. 2b: enhanced target (zeta) per transport", fontsize=9)
    ax.legend(fontsize=8)
    path = atomic_savefig(fig, png)
    plt.close(fig)
    return path


def plot_fig2c(csv: str | os.PathLike, png: str | os.PathLike) -> Path:
    """``value`` (log axis) against sampling steps, one line per kappa."""
    df = read_figure_csv("fig2c", csv)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for kappa in sorted(df["kappa"].unique()):
        sub = df[df["kappa"] == kappa].sort_values("steps")
        ax.plot(sub["steps"], sub["value"], marker="o", ms=3, label=f"kappa = {kappa:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(_metric(df))
    ax.set_title("Fig. 2c: extrapolation ratio kappa", fontsize=9)
    ax.legend(fontsize=7)
    path = atomic_savefig(fig, png)
    plt.close(fig)
    return path


def _density(ax, dataset: str, extent: float) -> None:
    """The data density of a known toy dataset as a grey 2-D histogram (nothing for other names)."""
    from .toy_data import DATASETS, sample_dataset

    if dataset not in DATASETS:
        return
    pts, _ = sample_dataset(dataset, 20000, 123)
    hist, xe, ye = np.histogram2d(
        pts[:, 0].numpy(), pts[:, 1].numpy(), bins=90, range=[[-extent, extent], [-extent, extent]]
    )
    ax.imshow(np.log1p(hist.T), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), cmap="Greys", alpha=0.8)


def plot_fig3(csv: str | os.PathLike, png: str | os.PathLike) -> Path:
    """One panel per dataset: trajectories of each lambda from the same noise over the data density."""
    df = read_figure_csv("fig3", csv)
    datasets = list(dict.fromkeys(df["dataset"]))
    lams = sorted(df["lambda"].unique())
    colours = {lam: c for lam, c in zip(lams, ("tab:blue", "tab:red", "tab:green", "tab:orange"))}
    extent = float(np.ceil(max(df["x"].abs().quantile(0.99), df["y"].abs().quantile(0.99), 2.0)))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.3 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        _density(ax, ds, extent)
        for lam in lams:
            sub = df[(df["dataset"] == ds) & (df["lambda"] == lam)]
            for k, (_, tr) in enumerate(sub.groupby("trajectory")):
                tr = tr.sort_values("step")
                ax.plot(
                    tr["x"],
                    tr["y"],
                    color=colours[lam],
                    lw=0.6,
                    alpha=0.7,
                    label=f"lambda = {lam:g} ({tr['step'].max()} steps)" if k == 0 else None,
                )
                ax.plot(tr["x"].iloc[-1], tr["y"].iloc[-1], "o", color=colours[lam], ms=2.5)
            start = sub[sub["step"] == 0]
            ax.plot(start["x"], start["y"], ".", color="0.4", ms=2)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(ds, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Fig. 3: trajectories from N(0, I) (grey dots) to the data", fontsize=9)
    path = atomic_savefig(fig, png)
    plt.close(fig)
    return path


def plot_fig4(csv: str | os.PathLike, png: str | os.PathLike, columns: int = 6) -> Path:
    """Rows lambda, columns ``columns`` steps spread over the run: the x_hat points at that step."""
    df = read_figure_csv("fig4", csv)
    lams = sorted(df["lambda"].unique())
    last = int(df["step"].max())
    picks = sorted({int(round(v)) for v in np.linspace(0, last, columns)})
    extent = 2.0
    plt = pyplot()
    fig, axes = plt.subplots(
        len(lams), len(picks), figsize=(1.6 * len(picks) + 0.6, 1.6 * len(lams) + 0.5), squeeze=False
    )
    for r, lam in enumerate(lams):
        for c, step in enumerate(picks):
            ax = axes[r][c]
            sub = df[(df["lambda"] == lam) & (df["step"] == step)]
            ax.scatter(sub["x"], sub["y"], s=1.5, color="tab:blue")
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(
                    f"step {step + 1}/{last + 1}\nt = {float(sub['t'].iloc[0]):.2f}"
                    if len(sub)
                    else f"step {step + 1}",
                    fontsize=7,
                )
            if c == 0:
                ax.set_ylabel(f"lambda = {lam:g}", fontsize=8)
    fig.suptitle("Fig. 4: x_hat along one UCGM-S run per lambda (same noise)", fontsize=9)
    path = atomic_savefig(fig, png)
    plt.close(fig)
    return path


PLOTS = {"fig2a": plot_fig2a, "fig2b": plot_fig2b, "fig2c": plot_fig2c, "fig3": plot_fig3, "fig4": plot_fig4}

__all__ = [
    "COLUMNS",
    "PAPER_FIG2A_LOG_FID",
    "PLOTS",
    "read_figure_csv",
    "plot_fig2a",
    "plot_fig2b",
    "plot_fig2c",
    "plot_fig3",
    "plot_fig4",
]
