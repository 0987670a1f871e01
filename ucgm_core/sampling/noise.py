"""Noise sources for the samplers.

A sampler asks a *noise source* for every Gaussian draw it makes after the initial noise:
``noise_source(step, like)`` returns a float32 tensor shaped like ``like`` ([B, ...]), where
``step`` is the sampler's step index (one draw per step at most).

* :class:`GlobalRandn` (the default) is a plain ``torch.randn`` on the global generator, which
  reproduces the original's draws given ``torch.manual_seed``. Samples then depend on the
  batch composition and on how images are split across processes.
* :class:`PerImageNoise` gives every image its own ``torch.Generator`` seeded from a per-image
  seed (see :func:`per_image_seed`). The initial noise and all step noises of image j come from
  image j's stream, in step order, so a sample depends only on its seed: batch size 1, 3 or 8
  and any split of the images over processes give identical samples.
* :class:`ReplayNoise` returns recorded tensors in order (fixture replay).
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Protocol, Sequence

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


class NoiseSource(Protocol):
    """Callable ``(step, like) -> Tensor`` returning N(0, I) noise, float32, shaped like ``like``."""

    def __call__(self, step: int, like: Tensor) -> Tensor: ...


class GlobalRandn:
    """``torch.randn`` on the global RNG, float32, on ``like``'s device (the original's draw)."""

    def __call__(self, step: int, like: Tensor) -> Tensor:
        return torch.randn(like.shape, dtype=torch.float32, device=like.device)


class ReplayNoise:
    """Returns ``noises[0], noises[1], ...`` in call order, checking the shape."""

    def __init__(self, noises: Sequence[Tensor]):
        self.noises: List[Tensor] = list(noises)
        self.used = 0

    def __call__(self, step: int, like: Tensor) -> Tensor:
        if self.used >= len(self.noises):
            raise RuntimeError(f"ReplayNoise exhausted after {self.used} draws (step {step})")
        out = self.noises[self.used]
        self.used += 1
        if tuple(out.shape) != tuple(like.shape):
            raise ValueError(f"recorded noise has shape {tuple(out.shape)}, expected {tuple(like.shape)}")
        return out.to(device=like.device, dtype=torch.float32)


def _splitmix64(x: int) -> int:
    """One round of the SplitMix64 finaliser (a bijective 64-bit mixer)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def per_image_seed(global_seed: int, index: int) -> int:
    """Map (global seed, image index) to a per-image generator seed in [0, 2^63).

    The pair is mixed with SplitMix64 so that neighbouring indices and neighbouring global seeds
    give unrelated streams. Image ``index`` is the global index of the image in the whole run,
    independent of batch size and process count.
    """
    if index < 0:
        raise ValueError(f"image index must be >= 0, got {index}")
    mixed = _splitmix64((_splitmix64(global_seed & _MASK64) ^ (index & _MASK64)) & _MASK64)
    return mixed >> 1  # torch seeds are signed 64-bit on some paths: keep 63 bits


def per_image_seeds(global_seed: int, indices: Iterable[int]) -> List[int]:
    """:func:`per_image_seed` for several image indices."""
    return [per_image_seed(global_seed, int(i)) for i in indices]


class PerImageNoise:
    """Per-image noise streams: the sample of image j depends only on ``seeds[j]``.

    Each image owns one ``torch.Generator`` (on ``generator_device``, CPU by default, so the
    numbers do not depend on the accelerator either). The initial noise is the first draw of
    every stream; each stochastic sampler step then draws the next block from the same stream.

    Args:
        seeds: one seed per image of the batch, e.g. from :func:`per_image_seeds`.
        shape: the per-image shape (C, H, W).
        device: where the returned tensors live.
        dtype: dtype of the initial noise (step noises are always float32, as the original's).
        generator_device: where the generators draw (default CPU).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator_device: torch.device | str = "cpu",
    ):
        if len(seeds) == 0:
            raise ValueError("PerImageNoise needs at least one seed")
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.generator_device = torch.device(generator_device)
        self.generators = [torch.Generator(device=self.generator_device).manual_seed(s) for s in self.seeds]
        self._initial: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.seeds)

    def _draw(self) -> Tensor:
        """One [B, *shape] float32 block: row j from generator j."""
        rows = [
            torch.randn(self.shape, generator=g, dtype=torch.float32, device=self.generator_device)
            for g in self.generators
        ]
        return torch.stack(rows).to(self.device)

    def initial(self) -> Tensor:
        """The initial noise [B, *shape] (the first draw of every stream; cached)."""
        if self._initial is None:
            self._initial = self._draw().to(self.dtype)
        return self._initial

    def __call__(self, step: int, like: Tensor) -> Tensor:
        """The next step noise [B, *shape], float32 (NoiseSource protocol)."""
        if self._initial is None:
            self.initial()  # keep the stream order: initial noise first
        if tuple(like.shape) != (len(self.seeds), *self.shape):
            raise ValueError(
                f"noise requested for shape {tuple(like.shape)}, but this source holds "
                f"{len(self.seeds)} images of shape {self.shape}"
            )
        return self._draw().to(like.device)


__all__ = [
    "NoiseSource",
    "GlobalRandn",
    "ReplayNoise",
    "per_image_seed",
    "per_image_seeds",
    "PerImageNoise",
]
