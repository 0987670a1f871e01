"""Latent statistics: per-channel ``mean`` and ``std`` of shape ``[1, C, 1, 1]``, saved, loaded and checked.

The statistics use up to 10,000 un-flipped training latents chosen with a fixed seed (``torch.randperm`` of the
sample indices, :func:`stats_indices`), reduced over samples and spatial positions in float64 on one thread
(``std`` unbiased, as ``torch.std``; :func:`stats_of`). Saved as a ``.pt`` dict ``{mean, std, num_samples,
seed, split}`` (or ``.json`` with nested lists), written atomically.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from ..io import atomic_write_bytes
from .latent_reader import iter_latent_samples, read_latent_manifest

if TYPE_CHECKING:  # torch is imported where it is used
    import torch

__all__ = [
    "stats_indices",
    "compute_latent_stats",
    "stats_of",
    "save_latent_stats",
    "load_latent_stats",
    "check_latent_stats",
]


def stats_indices(num_samples: int, max_samples: int, seed: int) -> List[int]:
    """The samples the statistics use: ``torch.randperm(N, generator=manual_seed(seed))[:max_samples]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_samples, generator=g)[: min(max_samples, num_samples)].tolist()


def compute_latent_stats(
    latent_dir: os.PathLike | str, split: str = "train", max_samples: int = 10000, seed: int = 0
) -> Dict[str, Any]:
    """Per-channel mean/std (``[1, C, 1, 1]``) of up to ``max_samples`` un-flipped latents.

    The samples are ``torch.randperm(N, generator=manual_seed(seed))[:max_samples]``.
    """
    import torch

    n = int(read_latent_manifest(latent_dir, split)["num_samples"])
    chosen = set(stats_indices(n, max_samples, seed))
    picked = []
    for i, (_, z, _, _) in enumerate(iter_latent_samples(latent_dir, split, flipped=False)):
        if i in chosen:
            picked.append(z)
    return stats_of(torch.from_numpy(np.stack(picked)), seed, split)


def stats_of(z: torch.Tensor, seed: int, split: str) -> Dict[str, Any]:
    """Per-channel mean and unbiased std of ``z [N, C, h, w]`` in float64, on one thread (so that the sums,
    and the float32 results, do not depend on the thread count of the job that computes them)."""
    import torch

    z = z.double()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mean = z.mean(dim=(0, 2, 3), keepdim=True)
        std = z.std(dim=(0, 2, 3), keepdim=True)
    finally:
        torch.set_num_threads(threads)
    return {"mean": mean.float(), "std": std.float(), "num_samples": len(z), "seed": seed, "split": split}


def save_latent_stats(path: os.PathLike | str, stats: Dict[str, Any]) -> Path:
    """Atomically save statistics as ``.pt`` (torch dict) or ``.json`` (nested lists)."""
    import torch

    path = Path(path)
    if path.suffix == ".json":
        data = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    else:
        buf = io.BytesIO()
        torch.save({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}, buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


def load_latent_stats(path: os.PathLike | str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load ``(mean, std)``, each ``float32 [1, C, 1, 1]``, from a ``.pt`` or ``.json`` file."""
    import torch

    path = Path(path)
    if path.suffix == ".json":
        d = json.loads(path.read_text())
    else:
        d = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("mean", "std") if k not in d]
    if missing:
        raise ValueError(f"{path}: latent statistics lack {missing} (expected keys mean and std, [1, C, 1, 1] each)")
    mean = torch.as_tensor(d["mean"], dtype=torch.float32)
    std = torch.as_tensor(d["std"], dtype=torch.float32)
    if mean.ndim != 4 or mean.shape[0] != 1 or mean.shape[2:] != (1, 1) or std.shape != mean.shape:
        raise ValueError(f"{path}: mean/std must be [1, C, 1, 1], got {tuple(mean.shape)} / {tuple(std.shape)}")
    check_latent_stats(mean, std, str(path))
    return mean, std


def check_latent_stats(mean: torch.Tensor, std: torch.Tensor, source: str) -> None:
    """Refuse statistics that cannot normalise: a non-finite mean or std, or a std <= 0 (a constant channel,
    a zeroed file); the error names ``source`` (a file or a config key), the channel and the value."""
    import torch

    for name, t, ok in (("mean", mean, torch.isfinite(mean)), ("std", std, torch.isfinite(std) & (std > 0))):
        bad = (~ok).flatten().nonzero().flatten().tolist()
        if bad:
            values = t.flatten()[bad[:4]].tolist()
            raise ValueError(
                f"{source}: {name} of channel(s) {bad[:4]} is {values}; expected "
                + (
                    "finite values"
                    if name == "mean"
                    else "finite values > 0 (a zero or NaN std cannot "
                    "normalise; recompute the statistics, or set data.normalize_latents: false)"
                )
            )
