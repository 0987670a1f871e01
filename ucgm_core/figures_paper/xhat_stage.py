"""The stage of Fig. 4 at paper scale (rule ``paper_fig4_xhat``): trained checkpoints, one per lambda, to the
x_hat figure of :mod:`ucgm_core.figures_paper.xhat` (same noise for every model, decoded by their autoencoder).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from ..autoencoders import get_autoencoder
from ..checkpoint import build_network, checkpoint_normalizer, load_checkpoint
from .xhat import LambdaRun, write_xhat_figure, xhat_trajectories

__all__ = ["load_runs", "make_xhat_figure"]


def load_runs(
    checkpoints: Sequence[str], lambdas: Sequence[float], options: Sequence[Mapping[str, Any]], device: str
) -> Tuple[List[LambdaRun], Tuple[tuple, int, str]]:
    """One LambdaRun per checkpoint (its EMA network on ``device``) and their shared (latent shape, classes,
    autoencoder); checkpoints that differ in these are refused (ValueError naming the file)."""
    if not (len(checkpoints) == len(lambdas) == len(options)):
        raise ValueError(
            f"paper_fig4.py: {len(checkpoints)} checkpoints, {len(lambdas)} lambdas and "
            f"{len(options)} option sets; expected one of each per lambda"
        )
    runs, first = [], None
    for path, lam, opts in zip(checkpoints, lambdas, options):
        ckpt = load_checkpoint(path)
        # Quirk: a checkpoint without an "autoencoder" entry holds pixel-space networks (identity)
        key = (tuple(ckpt["latent_shape"]), int(ckpt["num_classes"]), ckpt.get("autoencoder", "identity"))
        if first is not None and key != first:
            raise ValueError(
                f"paper_fig4.py: {path}: latent shape, classes, autoencoder {key} differ from the "
                f"first checkpoint's {first}; expected models of one experiment"
            )
        first = key
        runs.append(
            LambdaRun(
                float(lam),
                build_network(ckpt, "ema").to(device),
                ckpt["transport"],
                checkpoint_normalizer(ckpt),
                dict(opts),
            )
        )
    return runs, first


def make_xhat_figure(
    checkpoints: Sequence[str],
    lambdas: Sequence[float],
    options: Sequence[Mapping[str, Any]],
    ae_kwargs: Dict[str, Any],
    png: str,
    csv: str,
    *,
    seed: int = 0,
    num_images: int = 1,
    steps: int = 60,
    columns: int = 8,
    log: Callable[[str], None] = print,
) -> None:
    """Write Fig. 4's PNG and CSV from one checkpoint per lambda (``options``: each lambda's UCGM-S options;
    ``ae_kwargs``: the autoencoder's keyword arguments, ``channels`` filled in for the identity)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs, (latent_shape, num_classes, ae_name) = load_runs(checkpoints, lambdas, options, device)
    if ae_name == "identity":
        ae_kwargs.setdefault("channels", latent_shape[0])
    ae = get_autoencoder(ae_name, **ae_kwargs).to(device)
    t0 = time.time()
    res = xhat_trajectories(
        runs,
        latent_shape=latent_shape,
        num_classes=num_classes,
        decode=ae.decode,
        num_images=num_images,
        seed=seed,
        steps=steps,
        columns=columns,
        device=device,
    )
    write_xhat_figure(res, png, csv)
    log(
        f"lambdas {list(lambdas)}, {steps} steps, shown steps {res.steps}, {num_images} image(s) in "
        f"{time.time() - t0:.1f}s -> {png}, {csv}"
    )
