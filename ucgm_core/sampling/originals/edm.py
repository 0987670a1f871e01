"""EDM's and EDM2's own samplers: Heun on Karras et al.'s rho-spaced sigma grid.

Both originals integrate the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma of the
variance-exploding path x = x_0 + sigma z with the denoiser D, on the grid

    sigma_i = (A + i / (n - 1) (B - A))^rho,   A = sigma_max^(1/rho),  B = sigma_min^(1/rho),  i = 0 .. n-1,

with sigma_n = 0 appended. Step i (Alg. 2 of Karras et al. 2022): optionally "churn" (raise sigma_i to
sigma_hat = (1 + gamma) sigma_i and add noise of std sqrt(sigma_hat^2 - sigma_i^2) S_noise), then an Euler
step d = (x_hat - D(x_hat, sigma_hat)) / sigma_hat, x' = x_hat + (sigma_{i+1} - sigma_hat) d, and, except
on the last step (sigma_{i+1} = 0), the trapezoidal correction with d' = (x' - D(x', sigma_{i+1})) /
sigma_{i+1}: x = x_hat + (sigma_{i+1} - sigma_hat) (d + d') / 2. NFE = 2n - 1.

The two differ in precision and in when they draw noise (fixture README, Sec. 1-2).
"""

from __future__ import annotations

import math
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


