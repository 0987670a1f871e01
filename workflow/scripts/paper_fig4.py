#!/usr/bin/env python
"""The paper's Fig. 4 at paper scale: x_hat along one 60-step UCGM-S run per lambda, same noise
(ucgm_core.figures_paper.xhat). Run by Snakemake's ``script:`` directive (workflow/rules/paper_fig4.smk).

Params: ``lambdas`` (one per input checkpoint, same order), ``options`` (JSON list of the UCGM-S options of
each lambda's sampler; stochasticity is forced to 0), ``ae_kwargs`` (JSON keyword arguments of the
autoencoder), ``seed``, ``num_images``, ``steps``, ``columns``.
"""

import json
import sys
import time
from pathlib import Path

import torch

from ucgm_core.autoencoders import get_autoencoder
from ucgm_core.checkpoint import build_network, checkpoint_normalizer, load_checkpoint
from ucgm_core.figures_paper.xhat import LambdaRun, write_xhat_figure, xhat_trajectories


def load_runs(checkpoints, lambdas, options, device):
    """One LambdaRun per checkpoint; all must share the latent shape, classes and autoencoder."""
    if not (len(checkpoints) == len(lambdas) == len(options)):
        raise ValueError(f"paper_fig4.py: {len(checkpoints)} checkpoints, {len(lambdas)} lambdas and "
                         f"{len(options)} option sets; expected one of each per lambda")
    runs, first = [], None
    for path, lam, opts in zip(checkpoints, lambdas, options):
        ckpt = load_checkpoint(path)
        key = (tuple(ckpt["latent_shape"]), int(ckpt["num_classes"]), ckpt.get("autoencoder", "identity"))
        if first is not None and key != first:
            raise ValueError(f"paper_fig4.py: {path}: latent shape, classes, autoencoder {key} differ from the "
                             f"first checkpoint's {first}; expected models of one experiment")
        first = key
        runs.append(LambdaRun(float(lam), build_network(ckpt, "ema").to(device), ckpt["transport"],
                              checkpoint_normalizer(ckpt), dict(opts)))
    return runs, first


def run(checkpoints, lambdas, options, ae_kwargs, png, csv, *, seed=0, num_images=1, steps=60, columns=8,
        log=print):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs, (latent_shape, num_classes, ae_name) = load_runs(checkpoints, lambdas, options, device)
    if ae_name == "identity":
        ae_kwargs.setdefault("channels", latent_shape[0])
    ae = get_autoencoder(ae_name, **ae_kwargs).to(device)
    t0 = time.time()
    res = xhat_trajectories(runs, latent_shape=latent_shape, num_classes=num_classes, decode=ae.decode,
                            num_images=num_images, seed=seed, steps=steps, columns=columns, device=device)
    write_xhat_figure(res, png, csv)
    log(f"lambdas {lambdas}, {steps} steps, shown steps {res.steps}, {num_images} image(s) in "
        f"{time.time() - t0:.1f}s -> {png}, {csv}")


def from_snakemake(smk) -> None:
    with open(smk.log[0], "w", buffering=1) as handle:
        run([str(p) for p in smk.input.checkpoints], list(smk.params.lambdas), json.loads(smk.params.options),
            json.loads(smk.params.ae_kwargs), str(smk.output.png), str(smk.output.csv), seed=int(smk.params.seed),
            num_images=int(smk.params.num_images), steps=int(smk.params.steps), columns=int(smk.params.columns),
            log=lambda msg: handle.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n"))


if __name__ == "__main__":
    if "snakemake" in globals():
        from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
    else:
        sys.exit(f"{Path(__file__).name}: run through Snakemake (rule paper_fig4_xhat in workflow/rules/paper_fig4.smk)")
