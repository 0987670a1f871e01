"""Fig. 4 at paper scale: the data prediction x_hat along one UCGM-S run per lambda, from the same noise.

The paper (Fig. 4) shows, for TiT-XL/1 on VA-VAE latents (ImageNet 256) trained with lambda in {0, 0.5, 1},
the intermediate x_hat of one 60-step UCGM-S run per model, all started from the same noise. Here each model
is one :class:`LambdaRun`; :func:`xhat_trajectories` draws image ``i``'s noise from
``per_image_seed(seed, i)`` (the scheme of sample shards) once and hands the same tensor to every model, runs
``ucgm_sample(..., return_trajectory=True)`` deterministically (stochasticity 0: otherwise the runs would
draw fresh, model-independent noise at every step and "same noise" would hold only at the start), and
decodes x_hat at a few evenly spaced steps.

Outputs (:func:`write_xhat_figure`): a PNG grid, one row per (lambda, image), one column per shown step; and a
CSV with columns ``lambda,step,t,sample,mean,std``. The toy miniature's CSV has ``x,y`` (a 2-D point); for
images the last two columns are instead the per-image pixel mean and standard deviation of the decoded x_hat
(over channels and pixels, in [0, 1] units), so the CSV holds one summary row per (lambda, step, image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..data.loader import LatentNormalizer
from ..figures import image_grid, pyplot
from ..io import atomic_write, atomic_write_bytes, to_uint8
from ..sampling.generate import labels_for
from ..sampling.guidance import guided
from ..sampling.noise import PerImageNoise, per_image_seeds
from ..sampling.ucgm import ucgm_sample

__all__ = ["LambdaRun", "XhatResult", "CSV_COLUMNS", "shown_steps", "xhat_trajectories", "write_xhat_figure"]

CSV_COLUMNS = ["lambda", "step", "t", "sample", "mean", "std"]
# options of a sampler spec that ucgm_sample takes besides steps and stochasticity
_UCGM_OPTIONS = ("order", "extrapolation", "time_warp", "end_gaps")


@dataclass
class LambdaRun:
    """One row group of the figure: a network trained with consistency ratio ``lam`` and its sampler options."""

    lam: float
    network: nn.Module
    transport: str
    normalizer: LatentNormalizer
    options: Dict = field(default_factory=dict)


@dataclass
class XhatResult:
    """``images[lam]``: float32 [len(steps), n, C, H, W] decoded x_hat in [0, 1]; ``first[lam]``: the
    trajectory's first entry (the noise) of that run; ``frame``: the CSV rows."""

    steps: List[int]
    images: Dict[float, np.ndarray]
    first: Dict[float, Tensor]
    frame: pd.DataFrame


def shown_steps(total: int, columns: int) -> List[int]:
    """``columns`` evenly spaced x_hat indices of 0 .. total - 1 (first and last included, no repeats)."""
    if total < 1 or columns < 1:
        raise ValueError(f"shown_steps: total {total} and columns {columns} must be >= 1")
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, min(columns, total))})


@torch.no_grad()
def xhat_trajectories(
    runs: Sequence[LambdaRun],
    *,
    latent_shape: Sequence[int],
    num_classes: int,
    decode: Callable[[Tensor], Tensor],
    num_images: int = 1,
    seed: int = 0,
    steps: int = 60,
    columns: int = 8,
    device: str = "cpu",
) -> XhatResult:
    """Run every model from the same per-image-seeded noise and decode x_hat at ``columns`` steps."""
    if not runs:
        raise ValueError("xhat_trajectories: no runs; expected one LambdaRun per lambda")
    if len({r.lam for r in runs}) != len(runs):
        raise ValueError(f"xhat_trajectories: lambdas {[r.lam for r in runs]} repeat; expected one run per lambda")
    indices = list(range(num_images))
    noise = PerImageNoise(per_image_seeds(seed, indices), latent_shape, device=device).initial()
    y = torch.as_tensor(labels_for(indices, num_classes), device=device)
    images, first, rows, shown = {}, {}, [], None
    for run in runs:
        opts = {k: run.options[k] for k in _UCGM_OPTIONS if k in run.options}
        net = guided(run.network.to(device).eval(), y, num_classes)
        res = ucgm_sample(
            net, noise.clone(), run.transport, steps=steps, stochasticity=0.0, return_trajectory=True, **opts
        )
        traj = res.trajectory  # [M + 1, n, ...]: noise, x_hat_0 .. x_hat_{M-1}
        shown = shown_steps(traj.shape[0] - 1, columns)
        first[run.lam] = traj[0].clone()
        decoded = []
        for k in shown:
            x = decode(run.normalizer.denormalize(traj[k + 1].to(device, torch.float32))).float().clamp(0, 1)
            if not torch.isfinite(x).all():
                raise ValueError(f"xhat_trajectories: lambda {run.lam}, step {k}: non-finite decoded x_hat")
            decoded.append(x.cpu().numpy())
            flat = x.reshape(x.shape[0], -1)
            for i in range(x.shape[0]):
                rows.append((run.lam, k, float(res.t_grid[k]), i, float(flat[i].mean()), float(flat[i].std())))
        images[run.lam] = np.stack(decoded)
    return XhatResult(shown, images, first, pd.DataFrame(rows, columns=CSV_COLUMNS))


def write_xhat_figure(result: XhatResult, png: str | Path, csv: str | Path) -> None:
    """The grid PNG (one row per lambda and image, one column per shown step) and the CSV, written atomically."""
    atomic_write_bytes(Path(csv), result.frame.to_csv(index=False).encode())
    lams = sorted(result.images)
    n = result.images[lams[0]].shape[1]
    tiles = np.concatenate(
        [to_uint8(torch.from_numpy(result.images[lam][:, i]), "round").numpy() for lam in lams for i in range(n)]
    )  # row-major: (lambda, image) rows x steps
    grid = image_grid(tiles, rows=len(lams) * n, cols=len(result.steps))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(result.steps) + 1, 1.2 * len(lams) * n + 0.6))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)
    ax.set_xticks([(j + 0.5) * grid.shape[1] / len(result.steps) for j in range(len(result.steps))])
    ax.set_xticklabels([str(s) for s in result.steps])
    ax.set_yticks([(r + 0.5) * grid.shape[0] / (len(lams) * n) for r in range(len(lams) * n)])
    ax.set_yticklabels([f"lambda={lam:g}" + (f" #{i}" if n > 1 else "") for lam in lams for i in range(n)])
    ax.set_xlabel("UCGM-S step (x_hat)")
    ax.set_title("Fig. 4: x_hat along one UCGM-S run per lambda (same noise)")
    try:
        atomic_write(Path(png), lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
