"""2-D toy data for the miniatures of the paper's Fig. 2, 3 and 4, as closed forms (no scikit-learn).

Every generator returns ``(points [n, 2] float32, labels [n] int64)`` with labels ``arange(n) mod K``
(K = the dataset's number of classes), so a sample of n points always holds the classes in the same
proportions; the points are drawn from a ``torch.Generator`` seeded by the caller, hence reproducible.
Each dataset is shifted and scaled by fixed constants (not by statistics of the draw) so that its mean is
near 0 and its per-axis standard deviation near 1, the scale of the N(0, I) noise it is generated from.

Datasets (``DATASETS``):

* ``gmix``: 16 Gaussians (std 0.1) on the 4 x 4 grid {-1.2, -0.4, 0.4, 1.2}^2; class k in 0..3 owns the
  four cells with (row + col) mod 4 = k, so every class is itself multi-modal (the label matters, and
  classifier-free guidance / the enhanced target of Fig. 2b has something to act on).
* ``moons``: scikit-learn's two interleaving half circles (class = moon), Gaussian noise 0.05.
* ``scurve``: the S-curve projected on its (x, z) plane (the 2-D "S"), noise 0.05, one class.
* ``swissroll``: the Swiss roll's (x, z) spiral, noise 0.05, one class.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

Points = Tuple[Tensor, Tensor]

GMIX_CENTRES = (-1.2, -0.4, 0.4, 1.2)
GMIX_STD = 0.1
NOISE = 0.05


def _labels(n: int, classes: int) -> Tensor:
    return torch.arange(n, dtype=torch.int64) % classes


def _check_n(n: int) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"toy data: n={n!r} is invalid; expected a positive integer number of points")
    return n


def gaussian_mixture(n: int, generator: torch.Generator) -> Points:
    """16 Gaussians on a 4 x 4 grid, 4 classes of 4 cells each (class = (row + col) mod 4)."""
    labels = _labels(_check_n(n), 4)
    # within its class a point takes one of the class's 4 cells uniformly: row r, col = (k - r) mod 4
    row = torch.randint(0, 4, (n,), generator=generator)
    col = (labels - row) % 4
    centres = torch.tensor(GMIX_CENTRES)
    mean = torch.stack([centres[col], centres[row]], dim=1)
    pts = mean + GMIX_STD * torch.randn(n, 2, generator=generator)
    return pts.float(), labels


def two_moons(n: int, generator: torch.Generator) -> Points:
    """Two half circles: outer (cos a, sin a), inner (1 - cos a, 0.5 - sin a), a ~ U[0, pi]; class = moon.

    Shifted by (-0.5, -0.25) and scaled by 1.15 (per-axis std of about 1 and 0.6)."""
    labels = _labels(_check_n(n), 2)
    a = math.pi * torch.rand(n, generator=generator)
    outer = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    inner = torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], dim=1)
    pts = torch.where((labels == 0)[:, None], outer, inner)
    pts = pts + NOISE * torch.randn(n, 2, generator=generator)
    return ((pts - torch.tensor([0.5, 0.25])) * 1.15).float(), labels


def s_curve(n: int, generator: torch.Generator) -> Points:
    """The S-curve's (x, z) projection: s ~ U[-1.5 pi, 1.5 pi], (sin s, sign(s) (cos s - 1)); one class.

    Shifted by (0, 0) and scaled by (1.4, 0.75)."""
    labels = _labels(_check_n(n), 1)
    s = 3 * math.pi * (torch.rand(n, generator=generator) - 0.5)
    pts = torch.stack([torch.sin(s), torch.sign(s) * (torch.cos(s) - 1)], dim=1)
    pts = pts + NOISE * torch.randn(n, 2, generator=generator)
    return (pts * torch.tensor([1.4, 0.75])).float(), labels


def swiss_roll(n: int, generator: torch.Generator) -> Points:
    """The Swiss roll's (x, z) spiral: s = 1.5 pi (1 + 2 u), u ~ U[0, 1], (s cos s, s sin s); one class.

    Scaled by 1/7.5 and shifted by (-0.25, 0) after the noise (noise 0.05 in the scaled units)."""
    labels = _labels(_check_n(n), 1)
    s = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    pts = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) / 7.5
    pts = pts + NOISE * torch.randn(n, 2, generator=generator)
    return (pts - torch.tensor([0.25, 0.0])).float(), labels


DATASETS: Dict[str, Callable[[int, torch.Generator], Points]] = {
    "gmix": gaussian_mixture,
    "moons": two_moons,
    "scurve": s_curve,
    "swissroll": swiss_roll,
}
NUM_CLASSES: Dict[str, int] = {"gmix": 4, "moons": 2, "scurve": 1, "swissroll": 1}


def sample_dataset(name: str, n: int, seed: int) -> Points:
    """``n`` points and labels of dataset ``name`` drawn with a generator seeded by ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"toy data: dataset {name!r} is unknown; expected one of {sorted(DATASETS)}")
    generator = torch.Generator().manual_seed(int(seed))
    return DATASETS[name](n, generator)


def sliced_w2(a: Tensor, b: Tensor, directions: int = 180) -> float:
    """Sliced Wasserstein-2 distance between two equal-size 2-D point sets.

    SW2 = sqrt( mean over directions u of W2^2(<a, u>, <b, u>) ), with the 1-D W2^2 of two equal-size
    samples = mean of squared differences of their sorted projections. The directions are ``directions``
    evenly spaced angles in [0, pi) (a deterministic quadrature of the uniform average over the circle;
    no random projections). Exactly 0 for identical sets; a set against itself shifted by d gives
    |d| / sqrt(2) (the mean of cos^2 over the circle is 1/2).
    """
    if a.dim() != 2 or a.shape[1] != 2 or b.shape != a.shape:
        raise ValueError(
            f"sliced_w2: expected two point sets of the same shape [n, 2], got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("sliced_w2: the point sets hold NaN or inf values; expected finite points")
    angles = torch.arange(directions, dtype=torch.float64) * (math.pi / directions)
    u = torch.stack([torch.cos(angles), torch.sin(angles)], dim=0)  # [2, D]
    pa = torch.sort(a.double() @ u, dim=0).values
    pb = torch.sort(b.double() @ u, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


METRIC_NAME = "sliced_w2"
METRIC_CAPTION = (
    "sliced Wasserstein-2 distance (180 evenly spaced directions) between model samples and as "
    "many fresh data points, mean over seeds; lower is better"
)

__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "sample_dataset",
    "gaussian_mixture",
    "two_moons",
    "s_curve",
    "swiss_roll",
    "sliced_w2",
    "METRIC_NAME",
    "METRIC_CAPTION",
]
