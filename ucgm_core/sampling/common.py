"""Types and knob validation shared by every sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable, Optional, Tuple, Union

from torch import Tensor

#: A network as the samplers see it: ``(x [B, ...] float32, t_native [B] float32) -> F``.
#: ``t_native`` is the network's own time convention (``OrientedTransport.network_time``) and
#: ``F`` its native output; labels and guidance are bound by the caller (see ``guidance.guided``).
Network = Callable[[Tensor, Tensor], Tensor]

Stochasticity = Union[float, str]


@dataclass
class SampleResult:
    """What every sampler returns.

    Attributes:
        sample: [B, ...] float32, the generated data (UCGM-S: the raw x_hat of the last
            evaluated time; baselines: the final ODE/SDE state mapped to data space).
        t_grid: [M + 1] the internal-time grid that was walked (t = 1 noise, trailing t_min/0).
        nfe: number of network evaluations (a CFG evaluation counts once, the README's "x2"
            is not included).
        trajectory: optional [M + 1, B, ...] float32 stack ``[noise, x_hat_0, ..., x_hat_{M-1}]``
            of the raw data predictions of every grid step (Heun corrections excluded), like the
            original's return value.
    """

    sample: Tensor
    t_grid: Tensor
    nfe: int
    trajectory: Optional[Tensor] = None


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_steps(steps: object) -> int:
    """steps must be an integer >= 1."""
    if not isinstance(steps, Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_order(order: object) -> int:
    """order must be 1 (DDIM-like) or 2 (Heun-like)."""
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return int(order)  # type: ignore[arg-type]


def check_stochasticity(value: object) -> Stochasticity:
    """stochasticity must be a number in [0, 1] or the string "SDE"."""
    if isinstance(value, str):
        if value == "SDE":
            return value
        raise ValueError(f'stochasticity must be a number in [0, 1] or "SDE", got {value!r}')
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f'stochasticity must be a number in [0, 1] or "SDE", got {value!r}')
    return float(value)  # type: ignore[arg-type]


def check_extrapolation(value: object) -> float:
    """extrapolation (kappa) must be a finite number >= 0."""
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:  # type: ignore[arg-type]
        raise ValueError(f"extrapolation must be a finite number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_time_warp(value: object) -> Tuple[float, float, float]:
    """time_warp must be 3 positive numbers (a, b, c) of the Kumaraswamy warp."""
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        items = None
    if items is None or len(items) != 3 or not all(_is_number(v) and float(v) > 0 for v in items):
        raise ValueError(f"time_warp must be 3 positive numbers (a, b, c) of K(u) = (1-(1-u^a)^b)^c, got {value!r}")
    return float(items[0]), float(items[1]), float(items[2])


def check_end_gaps(value: object) -> Tuple[float, float]:
    """end_gaps must be 2 numbers (g0, g1), each in [0, 1), with g0 + g1 < 1."""
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        items = None
    if items is None or len(items) != 2 or not all(_is_number(v) and 0.0 <= float(v) < 1.0 for v in items):
        raise ValueError(f"end_gaps must be 2 numbers (g0, g1), each in [0, 1), got {value!r}")
    g0, g1 = float(items[0]), float(items[1])
    if g0 + g1 >= 1.0:
        raise ValueError(f"end_gaps must satisfy g0 + g1 < 1 (the progress grid is [g0, 1 - g1]), got {value!r}")
    return g0, g1


def check_time_range(t_min: object, t_max: object) -> Tuple[float, float]:
    """Baseline integration range: numbers with 0 <= t_min < t_max <= 1 (internal time)."""
    if not (_is_number(t_min) and _is_number(t_max)) or not 0.0 <= float(t_min) < float(t_max) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(
            f"t_min/t_max must satisfy 0 <= t_min < t_max <= 1 (internal time, 1 = noise), "
            f"got t_min={t_min!r}, t_max={t_max!r}"
        )
    return float(t_min), float(t_max)  # type: ignore[arg-type]


def check_noise(noise: object) -> Tensor:
    """noise must be a floating-point tensor with a batch dimension."""
    if not isinstance(noise, Tensor) or not noise.is_floating_point() or noise.dim() < 1:
        raise ValueError(f"noise must be a floating-point tensor [B, ...], got {type(noise).__name__}")
    return noise


__all__ = [
    "Network",
    "Stochasticity",
    "SampleResult",
    "check_steps",
    "check_order",
    "check_stochasticity",
    "check_extrapolation",
    "check_time_warp",
    "check_end_gaps",
    "check_time_range",
    "check_noise",
]
