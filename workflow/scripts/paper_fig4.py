#!/usr/bin/env python
"""The paper's Fig. 4 at paper scale: x_hat along one 60-step UCGM-S run per lambda, same noise
(ucgm_core.figures_paper.xhat_stage). Run by Snakemake's ``script:`` directive (workflow/rules/paper_fig4.smk).

Params: ``lambdas`` (one per input checkpoint, same order), ``options`` (JSON list of the UCGM-S options of
each lambda's sampler; stochasticity is forced to 0), ``ae_kwargs`` (JSON keyword arguments of the
autoencoder), ``seed``, ``num_images``, ``steps``, ``columns``.
"""

import json
from functools import partial
import sys
from pathlib import Path

from ucgm_core.figures_paper.xhat_stage import make_xhat_figure
from ucgm_core.stage import log


def from_snakemake(smk) -> None:
    """The rule's inputs, params and outputs mapped onto :func:`make_xhat_figure`; messages go to ``log[0]``."""
    with open(smk.log[0], "w", buffering=1) as handle:
        make_xhat_figure(
            [str(p) for p in smk.input.checkpoints],
            list(smk.params.lambdas),
            json.loads(smk.params.options),
            json.loads(smk.params.ae_kwargs),
            str(smk.output.png),
            str(smk.output.csv),
            seed=int(smk.params.seed),
            num_images=int(smk.params.num_images),
            steps=int(smk.params.steps),
            columns=int(smk.params.columns),
            log=partial(log, file=handle),
        )


if __name__ == "__main__":
    if "snakemake" in globals():
        from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script: directive)
    else:
        sys.exit(
            f"{Path(__file__).name}: run through Snakemake (rule paper_fig4_xhat in workflow/rules/paper_fig4.smk)"
        )
