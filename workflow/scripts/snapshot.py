#!/usr/bin/env python
"""Export a snapshot kept during training (``train.snapshots``) as a model checkpoint. Standalone::

    python workflow/scripts/snapshot.py --checkpoint results/models/tit/checkpoint.pt --step 300000 \
        --out results/models/tit/snapshots/step-0300000.pt

Training writes each snapshot into its resumable state folder (``<state>/snapshots/step-NNNNNNN.pt``, which
outlives failed and preempted jobs); the final checkpoint records that folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log  # noqa: E402

from ucgm_core.checkpoint import load_checkpoint  # noqa: E402
from ucgm_core.io import atomic_write  # noqa: E402


def snapshot_path(state_path: str | os.PathLike, step: int) -> Path:
    return Path(state_path).parent / "snapshots" / f"step-{int(step):07d}.pt"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the model's final checkpoint")
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    ckpt = load_checkpoint(a.checkpoint)
    state = (ckpt.get("info") or {}).get("state")
    kept = (ckpt.get("info") or {}).get("spec", {}).get("train", {}).get("snapshots", [])
    src = snapshot_path(state, a.step) if state else None
    if src is None or not src.is_file():
        raise SystemExit(f"{a.checkpoint}: no snapshot of step {a.step} (kept: {kept}); add {a.step} to the "
                         "model's train.snapshots in the config")
    out = Path(a.out)
    atomic_write(out, lambda tmp: shutil.copyfile(src, tmp))
    log(f"{src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
