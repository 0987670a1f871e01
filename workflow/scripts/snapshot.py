#!/usr/bin/env python
"""Export a snapshot kept during training (``train.snapshots``) as a model checkpoint. Standalone::

    python workflow/scripts/snapshot.py --checkpoint results/models/tit/checkpoint.pt --step 300000 \
        --out results/models/tit/snapshots/step-0300000.pt

Training writes each snapshot into its resumable state folder (``<state>/snapshots/step-NNNNNNN.pt``, which
outlives failed and preempted jobs); the final checkpoint records that folder. Maps its flags to one call,
:func:`ucgm_core.training.run.export_snapshot`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ucgm_core.stage import log
from ucgm_core.training.run import export_snapshot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the model's final checkpoint")
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        src = export_snapshot(a.checkpoint, a.step, a.out)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    log(f"{src} -> {Path(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
