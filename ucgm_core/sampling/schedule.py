"""Time grids for the samplers (method doc, Sec. 2, steps 1-3).

UCGM-S walks a *progress* variable u in [0, 1] (u = 0 is the noise end), warps it with a
Kumaraswamy-type transform K and flips it into internal time (t = 1 is noise):

    t_i = 1 - K(u_i),        K(u) = (1 - (1 - u^a)^b)^c           (Kumaraswamy warp)

followed by a trailing t_M = 0. The two end gaps (g0, g1) trim the progress grid:

* g1 == 0: M + 1 evenly spaced points on [g0, 1], the last one dropped;
* g1 > 0:  M evenly spaced points on [g0, 1 - g1].

The last *evaluated* time is therefore t_{M-1} = 1 - K(1 - g1) (= g1 with the identity warp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def kumaraswamy(u: Tensor, a: float, b: float, c: float) -> Tensor:
    """The Kumaraswamy-type warp K(u) = (1 - (1 - u^a)^b)^c, elementwise, in ``u``'s dtype.

    [1, 1, 1] is the identity; the multi-step default [1.17, 0.8, 1.1] spends more steps near
    the data end.
    """
    return (1 - (1 - u**a) ** b) ** c


@dataclass(frozen=True)
class UCGMGrid:
    """The UCGM-S time grid.

    Attributes:
        u: [M] progress values (float32), u = 0 is the noise end.
        k: [M] warped progress K(u) (float32).
        t: [M + 1] internal times 1 - K(u) with a trailing 0 (float32, decreasing).
        correct_last_step: whether an order-2 run also applies the Heun correction on its last
            grid step (the original's g1 == 0 quirk, see :func:`ucgm_time_grid`).
    """

    u: Tensor
    k: Tensor
    t: Tensor
    correct_last_step: bool

    @property
    def num_steps(self) -> int:
        """M, the number of grid steps (model evaluations without Heun corrections)."""
        return int(self.u.numel())


def grid_steps(steps: int, order: int) -> int:
    """M: the number of grid steps, ceil(N / 2) = floor((N + 1) / 2) for order 2, else N."""
    return (steps + 1) // 2 if order == 2 else steps


def ucgm_time_grid(
    steps: int,
    order: int = 1,
    time_warp: Sequence[float] = (1.0, 1.0, 1.0),
    end_gaps: Sequence[float] = (0.0, 0.0),
    device: torch.device | str | None = None,
) -> UCGMGrid:
    """Build the UCGM-S grid (method doc, Sec. 2, steps 1-3).

    Args:
        steps: N, the nominal step count (``sampling_steps``).
        order: 1 or 2; order 2 uses M = floor((N + 1) / 2) grid steps.
        time_warp: (a, b, c) of the Kumaraswamy warp (``time_dist_ctrl``).
        end_gaps: (g0, g1) (``rfba_gap_steps``).
        device: where the grid lives.

    Returns:
        :class:`UCGMGrid`, all tensors float32.
    """
    a, b, c = (float(v) for v in time_warp)
    g0, g1 = (float(v) for v in end_gaps)
    m = grid_steps(steps, order)
    if g1 == 0:
        # M + 1 points on [g0, 1], last dropped. The original's internal step counter is then
        # M + 1, which is why its order-2 loop also corrects the last step (see `correct_last_step`).
        u64 = torch.linspace(g0, 1.0, m + 1, dtype=torch.float64)[:-1]
    else:
        u64 = torch.linspace(g0, 1.0 - g1, m, dtype=torch.float64)
    # Quirk "float32 grid": the original builds the grid in float64 and then calls
    # `.to(initial_noise)`, which converts the dtype as well as the device. u, K(u) and t are
    # therefore float32 (up to 1.6e-7 away from an exact float64 grid); we reproduce that.
    u = u64.to(device=device, dtype=torch.float32)
    k = kumaraswamy(u, a, b, c)
    t = torch.cat([1 - k, torch.zeros(1, dtype=torch.float32, device=u.device)])
    return UCGMGrid(u=u, k=k, t=t, correct_last_step=(g1 == 0))


def uniform_time_grid(
    steps: int,
    t_max: float = 1.0,
    t_min: float = 0.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """A plain uniform grid in internal time for the baselines: [steps + 1] float64, t_max -> t_min."""
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64, device=device)


__all__ = ["kumaraswamy", "UCGMGrid", "grid_steps", "ucgm_time_grid", "uniform_time_grid"]
