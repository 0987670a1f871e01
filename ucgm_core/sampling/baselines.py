"""Baseline samplers on a plain uniform grid in internal time (t = 1 noise).

All three integrate the probability-flow dynamics of the transport x_t = alpha(t) z + gamma(t) x.
Given the network's inversion (x_hat, z_hat) at (x, t), the probability-flow velocity is

    v(x, t) = alpha'(t) z_hat + gamma'(t) x_hat                       (Eq. "PF-ODE velocity")

(the time derivative of x_t with z, x replaced by their posterior estimates; the derivatives come
from ``transport.derivatives``). With the step h = t_{i+1} - t_i < 0:

* ``euler_sample``:  x_{i+1} = x_i + h v(x_i, t_i)                                (N NFE)
* ``heun_sample``:   EDM's Heun (Karras et al. 2022, Alg. 1): the Euler predictor, then the
  trapezoidal corrector x_{i+1} = x_i + h (v_i + v'_{i+1}) / 2, **except on the last step**, which
  stays a plain Euler step, so the network is never evaluated at t_min (= 0 by default, where a
  correction ruins low-NFE samples).                                                (2N - 1 NFE)
* ``euler_maruyama_sample``: the reverse-time SDE with the same marginals,
      dx = [v - 1/2 g(t)^2 score] dt + g(t) dw_bar,     score = -z_hat / alpha(t)   (Eq. "reverse SDE")
  Diffusion choice: g(t)^2 = diffusion_scale * d(alpha^2)/dt = 2 diffusion_scale alpha alpha'
  (the "variance-exploding" rate of the noise component). Then -1/2 g^2 score = diffusion_scale
  alpha' z_hat needs no division by alpha, and g stays finite at both ends for every transport
  (the forward-SDE choice 2 alpha^2 (alpha'/alpha - gamma'/gamma) diverges where gamma -> 0,
  i.e. at t = 1 for Linear). The update is
      x_{i+1} = x_i + h (v_i + diffusion_scale alpha'(t_i) z_hat_i) + g(t_i) sqrt(|h|) eps_i,
  and the last step is a deterministic probability-flow Euler step (no noise, no score term),
  the usual "denoise at the end": for Linear it lands exactly on x_hat.             (N NFE)

Output: the state at t_min mapped to data space, x_{t_min} / gamma(t_min) (exact when
alpha(t_min) = 0; otherwise it keeps a residual noise of std alpha/gamma at t_min, e.g.
sigma_min = 0.0017 for EDM at t_min = 0).

The state is float64; the network is called in float32 on the float32 time grid value.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..transports import OrientedTransport, orient
from .common import Network, SampleResult, check_noise, check_steps, check_time_range
from .noise import GlobalRandn, NoiseSource
from .schedule import uniform_time_grid

_F64 = torch.float64
_F32 = torch.float32


class _Dynamics:
    """Coefficients of the transport on a time grid, and the network's PF velocity."""

    def __init__(self, network: Network, transport: OrientedTransport, t: Tensor):
        self.network = network
        self.tr = transport
        self.t = t  # [N + 1] float64
        self.t32 = t.to(_F32)
        with torch.enable_grad():  # derivatives use autograd; samplers run under no_grad
            d = transport.derivatives(t)
        self.d_alpha: Tensor = d["alpha_in"]
        self.d_gamma: Tensor = d["gamma_in"]
        self.alpha: Tensor = transport.alpha_in(t)
        self.gamma: Tensor = transport.gamma_in(t)
        self.nfe = 0

    def predict(self, x: Tensor, j: int) -> tuple[Tensor, Tensor, Tensor]:
        """(velocity, x_hat, z_hat) at grid point j; all float64 [B, ...]."""
        F = self.tr.call(self.network, x.to(_F32), self.t32[j])
        self.nfe += 1
        x_hat, z_hat = self.tr.invert(F.to(_F64), x, self.t[j])
        v = self.d_alpha[j] * z_hat + self.d_gamma[j] * x_hat  # Eq. "PF-ODE velocity"
        return v, x_hat, z_hat

    def to_data(self, x: Tensor) -> Tensor:
        """x_{t_min} / gamma(t_min), float32."""
        return (x / self.gamma[-1]).to(_F32)


def _start(noise: Tensor, transport, steps: int, t_min: float, t_max: float):
    noise = check_noise(noise)
    steps = check_steps(steps)
    t_min, t_max = check_time_range(t_min, t_max)
    tr = orient(transport) if isinstance(transport, str) else transport
    t = uniform_time_grid(steps, t_max=t_max, t_min=t_min, device=noise.device)
    return noise, steps, tr, t


