"""Dividing a split among K independent jobs (``--part k --parts K``) and reading their part manifests back.

Each part owns a contiguous range of shard indices (:func:`part_shards`), so of sample indices; the merge reads
the K part manifests in order and checks that they belong together (:func:`read_part_manifests`) before it
writes the split's manifest. Used by the image shards (:mod:`ucgm_core.data.shards`) and the latents
(:mod:`ucgm_core.data.latents`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

__all__ = ["part_shards", "read_part_manifests"]


def part_shards(num_shards: int, part: int, parts: int) -> range:
    """Shard indices of part ``part`` of ``parts``: contiguous ranges covering ``0 .. num_shards - 1``
    in order, of ``num_shards // parts`` or one more shards each (empty when ``parts > num_shards``)."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not in [0, {parts})")
    return range(part * num_shards // parts, (part + 1) * num_shards // parts)


def read_part_manifests(
    paths: Sequence[os.PathLike | str], kind: str, split: str, same: Sequence[str]
) -> List[Dict[str, Any]]:
    """Read the part manifests ``paths`` (parts 0 .. K-1 in order) and check that they belong together."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    if not parts:
        raise ValueError("no part manifests to merge")
    for k, (path, info) in enumerate(zip(paths, parts)):
        want = {"kind": kind, "split": split, "part": k, "parts": len(parts)}
        got = {key: info.get(key) for key in want}
        if got != want:
            raise ValueError(f"{path}: part manifest {got}, expected {want} (give the parts in order)")
        for key in same:
            if info.get(key) != parts[0].get(key):
                raise ValueError(
                    f"{path}: {key} = {info.get(key)!r} differs from part 0's ({paths[0]}) "
                    f"{parts[0].get(key)!r}; the parts must be made alike (rerun the odd one)"
                )
    return parts
