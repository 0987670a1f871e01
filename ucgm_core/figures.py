"""Figures of the workflow: sample grids, loss curves and FID-versus-NFE plots (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .io import atomic_write

__all__ = [
    "class_rows",
    "image_grid",
    "save_grid",
    "save_labelled_rows",
    "plot_loss_curve",
    "plot_fid_vs_nfe",
    "atomic_savefig",
    "shard_grid",
    "shard_rows_grid",
]


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_rows(rows: int, cols: int) -> List[int]:
    """Image indices that put class r on grid row r when image i has label ``i mod rows``."""
    return [r + c * rows for r in range(rows) for c in range(cols)]


def image_grid(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """Tile uint8 images ``[N, C, H, W]`` (N >= rows * cols) into one ``[H', W', C]`` array, row-major."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {images.shape}")
    n, c, h, w = images.shape
    if n < rows * cols:
        raise ValueError(f"{n} images cannot fill a {rows} x {cols} grid")
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(rows * cols):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y : y + h, x : x + w] = images[i].transpose(1, 2, 0)
    return out


def save_grid(images: np.ndarray, path: os.PathLike | str, rows: int, cols: int, scale: int = 2) -> Path:
    """Write an image grid as PNG (atomically), nearest-neighbour upscaled by ``scale``."""
    from PIL import Image

    grid = image_grid(images, rows, cols)
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper() or "PNG"
    atomic_write(path, lambda tmp: img.save(tmp, format="JPEG" if fmt == "JPG" else fmt))
    return path


def save_labelled_rows(
    rows: Sequence[np.ndarray], labels: Sequence[str], path: os.PathLike | str, row_height: float = 1.2
) -> Path:
    """One labelled strip per entry of ``rows`` (uint8 ``[n, C, H, W]`` each, any resolution), stacked; the
    paper's figure 1 layout: a model (sampler, NFE) per row."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(row_height * max(len(r) for r in rows), row_height * len(rows)), squeeze=False
    )
    for ax, imgs, label in zip(axes[:, 0], rows, labels):
        strip = image_grid(imgs, 1, len(imgs))
        ax.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    try:
        return atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def atomic_savefig(fig, path: os.PathLike | str) -> Path:
    path = Path(path)
    atomic_write(
        path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    )
    return path


def plot_loss_curve(losses: Sequence[Tuple[int, float, float]], path: os.PathLike | str, title: str = "") -> Path:
    """Training loss (mean over each logging window) against step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if losses:
        steps, values = zip(*[(s, v) for s, v, *_ in losses])
        ax.plot(steps, values, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "UCGM-T training loss")
    ax.grid(alpha=0.3)
    out = atomic_savefig(fig, path)
    plt.close(fig)
    return out


def plot_fid_vs_nfe(
    series: Dict[str, List[Tuple[float, float]]], path: os.PathLike | str, title: str = "", metric: str = "FID"
) -> Path:
    """One line per series: ``{label: [(nfe, value), ...]}``; log-scaled NFE axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in series.items():
        pts = sorted((float(n), float(v)) for n, v in points if v is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", lw=1.4, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"{metric} (lower is better)" if metric == "FID" else metric)
    ax.set_title(title or f"{metric} versus NFE")
    ax.grid(alpha=0.3, which="both")
    if series:
        ax.legend(fontsize=8)
    out = atomic_savefig(fig, path)
    plt.close(fig)
    return out


def shard_grid(shard: os.PathLike | str, size: int, path: os.PathLike | str) -> Path:
    """A ``size`` x ``size`` grid of a sample shard's first images (``.npz`` with ``images`` and ``labels``).
    When the labels cycle through exactly ``size`` classes the grid is arranged so that each row is one class."""
    with np.load(shard) as z:
        images, labels = z["images"], z["labels"]
    if int(labels.max()) + 1 == size and len(images) >= size * size:
        images = images[class_rows(size, size)]
    return save_grid(images, path, size, size)


def shard_rows_grid(
    shards: Sequence[os.PathLike | str], labels: Sequence[str], per_row: int, path: os.PathLike | str
) -> Path:
    """One labelled row of ``per_row`` images per shard (a model's samples; the paper's figure 1 layout);
    one-channel images are drawn as grey RGB so that rows of different datasets can be stacked."""
    if len(labels) != len(shards):
        raise ValueError(f"{len(shards)} shards but {len(labels)} labels; expected one label per shard")
    rows = []
    for shard in shards:
        with np.load(shard) as z:
            imgs = z["images"][:per_row]
        rows.append(np.repeat(imgs, 3, axis=1) if imgs.shape[1] == 1 else imgs)
    # matplotlib reads "$...$" as mathtext: an escaped "$" is drawn as itself
    return save_labelled_rows(rows, [label.replace("$", r"\$") for label in labels], path)
