"""LightningDiT's and DDT's own samplers: Euler on their flow ODE, noise at t = 0 (x_t = t x + (1 - t) z).

The network returns the velocity v = dx_t/dt = x - z; both integrate x <- x + dt v upwards in t, and differ
in grid, step count and guidance (fixture README, Sec. 5-6).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .base import (
    CountingNetwork,
    OriginalInfo,
    OriginalNetwork,
    OriginalSampleResult,
    check_int,
    check_labels,
    finish,
    original,
)

_F32 = torch.float32
#: LightningDiT's ``forward_with_cfg`` guides only these leading channels (``model_out[:, :3]``).
GUIDED_CHANNELS = 3


def lightningdit_grid(num_points: int, timestep_shift: float = 0.3, device=None) -> Tensor:
    """LightningDiT's time grid (``transport/integrators.py`` ``ode``, l.94-101): [num_points] float32.

    t = linspace(0, 1, num_points) (``check_interval`` gives t0 = 0, t1 = 1 for the Linear velocity model),
    then, when ``timestep_shift`` s > 0, t <- s t / (1 + (s - 1) t): s < 1 crowds the points near t = 1
    (data). Endpoints stay 0 and 1.
    """
    num_points = check_int("steps", num_points, 2)
    t = torch.linspace(0.0, 1.0, num_points, dtype=_F32, device=device)
    if timestep_shift > 0:
        t = timestep_shift * t / (1 + (timestep_shift - 1) * t)
    return t


def lightningdit_cfg_drift(out: Tensor, t: Tensor, cfg_scale: float, cfg_interval_start: float) -> Tensor:
    """LightningDiT's ``forward_with_cfg`` combination, first half: ``out`` [2B, C, ...] is the network on
    [x; x] with labels [y; null] at times ``t`` [2B]. Channels 0-2: u + cfg_scale (c - u), or c when
    t[0] < cfg_interval_start; the other channels: c. Returns [B, C, ...]."""
    cond, uncond = out.chunk(2)
    c_g, u_g = cond[:, :GUIDED_CHANNELS], uncond[:, :GUIDED_CHANNELS]
    head = u_g + cfg_scale * (c_g - u_g)
    if t[0] < cfg_interval_start:
        head = c_g
    return torch.cat([head, cond[:, GUIDED_CHANNELS:]], dim=1)


def _lightningdit_nfe(steps: int, options) -> int:
    return steps * (2 if options["cfg_scale"] > 1.0 else 1)


@original(
    OriginalInfo(
        name="lightningdit_euler",
        repo="hustvl/LightningDiT",
        commit="2725fed42a14898744433809949834e26957bcdd",
        source="transport/transport.py Sampler.sample_ode (l.398-443) + torchdiffeq euler + models/lightningdit.py "
        "forward_with_cfg (l.420-442)",
        convention="velocity_noise_at_zero",
        paper_nfe=_lightningdit_nfe,
    )
)
@torch.no_grad()
def lightningdit_euler(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 250,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    cfg_scale: float = 6.7,
    cfg_interval_start: float = 0.125,
    timestep_shift: float = 0.3,
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """LightningDiT's ODE sampler as ``inference.py`` runs it: ``Sampler.sample_ode`` with
    ``sampling_method: euler`` (torchdiffeq's fixed-grid Euler) and, with guidance, ``forward_with_cfg``.

    Defaults are the paper's LightningDiT row (FID 1.35; ``configs/reproductions/
    lightningdit_xl_vavae_f16d32_800ep_cfg.yaml`` l.59-76).

    * ``steps`` is ``num_sampling_steps``, the number of **grid points** (:func:`lightningdit_grid`), so
      n - 1 Euler steps x_{k+1} = x_k + (t_{k+1} - t_k) f(t_k, x_k) are taken (250 -> 249 calls).
    * Without guidance (cfg_scale <= 1) f = network(x, t_k 1_B, y).
    * With guidance the network always runs on [x; x] with labels [y; null] (2B rows); only channels
      0-2 (hard-coded in the original: 3 of VA-VAE's 32) are guided,
      f = u + cfg_scale (c - u), and only where t_k >= cfg_interval_start (else f = c there); the other
      channels keep the conditional output. (The original carries a doubled state whose second half never
      feeds the first; this keeps the first half, which is what ``inference.py`` keeps.)

    ``network(x float32, t [N] float32, y) -> v`` (t = 0 noise). ``noise_source`` is unused (no draws).
    Returns float32 latents; ``nfe`` = n - 1 calls (``net_rows`` / B = 2(n - 1) with guidance); the paper
    counts "n x 2".
    """
    steps = check_int("steps", steps, 2)
    guided = cfg_scale > 1.0
    labels = check_labels(labels, noise.shape[0], guided, "lightningdit_euler")
    net = CountingNetwork(network)
    t = lightningdit_grid(steps, timestep_shift, device=noise.device)
    x = noise.to(_F32)
    b = x.shape[0]
    y2 = torch.cat([labels, torch.full_like(labels, null_label)]) if guided else None
    states: List[Tensor] = [x]
    for k in range(steps - 1):
        t0, t1 = t[k], t[k + 1]
        if guided:
            time = torch.ones(2 * b, dtype=_F32, device=x.device) * t0
            f = lightningdit_cfg_drift(net(torch.cat([x, x]), time, y2), time, cfg_scale, cfg_interval_start)
        else:
            f = net(x, torch.ones(b, dtype=_F32, device=x.device) * t0, labels)
        x = x + (t1 - t0) * f
        if return_trajectory:
            states.append(x)
    return finish(x, t, steps - 1, net, None, states, return_trajectory)


def ddt_grid(num_steps: int, last_step: float = 0.04, timeshift: float = 1.0, device=None) -> Tensor:
    """DDT's ``EulerSampler`` grid (``sampling.py`` l.53-58): [num_steps + 1] float32.

    cat(linspace(0, 1 - last_step, num_steps), [1]), then always t <- t / (t + (1 - t) timeshift).
    """
    num_steps = check_int("steps", num_steps, 1)
    t = torch.linspace(0.0, 1 - last_step, num_steps, dtype=_F32, device=device)
    t = torch.cat([t, torch.ones(1, dtype=_F32, device=device)])
    return t / (t + (1 - t) * timeshift)


def _ddt_nfe(steps: int, options) -> int:
    return 2 * steps


@original(
    OriginalInfo(
        name="ddt_euler",
        repo="MCG-NJU/DDT",
        commit="1d1b4d291325939dd98f6b91687af95c98c34d5c",
        source="src/diffusion/stateful_flow_matching/sampling.py EulerSampler (l.29-103)",
        convention="velocity_noise_at_zero",
        paper_nfe=_ddt_nfe,
    )
)
@torch.no_grad()
def ddt_euler(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 250,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    guidance: float = 2.0,
    guidance_interval_min: float = 0.3,
    guidance_interval_max: float = 1.0,
    timeshift: float = 1.0,
    last_step: float = 0.04,
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """DDT's ``EulerSampler`` with ``ode_step_fn`` and ``simple_guidance_fn`` (state_refresh_rate 1).

    Defaults are the paper's DDT-256 row (FID 1.26; ``configs/repa_improved_ddt_xlen22de6_256.yaml``
    l.68-81; the 512 row sets guidance 3.0).

    * Grid :func:`ddt_grid`: n + 1 points, the last step from 1 - last_step to 1.
    * Every step runs the network once on [x; x] with labels [null; y] (**unconditional half first**),
      also outside the guidance interval: v = u + g (c - u) with g = ``guidance`` when
      guidance_interval_min < t < guidance_interval_max (strict) and g = 1.0 otherwise (computed the same
      way, so not bit-identical to c).
    * x <- x + v dt on every step, the last one included (``last_step_fn`` defaults to the same step).

    ``network(x float32, t [2B] float32, y [2B]) -> v`` (t = 0 noise). ``noise_source`` is unused.
    Returns float32 latents; ``nfe`` = n calls of 2B rows each (the paper's "n x 2").
    The shipped configs run the network under bf16 autocast; that precision is the network's, not the
    sampler's, and is not reproduced here.
    """
    steps = check_int("steps", steps, 1)
    labels = check_labels(labels, noise.shape[0], True, "ddt_euler")
    net = CountingNetwork(network)
    t = ddt_grid(steps, last_step, timeshift, device=noise.device)
    x = noise.to(_F32)
    b = x.shape[0]
    y2 = torch.cat([torch.full_like(labels, null_label), labels])
    states: List[Tensor] = [x]
    for i in range(steps):
        t_cur, t_next = t[i], t[i + 1]
        dt = t_next - t_cur
        time = t_cur.repeat(b)
        g = guidance if guidance_interval_min < time[0] < guidance_interval_max else 1.0
        out = net(torch.cat([x, x]), time.repeat(2), y2)
        uncond, cond = out.chunk(2)
        v = uncond + g * (cond - uncond)
        x = x + v * dt
        if return_trajectory:
            states.append(x)
    return finish(x, t, steps, net, None, states, return_trajectory)


__all__ = [
    "GUIDED_CHANNELS",
    "lightningdit_grid",
    "lightningdit_cfg_drift",
    "lightningdit_euler",
    "ddt_grid",
    "ddt_euler",
]