def karras_sigma_grid(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tensor:
    """[num_steps + 1] sigmas (A + i/(n-1) (B - A))^rho with a trailing 0, in ``dtype``.

    A and B are Python doubles applied to the ``dtype`` index tensor, as in both originals; in float32 the
    first and last sigmas come out as 79.99998474 and 0.0019999996 (EDM2's quirk), in float64 as 80 and
    0.002000000000000003 (EDM's).
    """
    num_steps = check_int("steps", num_steps, 2)
    i = torch.arange(num_steps, dtype=dtype, device=device)
    a = sigma_max ** (1 / rho)
    b = sigma_min ** (1 / rho)
    sigmas = (a + i / (num_steps - 1) * (b - a)) ** rho
    return torch.cat([sigmas, torch.zeros_like(sigmas[:1])])


def _edm2_nfe(steps: int, options) -> int:
    return 2 * steps - 1


@original(
    OriginalInfo(
        name="edm2_heun",
        repo="NVlabs/edm2",
        commit="4bf8162f601bcc09472ce8a32dd0cbe8889dc8fc",
        source="generate_images.py edm_sampler (l.75-117)",
        convention="edm_denoiser",
        paper_nfe=_edm2_nfe,
    )
)
@torch.no_grad()
def edm2_heun(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 32,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    guidance: float = 1.0,
    guide_network: Optional[OriginalNetwork] = None,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = float("inf"),
    S_noise: float = 1.0,
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """EDM2's ``edm_sampler`` (NVlabs/edm2 ``generate_images.py`` l.75-117), everything in float32.

    Defaults are the settings of the paper's EDM2 rows: the ``edm2-img512-{s,l,xxl}-fid`` presets (no
    guidance) with the CLI's 32 steps (63 NFE).

    * Grid: :func:`karras_sigma_grid` in float32 (sigma_0 = 79.99998474).
    * Denoiser: ``D = network(x, sigma, labels)`` cast to float32. With ``guidance != 1`` EDM2 also runs a
      guide network after it, ``ref = guide_network(x, sigma, labels)``, and uses
      ``D = ref + guidance (D - ref)`` (as ``torch.lerp``) — autoguidance / the ``*-guid-fid`` presets.
    * Start ``x = noise * sigma_0``; churn only when ``S_churn > 0`` and ``S_min <= sigma_i <= S_max``,
      with gamma = min(S_churn / n, sqrt(2) - 1) and one draw ``noise_source(i, x)`` (default
      ``randn_like``); then the Euler step and, except on the last step, the Heun correction.

    ``network(x [B,C,H,W] float32, sigma 0-d float32, labels [B]) -> D``. Returns the float32 latents;
    ``nfe`` = 2n - 1 denoiser evaluations (2 network calls each with a guide network).
    """
    steps = check_int("steps", steps, 2)
    labels = check_labels(labels, noise.shape[0], False, "edm2_heun")
    dtype = torch.float32
    if guidance != 1 and guide_network is None:
        raise ValueError("edm2_heun: guidance != 1 needs guide_network (EDM2's gnet)")
    net = CountingNetwork(network)
    guide = CountingNetwork(guide_network) if guide_network is not None else None
    draw = CountingNoise(noise_source)
    nfe = 0

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        d = net(x, sigma, labels).to(dtype)
        if guidance == 1:
            return d
        ref = guide(x, sigma, labels).to(dtype)
        return ref.lerp(d, guidance)

    t = karras_sigma_grid(steps, sigma_min, sigma_max, rho, dtype=dtype, device=noise.device)
    x = noise.to(dtype) * t[0]
    states: List[Tensor] = [x]
    for i in range(steps):
        t_cur, t_next = t[i], t[i + 1]
        if S_churn > 0 and S_min <= t_cur <= S_max:
            gamma = min(S_churn / steps, math.sqrt(2) - 1)
            t_hat = t_cur + gamma * t_cur
            x_hat = x + (t_hat**2 - t_cur**2).sqrt() * S_noise * draw(i, x)
        else:
            t_hat, x_hat = t_cur, x
        d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat  # Euler step
        x = x_hat + (t_next - t_hat) * d_cur
        if i < steps - 1:  # Heun correction, never at sigma = 0
            d_prime = (x - denoise(x, t_next)) / t_next
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        if return_trajectory:
            states.append(x)
    extra_calls = guide.calls if guide is not None else 0
    extra_rows = guide.rows if guide is not None else 0
    return finish(x, t, nfe, net, draw, states, return_trajectory, extra_calls, extra_rows)


@original(
    OriginalInfo(
        name="edm_heun",
        repo="NVlabs/edm",
        commit="008a4e5316c8e3bfe61a62f874bddba254295afb",
        source="generate.py edm_sampler (l.25-60)",
        convention="edm_denoiser",
        paper_nfe=_edm2_nfe,
    )
)
@torch.no_grad()
def edm_heun(
    network: OriginalNetwork,
    noise: Tensor,
    transport=None,
    *,
    steps: int = 18,
    labels: Optional[Tensor] = None,
    null_label: int = 1000,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = float("inf"),
    S_noise: float = 1.0,
    noise_source=None,
    return_trajectory: bool = False,
) -> OriginalSampleResult:
    """EDM's ``edm_sampler`` (NVlabs/edm ``generate.py`` l.25-60): EDM2's procedure in **float64**.

    Defaults are the settings of the paper's CIFAR-10 row (EDM's deterministic sampler, 18 steps = 35 NFE,
    ``README.md`` l.91-93). Differences from :func:`edm2_heun`:

    * grid, state and update are float64 (``x = noise.to(float64) * sigma_0``, sigma_0 = 80 exactly); the
      network receives the float64 state and a float64 0-d sigma, and its output is cast to float64;
    * gamma = min(S_churn / n, sqrt(2) - 1) when S_min <= sigma_i <= S_max, else 0, and the noise
      ``noise_source(i, x)`` (default ``randn_like``, float64) is drawn on **every** step, also when it is
      multiplied by sqrt(sigma_hat^2 - sigma_i^2) = 0, so the noise stream advances as the original's;
    * no guidance. The original's clamp of sigma_min / sigma_max to the network's range and its
      ``round_sigma`` are identities for EDMPrecond (0, inf; ``torch.as_tensor``) and are left out.

    ``labels`` None (unconditional CIFAR-10) is passed on as None. Returns the float64 state (EDM maps
    it to uint8 afterwards); ``nfe`` = 2n - 1.
    """
    steps = check_int("steps", steps, 2)
    labels = check_labels(labels, noise.shape[0], False, "edm_heun")
    dtype = torch.float64
    net = CountingNetwork(network)
    draw = CountingNoise(noise_source)
    t = karras_sigma_grid(steps, sigma_min, sigma_max, rho, dtype=dtype, device=noise.device)
    x = noise.to(dtype) * t[0]
    states: List[Tensor] = [x]
    nfe = 0
    for i in range(steps):
        t_cur, t_next = t[i], t[i + 1]
        gamma = min(S_churn / steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = torch.as_tensor(t_cur + gamma * t_cur)
        x_hat = x + (t_hat**2 - t_cur**2).sqrt() * S_noise * draw(i, x)
        d_cur = (x_hat - net(x_hat, t_hat, labels).to(dtype)) / t_hat
        nfe += 1
        x = x_hat + (t_next - t_hat) * d_cur
        if i < steps - 1:
            d_prime = (x - net(x, t_next, labels).to(dtype)) / t_next
            nfe += 1
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        if return_trajectory:
            states.append(x)
    return finish(x, t, nfe, net, draw, states, return_trajectory)


__all__ = ["karras_sigma_grid", "edm2_heun", "edm_heun"]
