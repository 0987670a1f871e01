"""Transports: the coefficient functions of UCGM's unified path (method doc, Sec. 1.1).

A transport fixes four functions of time t in [0, 1]:

* the noisy input      x_t = alpha(t) * z + gamma(t) * x        (z ~ N(0, I), x the data)
* the network target   F*  = alpha_hat(t) * z + gamma_hat(t) * x

Any network output F is inverted into a data and a noise estimate through the determinant
D(t) = alpha * gamma_hat - gamma * alpha_hat (see :meth:`Transport.invert`).

The constant 1.57 stands in for pi/2 everywhere, as in the original implementation, so that
checkpoints trained with it behave identically (cos(1.57) = 7.96e-4, not 0).

Orientation. Trainer and sampler always work in *internal time*, where t = 1 is pure noise.
Networks trained with the noise end at t = 0 (``ReLinear``: LightningDiT, DDT) are wrapped by
:class:`OrientedTransport`, which swaps alpha <-> gamma and alpha_hat <-> gamma_hat, feeds the
network ``1 - t`` and negates its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Type

import torch
from torch import Tensor

HALF_PI_APPROX = 1.57  # the original's stand-in for pi/2; kept for checkpoint parity
ORIENTATION_TOLERANCE = 0.005


class Transport:
    """Base class. Subclasses define the four coefficients; all are elementwise in ``t``."""

    name: str = "base"

    def alpha_in(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def gamma_in(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_to(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def gamma_to(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    # --- derived quantities -------------------------------------------------------------
    def determinant(self, t: Tensor) -> Tensor:
        """D(t) = alpha * gamma_hat - gamma * alpha_hat (method doc, Sec. 1.1)."""
        return self.alpha_in(t) * self.gamma_to(t) - self.gamma_in(t) * self.alpha_to(t)

    def noisy(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha(t) z + gamma(t) x."""
        return self.alpha_in(t) * z + self.gamma_in(t) * x

    def target(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """F* = alpha_hat(t) z + gamma_hat(t) x."""
        return self.alpha_to(t) * z + self.gamma_to(t) * x

    def invert(self, F: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Invert a network output into ``(x_hat, z_hat)``.

        x_hat = (alpha * F - alpha_hat * x_t) / D,  z_hat = (gamma_hat * x_t - gamma * F) / D.
        """
        det = self.determinant(t)
        x_hat = (self.alpha_in(t) * F - self.alpha_to(t) * x_t) / det
        z_hat = (self.gamma_to(t) * x_t - self.gamma_in(t) * F) / det
        return x_hat, z_hat

    def derivatives(self, t: Tensor) -> Dict[str, Tensor]:
        """d/dt of the four coefficients, by autograd (used by the ODE/SDE baselines)."""
        t = t.detach().clone().requires_grad_(True)
        out = {}
        for key in ("alpha_in", "gamma_in", "alpha_to", "gamma_to"):
            value = getattr(self, key)(t)
            if not value.requires_grad:  # constant coefficient
                out[key] = torch.zeros_like(t).detach()
                continue
            (grad,) = torch.autograd.grad(value.sum(), t)
            out[key] = grad.detach()
        return out


def _const(value: float, t: Tensor) -> Tensor:
    return torch.full_like(t, value)


class Linear(Transport):
    """OT flow matching (SiT / REPA convention): x_t = t z + (1 - t) x, F* = z - x."""

    name = "Linear"

    def alpha_in(self, t):
        return t

    def gamma_in(self, t):
        return 1 - t

    def alpha_to(self, t):
        return _const(1.0, t)

    def gamma_to(self, t):
        return _const(-1.0, t)


class ReLinear(Transport):
    """Reversed linear path (LightningDiT / DDT): noise at t = 0, F* = x - z."""

    name = "ReLinear"

    def alpha_in(self, t):
        return 1 - t

    def gamma_in(self, t):
        return t

    def alpha_to(self, t):
        return _const(-1.0, t)

    def gamma_to(self, t):
        return _const(1.0, t)


class TrigFlow(Transport):
    """sCM's TrigFlow: x_t = sin z + cos x, F* = cos z - sin x (angles 1.57 t)."""

    name = "TrigFlow"

    def alpha_in(self, t):
        return torch.sin(t * HALF_PI_APPROX)

    def gamma_in(self, t):
        return torch.cos(t * HALF_PI_APPROX)

    def alpha_to(self, t):
        return torch.cos(t * HALF_PI_APPROX)

    def gamma_to(self, t):
        return -torch.sin(t * HALF_PI_APPROX)


class TrigLinear(Transport):
    """Trigonometric input with a velocity target: x_t = sin z + cos x, F* = z - x."""

    name = "TrigLinear"

    def alpha_in(self, t):
        return torch.sin(t * HALF_PI_APPROX)

    def gamma_in(self, t):
        return torch.cos(t * HALF_PI_APPROX)

    def alpha_to(self, t):
        return _const(1.0, t)

    def gamma_to(self, t):
        return _const(-1.0, t)


class Random(Transport):
    """The paper's ablation path (Table 6, "Random"): x_t = sin(1.57 t) z + (1 - t) x, F* = z - (1 + e^{-5t}) x.

    Table 6 prints the four columns (alpha, gamma, alpha_hat, gamma_hat) = (sin(t pi/2), 1 - t, 1,
    -1 - exp(-5t)); the last two are the *target* coefficients, not derivatives of the first two.
    Quirk: unlike Linear or TrigFlow, the target is not the path's velocity (alpha' = 1.57 cos(1.57 t) != 1,
    gamma' = -1 != -1 - e^{-5t}); it is an arbitrary invertible pair chosen to show that UCGM trains on any
    transport with D(t) != 0. We follow the table and the original literally. The baseline ODE samplers use
    the true derivatives (alpha', gamma') from :meth:`Transport.derivatives`, never alpha_hat, gamma_hat.
    """

    name = "Random"

    def alpha_in(self, t):
        return torch.sin(t * HALF_PI_APPROX)

    def gamma_in(self, t):
        return 1 - t

    def alpha_to(self, t):
        return _const(1.0, t)

    def gamma_to(self, t):
        return -1 - torch.exp(-5 * t)


class EDM(Transport):
    """EDM pre-conditioning as a transport (sigma_data = 0.5).

    sigma(t) = exp(4 (2.68 t - 1.59)), so ln sigma = 10.72 t - 6.36 and sigma in [0.00173, 78.3].
    x_t is EDM's c_in-scaled input (x + sigma z) / sqrt(sigma^2 + 1/4); F* is EDM's F-target.
    The network itself receives c_noise = ln(sigma) / 4 = 2.68 t - 1.59 (computed inside it).
    """

    name = "EDM"
    sigma_data = 0.5

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return torch.exp(4 * (2.68 * t - 1.59))

    def _norm(self, t):
        s = self.sigma(t)
        return s, torch.sqrt(s**2 + self.sigma_data**2)

    def alpha_in(self, t):
        s, n = self._norm(t)
        return s / n

    def gamma_in(self, t):
        _, n = self._norm(t)
        return 1 / n

    def alpha_to(self, t):
        _, n = self._norm(t)
        return -self.sigma_data / n

    def gamma_to(self, t):
        s, n = self._norm(t)
        return s / (self.sigma_data * n)


TRANSPORTS: Dict[str, Type[Transport]] = {
    cls.name: cls for cls in (Linear, ReLinear, TrigFlow, TrigLinear, EDM, Random)
}


def get_transport(name: str) -> Transport:
    """Build a raw transport by its name (``Linear``, ``ReLinear``, ``TrigFlow``, ...)."""
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}: expected one of {sorted(TRANSPORTS)}")
    return TRANSPORTS[name]()


@dataclass
class OrientedTransport(Transport):
    """A transport seen in internal time (t = 1 is noise), plus the network-call convention.

    ``noise_at_one`` is the original's ``integ_st``: 1 when the raw transport already has its
    noise end at t = 1, 0 when it was flipped (only ReLinear).
    """

    raw: Transport
    noise_at_one: bool

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.raw.name

    # internal-time coefficients: swapped when the raw transport has noise at t = 0
    def alpha_in(self, t):
        return self.raw.alpha_in(t) if self.noise_at_one else self.raw.gamma_in(t)

    def gamma_in(self, t):
        return self.raw.gamma_in(t) if self.noise_at_one else self.raw.alpha_in(t)

    def alpha_to(self, t):
        return self.raw.alpha_to(t) if self.noise_at_one else self.raw.gamma_to(t)

    def gamma_to(self, t):
        return self.raw.gamma_to(t) if self.noise_at_one else self.raw.alpha_to(t)

    def network_time(self, t: Tensor) -> Tensor:
        """The time the network was trained on: t, or 1 - t for a flipped transport."""
        return t if self.noise_at_one else 1 - t

    def call(self, network: Callable[..., Tensor], x_t: Tensor, t: Tensor, **kwargs) -> Tensor:
        """Evaluate ``network`` and return its output in internal convention.

        ``t`` is internal time: a scalar, [B] or [B,1,1,1]. The network receives it as [B] in its
        own time convention, and a flipped transport's output is negated.
        """
        t_net = self.network_time(t).reshape(-1)
        if t_net.numel() == 1:
            t_net = t_net.expand(x_t.shape[0])
        out = network(x_t, t_net, **kwargs)
        return out if self.noise_at_one else -out


def orient(transport: Transport | str) -> OrientedTransport:
    """Detect which end is noise and return the transport in internal time (method doc, Sec. 1.1).

    |gamma(0)| < 0.005: noise at t = 0 (flip); |alpha(0)| < 0.005: noise at t = 1; else error.
    """
    raw = get_transport(transport) if isinstance(transport, str) else transport
    zero = torch.zeros((), dtype=torch.float64)
    if abs(float(raw.gamma_in(zero))) < ORIENTATION_TOLERANCE:
        return OrientedTransport(raw, noise_at_one=False)
    if abs(float(raw.alpha_in(zero))) < ORIENTATION_TOLERANCE:
        return OrientedTransport(raw, noise_at_one=True)
    raise ValueError(
        f"transport {raw.name!r} has no pure-noise end: alpha(0)={float(raw.alpha_in(zero)):.4g}, "
        f"gamma(0)={float(raw.gamma_in(zero)):.4g}; one of them must be below {ORIENTATION_TOLERANCE}"
    )


__all__ = [
    "HALF_PI_APPROX",
    "Transport",
    "Linear",
    "ReLinear",
    "TrigFlow",
    "TrigLinear",
    "EDM",
    "Random",
    "TRANSPORTS",
    "get_transport",
    "OrientedTransport",
    "orient",
]
