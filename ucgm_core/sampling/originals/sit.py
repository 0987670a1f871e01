"""REPA-E's and REPA's own samplers (their ``samplers.py``): Euler-Maruyama on the SiT SDE and Euler on its ODE.

Both repositories carry the same sampler code; only the model call differs (REPA-E
``model.inference(x, t, y)``, REPA ``model(x, t, y)[0]``), which the network adapter absorbs. Path
("linear"): x_t = (1 - t) x + t z, t = 1 noise; the network returns the velocity v = dx_t/dt.

SDE (``euler_maruyama_sampler``), grid t = linspace(1, 0.04, n) (float64) + [0]:

* score from the velocity (``get_score_from_velocity``, linear path: alpha = 1 - t, sigma = t):
  r = alpha / alpha' = -(1 - t), score = (r v - x) / (t^2 - r t);
* drift d = v - (1/2) g^2 score with g^2 = 2t; with guidance (cfg_scale > 1 and
  guidance_low <= t_i <= guidance_high, inclusive) the batch is [x; x] with labels [y; null] and the
  **drift** is guided: d = d_u + cfg_scale (d_c - d_u);
* steps i = 0 .. n-2: x <- x + d dt + sqrt(2 t_i) eps_i sqrt(|dt|), one float64 draw eps_i per step
  (default ``randn_like`` on the global generator, drawn before the network call);
* last step t = 0.04 -> 0: no noise, x <- x + dt d (the "mean" step). NFE = n network calls.

ODE (``euler_sampler``), grid t = linspace(1, 0, n + 1) (float64): x <- x + (t_{i+1} - t_i) v with the
velocity guided in the same interval; n calls.

State float64; the network gets the state and t cast to the noise dtype (float32), its output is cast back.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .base import (
    CountingNetwork,
    CountingNoise,
    OriginalInfo,
    OriginalNetwork,
    OriginalSampleResult,
    check_int,
    check_labels,
    finish,
    original,
)

_F64 = torch.float64
_REPAE = dict(repo="End2End-Diffusion/REPA-E", commit="3ad80468e78ec4fc93e6e70aa08e7b3b8303a171")
_REPA = dict(repo="sihyun-yu/REPA", commit="67f714503e3892f993844aab088ffc5791c92613")


def sit_sde_grid(num_steps: int, device=None) -> Tensor:
    """[num_steps + 1] float64: linspace(1, 0.04, num_steps) followed by 0."""
    num_steps = check_int("steps", num_steps, 1)
    t = torch.linspace(1.0, 0.04, num_steps, dtype=_F64, device=device)
    return torch.cat([t, torch.zeros(1, dtype=_F64, device=device)])


def sit_ode_grid(num_steps: int, device=None) -> Tensor:
    """[num_steps + 1] float64: linspace(1, 0, num_steps + 1)."""
    num_steps = check_int("steps", num_steps, 1)
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=_F64, device=device)


def _linear_score(v: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """Score of the linear path from the velocity: (r v - x) / (t^2 - r t), r = -(1 - t); t [N] float64."""
    t = t.reshape(-1, *([1] * (x.dim() - 1)))
    r = -(1 - t)  # alpha / alpha' = (1 - t) / (-1)
    return (r * v - x) / (t**2 - r * t)


def _check(path_type: str, who: str) -> None:
    if path_type != "linear":
        raise ValueError(f"{who}: only path_type 'linear' is implemented (the paper rows' setting), got {path_type!r}")


class _Batch:
    """The model batch of one step: [x; x] with labels [y; null] inside the guidance interval, else x, y."""

    def __init__(self, x: Tensor, labels: Optional[Tensor], null_label: int, guided: bool):
        self.guided = guided
        if guided:
            self.x = torch.cat([x, x])
            self.y = torch.cat([labels, torch.full_like(labels, null_label)])
        else:
            self.x, self.y = x, labels

    def combine(self, out: Tensor, cfg_scale: float) -> Tensor:
        if not self.guided:
            return out
        cond, uncond = out.chunk(2)
        return uncond + cfg_scale * (cond - uncond)


def _in_interval(t_cur: Tensor, cfg_scale: float, low: float, high: float) -> bool:
    return bool(cfg_scale > 1.0 and t_cur <= high and t_cur >= low)


def _sde(
    network,
    noise,
    steps,
    labels,
    null_label,
    cfg_scale,
    guidance_low,
    guidance_high,
    path_type,
    noise_source,
    return_trajectory,
    who,
) -> OriginalSampleResult:
    _check(path_type, who)
    labels = check_labels(labels, noise.shape[0], cfg_scale > 1.0, who)
    net = CountingNetwork(network)
    draw = CountingNoise(noise_source)
    in_dtype = noise.dtype
    t = sit_sde_grid(steps, device=noise.device)
    x = noise.to(_F64)
    states: List[Tensor] = [x]

    def drift(x_cur: Tensor, t_cur: Tensor, step: int) -> tuple:
        batch = _Batch(x_cur, labels, null_label, _in_interval(t_cur, cfg_scale, guidance_low, guidance_high))
        time = torch.ones(batch.x.shape[0], dtype=_F64, device=x_cur.device) * t_cur
        diffusion = 2 * t_cur
        eps = draw(step, x_cur) if step >= 0 else None  # drawn before the network call
        v = net(batch.x.to(in_dtype), time.to(in_dtype), batch.y).to(_F64)
        d = v - 0.5 * diffusion * _linear_score(v, batch.x, time)
        return batch.combine(d, cfg_scale), diffusion, eps

    for i in range(steps - 1):
        t_cur, t_next = t[i], t[i + 1]
        dt = t_next - t_cur
        d, diffusion, eps = drift(x, t_cur, i)
        x = x + d * dt + torch.sqrt(diffusion) * (eps * torch.sqrt(torch.abs(dt)))
        if return_trajectory:
            states.append(x)
    t_cur, t_next = t[-2], t[-1]  # last step to t = 0: no noise
    d, _, _ = drift(x, t_cur, -1)
    x = x + (t_next - t_cur) * d
    if return_trajectory:
        states.append(x)
    return finish(x, t, steps, net, draw, states, return_trajectory)


def _ode(
    network, noise, steps, labels, null_label, cfg_scale, guidance_low, guidance_high, path_type, return_trajectory, who
) -> OriginalSampleResult:
    _check(path_type, who)
    labels = check_labels(labels, noise.shape[0], cfg_scale > 1.0, who)
    net = CountingNetwork(network)
    in_dtype = noise.dtype
    t = sit_ode_grid(steps, device=noise.device)
    x = noise.to(_F64)
    states: List[Tensor] = [x]
    for i in range(steps):
        t_cur, t_next = t[i], t[i + 1]
        batch = _Batch(x, labels, null_label, _in_interval(t_cur, cfg_scale, guidance_low, guidance_high))
        time = torch.ones(batch.x.shape[0], dtype=_F64, device=x.device) * t_cur
        v = batch.combine(net(batch.x.to(in_dtype), time.to(in_dtype), batch.y).to(_F64), cfg_scale)
        x = x + (t_next - t_cur) * v
        if return_trajectory:
            states.append(x)
    return finish(x, t, steps, net, None, states, return_trajectory)


def _paper_nfe(steps: int, options) -> int:
    return steps * (2 if options["cfg_scale"] > 1.0 else 1)


@original(
    OriginalInfo(
        name="repae_sde",
        source="samplers.py euler_maruyama_sampler (l.106-183)",
        convention="velocity_noise_at_one",
        paper_nfe=_paper_nfe,
        **_REPAE,
    )
)
@torch.no_grad()
def repae_sde(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 250,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    cfg_scale: float = 2.5,
    guidance_low: float = 0.0,
    guidance_high: float = 0.75,
    path_type: str = "linear",
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """REPA-E's ``euler_maruyama_sampler`` (module docstring). Defaults: the paper's REPA-E row (FID 1.26;
    README l.184-193, 249: ``--mode sde --num-steps 250 --cfg-scale 2.5 --guidance-high 0.75``).

    ``network(x [N,C,H,W] float32, t [N] float32, y [N]) -> v`` (t = 1 noise), N = B or 2B. Returns the
    float64 state at t = 0 (the original's return value; its ``generate.py`` casts it to float32).
    ``nfe`` = n network calls; the batch is doubled only inside the interval, so ``net_rows`` / B is below
    2n (435 for 250 steps); the papers count "250 x 2".
    """
    return _sde(
        network,
        noise,
        steps,
        labels,
        null_label,
        cfg_scale,
        guidance_low,
        guidance_high,
        path_type,
        noise_source,
        return_trajectory,
        "repae_sde",
    )


@original(
    OriginalInfo(
        name="repa_sde",
        source="samplers.py euler_maruyama_sampler (l.105-183)",
        convention="velocity_noise_at_one",
        paper_nfe=_paper_nfe,
        **_REPA,
    )
)
@torch.no_grad()
def repa_sde(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 250,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    cfg_scale: float = 1.8,
    guidance_low: float = 0.0,
    guidance_high: float = 0.7,
    path_type: str = "linear",
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """REPA's ``euler_maruyama_sampler``: :func:`repae_sde`'s maths and conventions (the model call
    ``model(x, t, y)[0]`` is the adapter's business); defaults are REPA's headline (FID 1.42; README
    l.124-135: ``--mode sde --num-steps 250 --cfg-scale 1.8 --guidance-high 0.7``; 422 rows / B at 250 steps).
    """
    return _sde(
        network,
        noise,
        steps,
        labels,
        null_label,
        cfg_scale,
        guidance_low,
        guidance_high,
        path_type,
        noise_source,
        return_trajectory,
        "repa_sde",
    )


@original(
    OriginalInfo(
        name="repae_ode",
        source="samplers.py euler_sampler (l.47-103)",
        convention="velocity_noise_at_one",
        paper_nfe=_paper_nfe,
        **_REPAE,
    )
)
@torch.no_grad()
def repae_ode(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 50,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    cfg_scale: float = 1.5,
    guidance_low: float = 0.0,
    guidance_high: float = 1.0,
    path_type: str = "linear",
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """REPA-E's ``euler_sampler`` (ODE Euler, ``heun=False``; module docstring). Defaults: REPA-E's
    ``generate.py`` defaults (l.246-253: 50 steps, cfg 1.5, interval [0, 1]). ``noise_source`` is unused."""
    return _ode(
        network,
        noise,
        steps,
        labels,
        null_label,
        cfg_scale,
        guidance_low,
        guidance_high,
        path_type,
        return_trajectory,
        "repae_ode",
    )


@original(
    OriginalInfo(
        name="repa_ode",
        source="samplers.py euler_sampler (l.46-102)",
        convention="velocity_noise_at_one",
        paper_nfe=_paper_nfe,
        **_REPA,
    )
)
@torch.no_grad()
def repa_ode(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 50,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    cfg_scale: float = 1.5,
    guidance_low: float = 0.0,
    guidance_high: float = 1.0,
    path_type: str = "linear",
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """REPA's ``euler_sampler``: the same as :func:`repae_ode`. ``noise_source`` is unused."""
    return _ode(
        network,
        noise,
        steps,
        labels,
        null_label,
        cfg_scale,
        guidance_low,
        guidance_high,
        path_type,
        return_trajectory,
        "repa_ode",
    )


__all__ = ["sit_sde_grid", "sit_ode_grid", "repae_sde", "repa_sde", "repae_ode", "repa_ode"]
