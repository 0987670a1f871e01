"""Pipeline models in the originals' own parametrisations.

A pipeline model is called ``model(x, t_native, y)`` and returns its transport's native output
(``ucgm_core.models.registry``: SiT is ``Linear`` — t = 1 noise, output z - x; LightningDiT and DDT are
``ReLinear`` — t = 0 noise, output x - z; EDM2 and EDM's SongUNet are ``EDM`` — EDM's F on the c_in-scaled
input). :func:`original_network` turns it into the ``network(x, t, y)`` an original sampler calls
(:data:`~.base.CONVENTIONS`):

* ``velocity_noise_at_one`` (REPA, REPA-E): a ``Linear`` model as it is (its output *is* dx_t/dt); a
  ``ReLinear`` one at 1 - t, negated.
* ``velocity_noise_at_zero`` (LightningDiT, DDT): a ``ReLinear`` model as it is; a ``Linear`` one at
  1 - t, negated.
* ``edm_denoiser`` (EDM, EDM2): for an ``EDM``-transport model with a ``denoise`` method (EDM2UNet,
  SongUNet) that method, i.e. the original's ``Precond``: D = c_skip x + c_out F(c_in x, ln(sigma)/4, labels),
  in float32, labels one-hot (the null label as the all-zero row, like ``Precond`` without labels).
  Any other transport: the time t with alpha(t) / gamma(t) = sigma (closed form for Linear, ReLinear,
  TrigFlow, TrigLinear and EDM), x_t = gamma(t) x, and D = x_hat of the transport's inversion.

A model whose own convention equals the sampler's is called with the sampler's t unchanged, so the
network sees exactly the times the original passes.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...transports import HALF_PI_APPROX, orient
from .base import CONVENTIONS, OriginalNetwork

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def _sigma_to_time(name: str) -> Optional[Callable[[Tensor], Tensor]]:
    """Internal time t (t = 1 noise) at which alpha(t) / gamma(t) = sigma, or None if not in closed form."""
    if name in ("Linear", "ReLinear"):
        return lambda s: s / (1 + s)
    if name in ("TrigFlow", "TrigLinear"):
        return lambda s: torch.atan(s) / HALF_PI_APPROX
    if name == "EDM":  # sigma(t) = exp(4 (2.68 t - 1.59))
        return lambda s: (torch.log(s) / 4 + 1.59) / 2.68
    return None


def _onehot(y: Optional[Tensor], num_classes: int) -> Optional[Tensor]:
    if y is None or not num_classes:
        return None
    hot = F.one_hot(y.clamp(max=num_classes - 1), num_classes).float()
    return hot * (y < num_classes).float()[:, None]  # the null label: the all-zero row


def edm_denoiser(model, transport: str) -> OriginalNetwork:
    """``D(x, sigma, y)`` (EDM's denoiser) from a pipeline model in ``transport``."""
    tr = orient(transport)
    if tr.name == "EDM" and callable(getattr(model, "denoise", None)):

        def denoise(x: Tensor, sigma: Tensor, y: Optional[Tensor]) -> Tensor:
            s = torch.as_tensor(sigma, device=x.device).float().reshape(-1).expand(x.shape[0])
            return model.denoise(x.float(), s, _onehot(y, getattr(model, "num_classes", 0)))

        return denoise
    to_time = _sigma_to_time(tr.name)
    if to_time is None:
        raise ValueError(f"an EDM denoiser needs sigma -> t in closed form; transport {tr.name!r} has none")

    def denoise_by_inversion(x: Tensor, sigma: Tensor, y: Optional[Tensor]) -> Tensor:
        s = torch.as_tensor(sigma, device=x.device).float()
        t = to_time(s)
        x_t = tr.gamma_in(t) * x.float()
        labels = y if y is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        out = tr.call(lambda xx, tt: model(xx, tt, labels), x_t, t)
        return tr.invert(out, x_t, t)[0]

    return denoise_by_inversion


def flow_velocity(model, transport: str, noise_at_one: bool) -> OriginalNetwork:
    """``v(x, t, y)`` on the linear path with the noise at t = 1 (``noise_at_one``) or at t = 0."""
    name = orient(transport).name
    if name not in ("Linear", "ReLinear"):
        raise ValueError(f"the original samples the linear flow path; a {name!r} model has another path")
    native = (name == "Linear") == noise_at_one
    if native:
        return lambda x, t, y: model(x, t, y)
    return lambda x, t, y: -model(x, 1 - t, y)


def original_network(model, transport: str, convention: str) -> OriginalNetwork:
    """The network an original sampler of ``convention`` calls, from ``model`` trained in ``transport``."""
    if convention == "edm_denoiser":
        return edm_denoiser(model, transport)
    if convention == "velocity_noise_at_one":
        return flow_velocity(model, transport, noise_at_one=True)
    if convention == "velocity_noise_at_zero":
        return flow_velocity(model, transport, noise_at_one=False)
    raise ValueError(f"unknown network convention {convention!r}; expected one of {CONVENTIONS}")


__all__ = ["edm_denoiser", "flow_velocity", "original_network"]
