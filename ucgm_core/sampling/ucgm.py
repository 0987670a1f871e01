"""UCGM-S, the unified sampler (method doc, Sec. 2; official v-new ``sampling_loop``).

Notation (internal time, t = 1 is noise): x_t = alpha(t) z + gamma(t) x. For i = 0 .. M-1, with
t_c = t_i and t_n = t_{i+1} on the grid of :func:`schedule.ucgm_time_grid`:

1. (x_hat_i, z_hat_i) = invert(F(x_i, t_c))                                 (Sec. 1.1 inversion)
   The raw x_hat_i is appended to the trajectory.
2. extrapolation, i >= 2:  x_hat <- x_hat_i + kappa (x_hat_i - x_hat_{i-1}), same for z_hat   (Eq. "self-boosting")
3. "SDE" ratio:             s = clamp(2 |t_n - t_c| alpha(t_c) / alpha(t_n)^2, 0, 1)
4. update:                  x_{i+1} = gamma(t_n) x_hat + alpha(t_n) (sqrt(1-s) z_hat + sqrt(s) eps)   (Eq. "UCGM-S update")
5. order 2 (Heun):          (x_hat', z_hat') = invert(F(x_{i+1}, t_n))
                            x_{i+1} = gamma(t_n) x_i / gamma(t_c)
                                      + (alpha(t_n) - gamma(t_n) alpha(t_c) / gamma(t_c)) (z_hat + z_hat') / 2
                                                                           (Eq. "DDIM step, averaged z_hat")

The output is the raw x_hat of the last evaluated time t_{M-1}; the final x_M is never used.

Precision follows the original: the state is float64, the network sees float32 inputs, the
inversion runs in float32 on the float32 network input, the time grid and every coefficient are
0-d float32 tensors promoted only when they meet the float64 state.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..transports import OrientedTransport, orient
from .common import (
    Network,
    SampleResult,
    Stochasticity,
    check_end_gaps,
    check_extrapolation,
    check_noise,
    check_order,
    check_steps,
    check_stochasticity,
    check_time_warp,
)
from .noise import GlobalRandn, NoiseSource
from .schedule import ucgm_time_grid

_F64 = torch.float64
_F32 = torch.float32


def _sde_ratio(transport: OrientedTransport, t_c: Tensor, t_n: Tensor) -> Tensor:
    """s = clamp(2 |t_n - t_c| alpha(t_c) / alpha(t_n)^2, 0, 1), a 0-d float32 tensor."""
    return torch.clamp(2 * (t_n - t_c).abs() * transport.alpha_in(t_c) / transport.alpha_in(t_n) ** 2, 0, 1)


@torch.no_grad()
def ucgm_sample(
    network: Network,
    noise: Tensor,
    transport: OrientedTransport | str,
    *,
    steps: int = 35,
    order: int = 1,
    stochasticity: Stochasticity = 0.0,
    extrapolation: float = 0.0,
    time_warp=(1.0, 1.0, 1.0),
    end_gaps=(0.0, 0.0),
    noise_source: Optional[NoiseSource] = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Run UCGM-S (method doc, Sec. 2).

    Args:
        network: ``(x [B, ...] float32, t_native [B]) -> native F`` (labels/CFG bound by the
            caller, e.g. with :func:`ucgm_core.sampling.guidance.guided`).
        noise: [B, ...] initial noise z (any float dtype; the state is kept in float64).
        transport: an :class:`OrientedTransport` or a transport name.
        steps: N (``sampling_steps``); order 2 walks M = floor((N + 1) / 2) grid steps.
        order: 1, or 2 for the Heun correction.
        stochasticity: s in [0, 1] (``stochast_ratio``), or "SDE".
        extrapolation: kappa >= 0 (``extrapol_ratio``).
        time_warp: (a, b, c) of the Kumaraswamy warp (``time_dist_ctrl``).
        end_gaps: (g0, g1) (``rfba_gap_steps``).
        noise_source: ``(step, like) -> eps`` for the stochastic steps; default ``torch.randn``
            on the global RNG, as the original.
        return_trajectory: also return ``[noise, x_hat_0, ..., x_hat_{M-1}]``.

    Returns:
        :class:`SampleResult` with ``sample`` [B, ...] float32.
    """
    noise = check_noise(noise)
    steps = check_steps(steps)
    order = check_order(order)
    stochasticity = check_stochasticity(stochasticity)
    kappa = check_extrapolation(extrapolation)
    warp = check_time_warp(time_warp)
    gaps = check_end_gaps(end_gaps)
    tr = orient(transport) if isinstance(transport, str) else transport
    draw = noise_source if noise_source is not None else GlobalRandn()

    grid = ucgm_time_grid(steps, order, warp, gaps, device=noise.device)
    t = grid.t  # [M + 1] float32 (quirk "float32 grid", see schedule.py)
    m = grid.num_steps
    if order == 2 and float(tr.gamma_in(t[0])) == 0.0 and (m > 1 or grid.correct_last_step):
        # The Heun step divides by gamma(t_0); the original silently returns NaN here.
        raise ValueError(
            f"order=2 needs gamma(t_0) > 0, but t_0 = {float(t[0])} is the pure-noise end of "
            f"{tr.name}; use end_gaps[0] > 0 (e.g. 0.001)"
        )

    x = noise.to(_F64)  # state in float64
    raw_x_hats: List[Tensor] = [noise.to(_F32)] if return_trajectory else []
    last_x_hat: Optional[Tensor] = None
    prev_raw: Optional[tuple[Tensor, Tensor]] = None
    ratio: Stochasticity | Tensor = stochasticity
    nfe = 0

    for i in range(m):
        t_c, t_n = t[i], t[i + 1]

        # 1. evaluate in float32 and invert (Sec. 1.1); keep the raw x_hat as this step's output
        x_in = x.to(_F32)
        F = tr.call(network, x_in, t_c)
        nfe += 1
        x_hat32, z_hat32 = tr.invert(F, x_in, t_c)
        last_x_hat = x_hat32
        if return_trajectory:
            raw_x_hats.append(x_hat32)
        x_hat, z_hat = x_hat32.to(_F64), z_hat32.to(_F64)

        # 2. extrapolation against the previous *raw* prediction, from step index 2 on (`i > 1`)
        raw = (x_hat, z_hat)
        if kappa > 0 and i > 1 and prev_raw is not None:
            x_hat = x_hat + kappa * (x_hat - prev_raw[0])
            z_hat = z_hat + kappa * (z_hat - prev_raw[1])
        prev_raw = raw

        # 3. Quirk "SDE ratio once": the original replaces the string by the step-0 tensor, after
        # which `ratio == "SDE"` is False, so the step-0 value is reused at every later step.
        if isinstance(ratio, str):
            ratio = _sde_ratio(tr, t_c, t_n)

        # 4. update x_{i+1} = gamma(t_n) x_hat + alpha(t_n) (sqrt(1-s) z_hat + sqrt(s) eps)
        if float(ratio) > 0:  # v-new draws eps only when s > 0
            eps = draw(i, x_in).to(_F64)
            x_next = tr.gamma_in(t_n) * x_hat + tr.alpha_in(t_n) * ((1 - ratio) ** 0.5 * z_hat + ratio**0.5 * eps)
        else:
            x_next = tr.gamma_in(t_n) * x_hat + tr.alpha_in(t_n) * z_hat

        # 5. Heun correction (order 2): a DDIM step from x_i with the averaged z_hat; it discards
        # the stochastic part. Quirk "NFE of order 2 with g1 = 0": the original's step counter
        # is then M + 1, so the correction also runs on the last step, evaluating the model at
        # t = 0 (NFE = 2M instead of 2M - 1); that corrected state is never used.
        if order == 2 and (i < m - 1 or grid.correct_last_step):
            xn_in = x_next.to(_F32)
            F2 = tr.call(network, xn_in, t_n)
            nfe += 1
            _, z_hat2 = tr.invert(F2, xn_in, t_n)
            # this scalar is computed in float32 (0-d float32 coefficients), as in the original
            coef = tr.alpha_in(t_n) - tr.gamma_in(t_n) * tr.alpha_in(t_c) / tr.gamma_in(t_c)
            # gamma_n * x / gamma_c in this order (not (gamma_n / gamma_c) * x): bit-exact with
            # the original, which matters for the ill-conditioned g0 = 0.001 case (s2 fixture)
            x_next = tr.gamma_in(t_n) * x / tr.gamma_in(t_c) + coef * (z_hat + z_hat2) / 2

        x = x_next

    assert last_x_hat is not None  # m >= 1
    trajectory = torch.stack(raw_x_hats) if return_trajectory else None
    return SampleResult(sample=last_x_hat, t_grid=t, nfe=nfe, trajectory=trajectory)


__all__ = ["ucgm_sample"]
