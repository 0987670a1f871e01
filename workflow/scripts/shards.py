#!/usr/bin/env python
"""Write a dataset's image shards (rules ``shards`` and ``shards_merge``, ``shell:``); by hand::

    python workflow/scripts/shards.py --dataset fashion_mnist --raw-dir resources/raw/fashion_mnist \\
        --out-dir resources/shards/fashion_mnist_28 [--resolution 28] [--samples-per-shard 10000]
    # the same split in 3 jobs (run side by side), then the merge:
    python workflow/scripts/shards.py ... --splits train --part 0 --parts 3 --part-manifest parts/0.json
    python workflow/scripts/shards.py --out-dir ... --splits train --merge-parts parts/0.json parts/1.json parts/2.json

The command line only: the stage is :func:`ucgm_core.data.shards.build_image_shards` (and
:func:`~ucgm_core.data.shards.merge_image_parts`). A dataset that cannot be read as asked ends the run with
status 2 and one line on stderr.
"""

import argparse
import sys
from typing import Optional, Sequence

from ucgm_core.data.shards import ImageSourceError, build_image_shards, merge_image_parts


def build_parser() -> argparse.ArgumentParser:
    """The flags (their defaults are the library's)."""
    p = argparse.ArgumentParser(
        prog="python workflow/scripts/shards.py",
        description="Read a dataset's raw files and write webdataset image shards "
        "({split}-{index:06d}.tar + {split}.json) with the ADM center crop; or one part of a split "
        "(--part/--parts), or the merge of the parts (--merge-parts).",
    )
    p.add_argument("--dataset", help="catalogue name: fashion_mnist, mnist, cifar10, imagenet, imagefolder")
    p.add_argument(
        "--raw-dir",
        "--source",
        dest="raw_dir",
        help="download folder (fashion_mnist, mnist, cifar10) or on-disk dataset (imagefolder, imagenet)",
    )
    p.add_argument("--out-dir", required=True, help="shard folder to write")
    p.add_argument("--resolution", type=int, default=None, help="output size (default: the dataset's native size)")
    p.add_argument("--samples-per-shard", type=int, default=10000, help="samples per tar shard (default 10000)")
    p.add_argument("--image-format", choices=("png", "npy"), default="png", help="image field (default png)")
    p.add_argument("--splits", nargs="+", default=None, help="splits to write (default: all of the dataset's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples per split (smoke tests)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes (default 1)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="class count to expect instead of the catalogue's (e.g. a subset of ImageNet)",
    )
    p.add_argument("--part", type=int, default=None, help="write only part PART (0-based) of --parts (one split)")
    p.add_argument("--parts", type=int, default=None, help="number of parts the split is written in")
    p.add_argument("--part-manifest", default=None, help="where the part's manifest goes (with --part)")
    p.add_argument(
        "--merge-parts",
        nargs="+",
        default=None,
        metavar="PART_MANIFEST",
        help="write {split}.json from these part manifests (parts 0 .. K-1 in order; one split)",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check the flags that go together, then call the stage; 0 on success, 2 on a usage error."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if (a.part is not None or a.merge_parts) and (not a.splits or len(a.splits) != 1):
        parser.error("--part and --merge-parts take exactly one split (--splits)")
    if a.merge_parts:
        merge_image_parts(a.out_dir, a.splits[0], a.merge_parts, log=print)
        return 0
    if (a.part is None) != (a.parts is None) or (a.part is not None and not a.part_manifest):
        parser.error("--part, --parts and --part-manifest go together")
    if not a.dataset or not a.raw_dir:
        parser.error("--dataset and --raw-dir are required")
    try:
        build_image_shards(
            a.dataset,
            a.raw_dir,
            a.out_dir,
            splits=a.splits,
            resolution=a.resolution,
            samples_per_shard=a.samples_per_shard,
            image_format=a.image_format,
            limit=a.limit,
            workers=a.workers,
            num_classes=a.num_classes,
            part=a.part,
            parts=a.parts,
            part_manifest=a.part_manifest,
        )
    except ImageSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
