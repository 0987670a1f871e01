"""Learning-rate schedule of the outer loop (``train.lr_schedule``): linear warm-up, a constant stretch, then
an optional decay to a final fraction of ``lr`` ("warm-up, stable, decay").

The original UCGM trains at a constant learning rate (its configs have no schedule), and so does a model whose
config has no ``lr_schedule``. Short runs, such as the CPU default's, gain from annealing the rate at the end.

The factor is a pure function of the step number, so a resumed run sets the same rate at every step as an
uninterrupted one (nothing of the schedule is kept in the state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

DECAYS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """``warmup`` steps of linear warm-up (from lr / warmup to lr); from ``decay_start`` (a fraction of the run's
    steps) to the last step, ``decay`` from lr to ``final * lr`` (``constant``: no decay)."""

    warmup: int = 0
    decay: str = "constant"
    decay_start: float = 0.0
    final: float = 0.0

    def __post_init__(self) -> None:
        bad = []
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            bad.append(f"warmup={self.warmup!r} (expected an integer >= 0, in steps)")
        if self.decay not in DECAYS:
            bad.append(f"decay={self.decay!r} (expected one of {list(DECAYS)})")
        if not 0.0 <= float(self.decay_start) < 1.0:
            bad.append(f"decay_start={self.decay_start!r} (expected a fraction of the steps in [0, 1))")
        if not 0.0 <= float(self.final) <= 1.0:
            bad.append(f"final={self.final!r} (expected a fraction of lr in [0, 1])")
        if bad:
            raise ValueError(f"train.lr_schedule: {'; '.join(bad)}")

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "LRSchedule":
        """The schedule of a ``train.lr_schedule`` mapping (None: constant); unknown keys are refused by name."""
        if d is None:
            return cls()
        unknown = sorted(set(d) - {"warmup", "decay", "decay_start", "final"})
        if unknown:
            raise ValueError(
                f"train.lr_schedule: unknown keys {unknown}; expected some of ['decay', 'decay_start', 'final', 'warmup']"
            )
        return cls(**d)

    def factor(self, step: int, total: int) -> float:
        """The multiplier of ``lr`` at optimizer step ``step`` (1-based) of ``total``: warm-up times decay."""
        return warmup_factor(step, self.warmup) * decay_factor(step, total, self.decay, self.decay_start, self.final)


def warmup_factor(step: int, warmup: int) -> float:
    """Linear warm-up: ``min(1, step / warmup)`` (1 without warm-up)."""
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def decay_factor(step: int, total: int, decay: str, start: float, final: float) -> float:
    """Decay from 1 at step ``start * total`` to ``final`` at step ``total``: linear, or half a cosine."""
    if decay == "constant":
        return 1.0
    begin = start * total
    if step <= begin:
        return 1.0
    u = min(1.0, (step - begin) / max(total - begin, 1e-12))
    shape = u if decay == "linear" else 0.5 * (1.0 - math.cos(math.pi * u))
    return 1.0 - (1.0 - final) * shape