def _result(dyn: _Dynamics, x: Tensor, traj: List[Tensor], return_trajectory: bool) -> SampleResult:
    return SampleResult(
        sample=dyn.to_data(x),
        t_grid=dyn.t,
        nfe=dyn.nfe,
        trajectory=torch.stack(traj) if return_trajectory else None,
    )


@torch.no_grad()
def euler_sample(
    network: Network,
    noise: Tensor,
    transport: OrientedTransport | str,
    *,
    steps: int = 35,
    t_max: float = 1.0,
    t_min: float = 0.0,
    noise_source: Optional[NoiseSource] = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Euler on the probability-flow ODE, x_{i+1} = x_i + h v(x_i, t_i); N NFE.

    ``noise_source`` is accepted for a uniform signature and unused. The trajectory (optional)
    is ``[noise, x_hat_0, ..., x_hat_{N-1}]``, float32.
    """
    noise, steps, tr, t = _start(noise, transport, steps, t_min, t_max)
    dyn = _Dynamics(network, tr, t)
    x = noise.to(_F64)
    traj: List[Tensor] = [noise.to(_F32)]
    for i in range(steps):
        v, x_hat, _ = dyn.predict(x, i)
        if return_trajectory:
            traj.append(x_hat.to(_F32))
        x = x + (t[i + 1] - t[i]) * v
    return _result(dyn, x, traj, return_trajectory)


@torch.no_grad()
def heun_sample(
    network: Network,
    noise: Tensor,
    transport: OrientedTransport | str,
    *,
    steps: int = 35,
    t_max: float = 1.0,
    t_min: float = 0.0,
    noise_source: Optional[NoiseSource] = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """EDM-style Heun on the probability-flow ODE; the last step is plain Euler; 2N - 1 NFE."""
    noise, steps, tr, t = _start(noise, transport, steps, t_min, t_max)
    dyn = _Dynamics(network, tr, t)
    x = noise.to(_F64)
    traj: List[Tensor] = [noise.to(_F32)]
    for i in range(steps):
        h = t[i + 1] - t[i]
        v, x_hat, _ = dyn.predict(x, i)
        if return_trajectory:
            traj.append(x_hat.to(_F32))
        x_pred = x + h * v  # Euler predictor
        if i < steps - 1:  # trapezoidal corrector, never at t_min (EDM Alg. 1)
            v2, _, _ = dyn.predict(x_pred, i + 1)
            x = x + h * (v + v2) / 2
        else:
            x = x_pred
    return _result(dyn, x, traj, return_trajectory)


@torch.no_grad()
def euler_maruyama_sample(
    network: Network,
    noise: Tensor,
    transport: OrientedTransport | str,
    *,
    steps: int = 35,
    t_max: float = 1.0,
    t_min: float = 0.0,
    diffusion_scale: float = 1.0,
    noise_source: Optional[NoiseSource] = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Euler-Maruyama on the reverse SDE with g^2 = diffusion_scale d(alpha^2)/dt; N NFE.

    ``diffusion_scale`` = 0 reduces to :func:`euler_sample`. Step noises come from
    ``noise_source(step, like)`` (default ``torch.randn``); the last step draws none.
    """
    noise, steps, tr, t = _start(noise, transport, steps, t_min, t_max)
    if not isinstance(diffusion_scale, (int, float)) or isinstance(diffusion_scale, bool) or diffusion_scale < 0:
        raise ValueError(f"diffusion_scale must be a number >= 0, got {diffusion_scale!r}")
    draw = noise_source if noise_source is not None else GlobalRandn()
    dyn = _Dynamics(network, tr, t)
    # g(t)^2 = diffusion_scale * 2 alpha alpha' (clamped at 0 against rounding)
    g = torch.sqrt(torch.clamp(2 * diffusion_scale * dyn.alpha * dyn.d_alpha, min=0))
    x = noise.to(_F64)
    traj: List[Tensor] = [noise.to(_F32)]
    for i in range(steps):
        h = t[i + 1] - t[i]
        v, x_hat, z_hat = dyn.predict(x, i)
        if return_trajectory:
            traj.append(x_hat.to(_F32))
        if i < steps - 1:
            # drift v - 1/2 g^2 score = v + diffusion_scale alpha' z_hat  (score = -z_hat / alpha)
            drift = v + diffusion_scale * dyn.d_alpha[i] * z_hat
            eps = draw(i, x).to(_F64)
            x = x + h * drift + g[i] * h.abs().sqrt() * eps
        else:
            x = x + h * v  # deterministic final step
    return _result(dyn, x, traj, return_trajectory)


__all__ = ["euler_sample", "heun_sample", "euler_maruyama_sample"]
