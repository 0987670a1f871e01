#!/usr/bin/env python
"""Encode image shards into latent shards and their statistics (rules ``latents``, ``latents_merge``); by hand::

    python workflow/scripts/latents.py --image-dir resources/shards/fashion_mnist_28 \\
        --out-dir resources/latents/identity/fashion_mnist_28 --autoencoder identity \\
        --stats-out resources/latents/identity/fashion_mnist_28/stats.pt
    # the same in 3 jobs (run side by side), then the merge:
    python workflow/scripts/latents.py ... --splits train --part 0 --parts 3 --part-manifest p0.json --part-stats p0.pt
    python workflow/scripts/latents.py --out-dir ... --splits train --merge-parts p0.json p1.json p2.json \\
        --merge-stats p0.pt p1.pt p2.pt --stats-out .../stats.pt

The command line only: the stage is :func:`ucgm_core.data.latents.encode_latents` (and ``merge_latent_parts``).
Nothing here imports torch: a part without shards to encode never loads it.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from ucgm_core.data.latents import encode_latents, merge_latent_parts


def build_parser() -> argparse.ArgumentParser:
    """The flags (their defaults are the library's)."""
    p = argparse.ArgumentParser(prog="python workflow/scripts/latents.py", description=__doc__.split(";")[0])
    p.add_argument("--image-dir", help="image shard folder (from workflow/scripts/shards.py)")
    p.add_argument("--out-dir", required=True, help="latent shard folder to write (or read, with --stats-only)")
    p.add_argument("--autoencoder", default="identity", help="registry name (default identity)")
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder")
    p.add_argument("--splits", nargs="+", default=["train", "test"], help="splits to encode (default train test)")
    p.add_argument("--batch-size", type=int, default=256, help="encoding batch size (default 256)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="stored latent dtype")
    p.add_argument("--no-resume", action="store_true", help="re-encode shards that already exist")
    p.add_argument("--stats-out", help="write latent statistics here (.pt or .json)")
    p.add_argument("--stats-split", default="train", help="split the statistics come from (default train)")
    p.add_argument("--stats-samples", type=int, default=10000, help="latents used for statistics (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed choosing the statistics samples (default 0)")
    p.add_argument("--stats-only", action="store_true", help="skip encoding; compute statistics from --out-dir")
    p.add_argument("--part", type=int, help="encode only part PART (0-based) of --parts (one split)")
    p.add_argument("--parts", type=int, help="number of parts the split is encoded in")
    p.add_argument("--part-manifest", help="where the part's manifest goes (with --part)")
    p.add_argument("--part-stats", help="where the part's share of the statistics sample goes (.pt, with --part)")
    p.add_argument("--merge-parts", nargs="+", metavar="PART_MANIFEST", help="merge these parts (0 .. K-1, in order)")
    p.add_argument("--merge-stats", nargs="+", metavar="PART_STATS", help="the parts' --part-stats, same order")
    return p


def merge(parser: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    """--merge-parts: the split's manifest (and statistics) from the parts, checked against the flags."""
    if a.stats_out and (not a.merge_stats or a.stats_split != a.splits[0]):
        parser.error("--merge-parts with --stats-out needs --merge-stats, and --stats-split equal to --splits")
    merge_latent_parts(
        a.out_dir, a.splits[0], a.merge_parts, a.merge_stats or [], a.stats_out, (a.stats_samples, a.seed), print
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check the flags that go together, then call the stage; 0 on success, 2 on a usage error."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if (a.part is not None or a.merge_parts) and len(a.splits) != 1:
        parser.error("--part and --merge-parts take exactly one split (--splits)")
    if a.merge_parts:
        return merge(parser, a)
    if a.part is not None and not (a.parts and a.part_manifest and a.part_stats):
        parser.error("--part needs --parts, --part-manifest and --part-stats")
    if not a.stats_only and not a.image_dir:
        print("error: --image-dir is required unless --stats-only", file=sys.stderr)
        return 2
    encode_latents(
        None if a.stats_only else a.image_dir,
        a.out_dir,
        splits=a.splits,
        autoencoder=a.autoencoder,
        autoencoder_kwargs=json.loads(a.ae_kwargs),
        batch_size=a.batch_size,
        device=a.device,
        dtype=a.dtype,
        resume=not a.no_resume,
        stats_out=a.stats_out,
        stats_split=a.stats_split,
        stats_samples=a.stats_samples,
        seed=a.seed,
        part=a.part,
        parts=a.parts,
        part_manifest=a.part_manifest,
        part_stats=a.part_stats,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
