"""Resumable in-memory training loader over latent shards.

All latents of a split are loaded into one tensor (Fashion-MNIST train: 2 x 60,000 x 1x28x28
float32, about 376 MB), normalised once, and served in batches:

* epoch ``e`` visits the samples in ``torch.randperm(N)`` order drawn from a generator seeded
  with ``(seed, e)``; from the same generator each sample gets its flip decision for that epoch
  (flipped latent with probability ``flip_prob`` = 1/2, else the plain one);
* the epoch's order is cut into *global* batches of ``batch_size * world_size`` samples and rank
  ``r`` takes the contiguous slice ``[r * batch_size, (r + 1) * batch_size)`` of each, so the
  ranks' batches concatenated in rank order are exactly the batch one process with
  ``batch_size * world_size`` draws (the samples do not depend on the number of processes);
* ``drop_last`` (default) drops the incomplete last global batch of each epoch (required with
  ``world_size > 1``, where every rank must get a full batch);
* the iterator is infinite (epochs follow each other); ``len(loader)`` is batches per epoch.

Because every epoch's randomness is re-derived from ``(seed, epoch)``, the loader's whole state
is ``(seed, epoch, position)``, ``position`` counting global batches: :meth:`LatentLoader.state_dict`
/ :meth:`load_state_dict` save and restore it, and a restored loader yields exactly the batches the
original would have. The state is the same on every rank and only requires the same *global*
batch, so a run may resume with another number of processes.

Normalisation (:class:`LatentNormalizer`): ``(z - mean) / std * multiplier`` with per-channel
``mean``/``std`` of shape ``[1, C, 1, 1]``, or ``z * multiplier`` without statistics (SD-VAE
configs: ``latent_norm False``, multiplier 0.18215). ``denormalize`` inverts it for decoding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .latent_reader import iter_latent_samples, read_latent_manifest
from .latent_stats import check_latent_stats, load_latent_stats

__all__ = ["LatentArrays", "load_latent_arrays", "LatentNormalizer", "LatentLoader"]


@dataclass
class LatentArrays:
    """A split in memory: ``latents`` and ``latents_flip`` ``[N, C, h, w]``, ``labels`` ``int64 [N]``."""

    latents: Tensor
    latents_flip: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.latents.shape != self.latents_flip.shape or len(self.labels) != len(self.latents):
            raise ValueError(
                f"inconsistent shapes: {tuple(self.latents.shape)}, {tuple(self.latents_flip.shape)}, {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)


def load_latent_arrays(
    latent_dir: os.PathLike | str, split: str = "train", dtype: torch.dtype = torch.float32
) -> LatentArrays:
    """Read every sample of a latent split into preallocated tensors (shard order).

    The manifest must carry the latents' fingerprint, every shard its recorded sha256 and count, every
    latent exactly the manifest's ``latent_shape`` (a ``[1, h, w]`` latent would otherwise broadcast into a
    ``[C, h, w]`` slot) and every label a value in ``[0, num_classes)``
    (:func:`~ucgm_core.data.latents.iter_latent_samples`); anything else is an error naming the shard."""
    info = read_latent_manifest(latent_dir, split)
    n, shape = int(info["num_samples"]), tuple(info["latent_shape"])
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    plain = np.empty((n, *shape), dtype=np_dtype)
    flip = np.empty((n, *shape), dtype=np_dtype)
    labels = np.empty(n, dtype=np.int64)
    i = -1
    for i, (_, z, zf, label) in enumerate(iter_latent_samples(latent_dir, split, copy=False, info=info)):
        if i >= n:
            raise ValueError(f"{latent_dir}/{split}: more samples on disk than the manifest's {n}")
        plain[i] = z
        flip[i] = zf
        labels[i] = label
    if i + 1 != n:
        raise ValueError(f"{latent_dir}/{split}: {i + 1} samples on disk, manifest says {n}")
    return LatentArrays(torch.from_numpy(plain), torch.from_numpy(flip), torch.from_numpy(labels))


@dataclass
class LatentNormalizer:
    """``normalize(z) = (z - mean) / std * multiplier`` (or ``z * multiplier`` when ``mean`` is None).

    ``mean`` and ``std`` are ``[1, C, 1, 1]``, finite, ``std > 0``; ``multiplier`` finite and non-zero.
    ``source`` names where the statistics come from (a file, a config key) in error messages.
    """

    mean: Optional[Tensor] = None
    std: Optional[Tensor] = None
    multiplier: float = 1.0
    source: str = "latent statistics"

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(
                f"{self.source}: give both mean and std or neither (got only {'mean' if self.std is None else 'std'})"
            )
        try:
            multiplier = float(self.multiplier)
        except (TypeError, ValueError):
            multiplier = float("nan")
        if not np.isfinite(multiplier) or multiplier == 0:
            raise ValueError(f"{self.source}: latent multiplier {self.multiplier!r}, expected a finite non-zero number")
        if self.mean is None:
            return
        if not torch.is_tensor(self.mean):
            self.mean = torch.as_tensor(self.mean, dtype=torch.float32)
        if not torch.is_tensor(self.std):
            self.std = torch.as_tensor(self.std, dtype=torch.float32)
        m, s = tuple(self.mean.shape), tuple(self.std.shape)
        if len(m) != 4 or m[0] != 1 or m[2:] != (1, 1) or s != m:
            raise ValueError(f"{self.source}: mean {list(m)} and std {list(s)}, expected both [1, C, 1, 1]")
        check_latent_stats(self.mean, self.std, self.source)

    @property
    def channels(self) -> Optional[int]:
        """Channel count of the statistics (None without statistics)."""
        return None if self.mean is None else int(self.mean.shape[1])

    @classmethod
    def from_stats(
        cls, path: Optional[os.PathLike | str], multiplier: float = 1.0, normalize: bool = True
    ) -> "LatentNormalizer":
        """Build from a statistics file; ``normalize=False`` (or no path) uses the multiplier only."""
        if normalize and path is not None:
            mean, std = load_latent_stats(path)
            return cls(mean, std, multiplier, source=str(path))
        if normalize and path is None:
            raise ValueError("latent normalisation requested but no statistics file given")
        return cls(None, None, multiplier)

    def normalize(self, z: Tensor) -> Tensor:
        if self.mean is None:
            return z * self.multiplier
        return (z - self.mean.to(z)) / self.std.to(z) * self.multiplier  # type: ignore[union-attr]

    def normalize_(self, z: Tensor) -> Tensor:
        """In-place :meth:`normalize` (``z`` must be floating point)."""
        if self.mean is not None:
            z.sub_(self.mean.to(z)).div_(self.std.to(z))  # type: ignore[union-attr]
        if self.multiplier != 1.0:
            z.mul_(self.multiplier)
        return z

    def denormalize(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x / self.multiplier
        return x * self.std.to(x) / self.multiplier + self.mean.to(x)  # type: ignore[union-attr]


def _epoch_seed(seed: int, epoch: int) -> int:
    a, b = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


class LatentLoader:
    """Infinite, seeded, resumable batch iterator over an in-memory latent split.

    Yields ``(x, y)``: ``x`` float ``[B, C, h, w]`` normalised latents, ``y`` int64 ``[B]``.
    """

    STATE_VERSION = 2

    def __init__(
        self,
        data: LatentArrays,
        batch_size: int,
        *,
        seed: int = 0,
        normalizer: Optional[LatentNormalizer] = None,
        flip_prob: float = 0.5,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ):
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if world_size > 1 and not drop_last:
            raise ValueError("drop_last=False needs world_size 1 (every rank must get a full batch)")
        self.n = len(data)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip_prob = float(flip_prob)
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.normalizer = normalizer or LatentNormalizer()
        self.global_batch_size = self.batch_size * world_size
        if self.batch_size < 1 or (drop_last and self.n < self.global_batch_size):
            raise ValueError(f"{self.n} samples cannot fill a global batch of {self.batch_size} x {world_size} ranks")
        channels = self.normalizer.channels
        if channels is not None and channels != data.latents.shape[1]:  # would broadcast or fail deep in torch
            raise ValueError(
                f"{self.normalizer.source}: statistics for {channels} channels, the latents have "
                f"{data.latents.shape[1]} ({list(data.latents.shape[1:])}); expected one mean and std "
                "per latent channel"
            )
        # one buffer [2N, C, h, w]: rows 0..N-1 plain, N..2N-1 flipped, normalised once
        both = torch.empty((2 * self.n, *data.latents.shape[1:]), dtype=torch.float32, device=self.device)
        self.normalizer.normalize_(both[: self.n].copy_(data.latents))
        self.normalizer.normalize_(both[self.n :].copy_(data.latents_flip))
        self._both = both
        self._labels = data.labels.to(self.device, torch.long)
        self.epoch = 0
        self.position = 0
        self._plan_epoch = -1
        self._order: Tensor = torch.empty(0, dtype=torch.long)

    # -- epoch plans -------------------------------------------------------------------------

    @property
    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.n // self.global_batch_size
        return -(-self.n // self.global_batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _plan(self, epoch: int) -> Tensor:
        """Row indices into the plain/flipped buffer for the samples of ``epoch`` (all ranks)."""
        if self._plan_epoch != epoch:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            perm = torch.randperm(self.n, generator=g)
            flip = (torch.rand(self.n, generator=g) < self.flip_prob).long()
            self._order = (perm + flip[perm] * self.n).to(self.device)
            self._plan_epoch = epoch
        return self._order

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        return self

    def __next__(self) -> Tuple[Tensor, Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        start = self.position * self.global_batch_size + self.rank * self.batch_size
        rows = self._plan(self.epoch)[start : start + self.batch_size]
        self.position += 1
        return self._both.index_select(0, rows), self._labels.index_select(0, rows % self.n)

    def next_batch(self) -> Tuple[Tensor, Tensor]:
        """The next ``(x, y)`` batch (the training loop's ``BatchSource`` protocol)."""
        return next(self)

    @property
    def samples_seen(self) -> int:
        """Samples this rank has drawn so far (full batches assumed)."""
        return (self.epoch * self.batches_per_epoch + self.position) * self.batch_size

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume: the RNG is re-derived from ``(seed, epoch)``."""
        return {
            "version": self.STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_samples": self.n,
            "batch_size": self.batch_size,
            "global_batch_size": self.global_batch_size,
            "flip_prob": self.flip_prob,
            "drop_last": self.drop_last,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the data and the global batch must match (not the rank or
        the number of processes: every rank's position is the same)."""
        state = dict(state)
        if int(state.get("version", 1)) < 2:  # strided ranks: only a one-process state carries over
            if state.get("world_size", 1) != 1:
                raise ValueError("loader state of version 1 from several ranks cannot be resumed")
            state["global_batch_size"] = state.get("batch_size")
        for key in ("seed", "num_samples", "global_batch_size", "flip_prob", "drop_last"):
            mine = getattr(self, {"num_samples": "n"}.get(key, key))
            if state.get(key) != mine:
                raise ValueError(f"loader state mismatch for {key!r}: saved {state.get(key)!r}, loader has {mine!r}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
