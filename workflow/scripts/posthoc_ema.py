#!/usr/bin/env python
"""Reconstruct a post-hoc EMA of any length (EDM2, Sec. 3) as a model checkpoint. Standalone::

    python workflow/scripts/posthoc_ema.py results/models/<model>/checkpoint.pt --sigma-rel 0.08 --out ema-0.080.pt

Maps its flags to one call, :func:`ucgm_core.training.posthoc_ema.reconstruct_checkpoint`; the model must
have been trained with ``train.posthoc_ema`` set (see config/README.md).
"""

from __future__ import annotations

import argparse
import sys

from ucgm_core.training.posthoc_ema import (
    PROFILE_KINDS,
    SIGMA_REL_MAX,
    reconstruct_checkpoint,
    sigma_rel_to_gamma,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="run folder (with posthoc_ema/), snapshot folder, or the model's checkpoint")
    p.add_argument("--sigma-rel", type=float, required=True, help=f"EMA length, in (0, {SIGMA_REL_MAX:.4f}]")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--step", type=int, default=None, help="time of the average (default: the last snapshot)")
    p.add_argument("--profiles", choices=PROFILE_KINDS, default="auto")
    p.add_argument("--template", default=None, help="checkpoint supplying architecture and normalizer")
    a = p.parse_args(argv)
    try:
        out = reconstruct_checkpoint(a.run_dir, a.sigma_rel, a.out, a.step, a.profiles, a.template)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"posthoc_ema.py: {e}") from None
    print(f"wrote {out} (sigma_rel {a.sigma_rel}, gamma {sigma_rel_to_gamma(a.sigma_rel):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
