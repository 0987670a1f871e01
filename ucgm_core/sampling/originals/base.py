"""What the original samplers share: their result, call counting, default noise, and their metadata.

Every original sampler has the shared signature of the registry,

    sampler(network, noise, transport=None, *, steps, labels=None, null_label=1000, <the original's own
            knobs, under the original's own names>, noise_source=None, return_trajectory=False)

where ``network(x, t, y)`` is the network **in the original's own parametrisation** (its
:attr:`OriginalInfo.convention`; :mod:`.adapters` turns a pipeline model into one):

* ``"edm_denoiser"``: ``D(x, sigma, y)``, EDM's denoised estimate; ``sigma`` is the 0-d tensor the
  original passes, ``x`` in the sampler's dtype (float64 for EDM).
* ``"velocity_noise_at_one"``: ``v(x, t, y) = dx_t/dt`` on x_t = (1 - t) x + t z (SiT, REPA, REPA-E).
* ``"velocity_noise_at_zero"``: ``v(x, t, y) = dx_t/dt`` on x_t = t x + (1 - t) z (LightningDiT, DDT).

``labels`` [B] (or None for an unconditional network) are passed as ``y``; the samplers with guidance build
their doubled batches with ``null_label`` themselves, as the originals do (cond/uncond order included), so
the network sees exactly the rows the original's network sees. ``transport`` is accepted for the shared
signature and unused: each original fixes its own path and time grid.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

from ..common import SampleResult

#: The three network conventions of the originals (see the module docstring).
CONVENTIONS = ("edm_denoiser", "velocity_noise_at_one", "velocity_noise_at_zero")

OriginalNetwork = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


@dataclass
class OriginalSampleResult(SampleResult):
    """:class:`SampleResult` plus the original's own counts.

    ``sample`` is exactly what the original sampler returns, in its dtype (float64 for EDM, REPA and
    REPA-E; float32 otherwise); ``t_grid`` is the original's own grid in its own variable and dtype (EDM:
    sigmas; REPA/REPA-E: t with t = 1 noise; LightningDiT/DDT: t with t = 0 noise).
    ``nfe`` counts denoiser / velocity evaluations (EDM2 with a guide network: one per net + guide pair);
    ``net_calls`` the forward calls, ``net_rows`` the rows pushed through the network(s) (a doubled CFG
    batch counts twice), ``rng_draws`` the noise draws made inside the sampler.
    """

    net_calls: int = 0
    net_rows: int = 0
    rng_draws: int = 0

    @property
    def evaluations_per_image(self) -> float:
        """Network rows per image (``net_rows / B``): e.g. 435 for REPA-E's 250-step SDE with CFG."""
        return self.net_rows / max(int(self.sample.shape[0]), 1)


class CountingNetwork:
    """Wraps a network ``(x, t, y) -> out``, counting calls and rows."""

    def __init__(self, network: OriginalNetwork):
        self.network = network
        self.calls = 0
        self.rows = 0

    def __call__(self, x: Tensor, t: Tensor, y: Optional[Tensor]) -> Tensor:
        self.calls += 1
        self.rows += int(x.shape[0])
        return self.network(x, t, y)


class CountingNoise:
    """The noise draws of a sampler, in the state's dtype: ``noise_source(step, like)`` (the pipeline's
    per-image streams, any dtype) or, by default, ``torch.randn_like(like)`` on the global generator (the
    originals' own draw, e.g. float64 for EDM and REPA)."""

    def __init__(self, noise_source=None):
        self.noise_source = noise_source
        self.draws = 0

    def __call__(self, step: int, like: Tensor) -> Tensor:
        self.draws += 1
        if self.noise_source is None:
            return torch.randn_like(like)
        return self.noise_source(step, like).to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class OriginalInfo:
    """Where a sampler comes from and how its network and NFE are counted.

    ``paper_nfe(steps, options)`` is the NFE as the papers count it for a row (``options`` already merged
    with the sampler's defaults): Heun 2n - 1; with classifier-free guidance "n x 2" even where the
    original doubles the batch on only part of the steps (REPA, REPA-E) or runs n - 1 steps
    (LightningDiT); :attr:`OriginalSampleResult.evaluations_per_image` is the measured count.
    """

    name: str
    repo: str
    commit: str
    source: str  # file and function (lines) of the original
    convention: str
    paper_nfe: Callable[[int, Dict[str, Any]], int]

    @property
    def describe(self) -> str:
        """One line for tables: ``"NVlabs/edm2@4bf8162 generate_images.py edm_sampler (l.75-117)"``."""
        return f"{self.repo}@{self.commit[:7]} {self.source}"


def original(info: OriginalInfo):
    """Decorator: attach ``info`` to a sampler function as ``fn.original``."""
    if info.convention not in CONVENTIONS:
        raise ValueError(f"unknown network convention {info.convention!r}; expected one of {CONVENTIONS}")

    def attach(fn):
        fn.original = info
        return fn

    return attach


def merged_options(sampler: Callable, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The sampler's keyword defaults updated by ``options``."""
    params = inspect.signature(sampler).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(options or {})
    return out


def check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_labels(labels: Optional[Tensor], batch: int, needed: bool, who: str) -> Optional[Tensor]:
    """Labels are [B] integers; a sampler that builds a guided batch needs them."""
    if labels is None:
        if needed:
            raise ValueError(f"{who}: classifier-free guidance needs labels [B]")
        return None
    if labels.shape != (batch,) or labels.dtype.is_floating_point:
        raise ValueError(
            f"{who}: labels must be an integer tensor of shape [{batch}], got {labels.dtype} {list(labels.shape)}"
        )
    return labels


def finish(
    x: Tensor,
    grid: Tensor,
    nfe: int,
    net: CountingNetwork,
    noise: Optional[CountingNoise],
    states,
    return_trajectory: bool,
    extra_calls: int = 0,
    extra_rows: int = 0,
) -> OriginalSampleResult:
    return OriginalSampleResult(
        sample=x,
        t_grid=grid,
        nfe=nfe,
        trajectory=torch.stack(states) if return_trajectory else None,
        net_calls=net.calls + extra_calls,
        net_rows=net.rows + extra_rows,
        rng_draws=noise.draws if noise is not None else 0,
    )


__all__ = [
    "CONVENTIONS",
    "OriginalNetwork",
    "OriginalSampleResult",
    "CountingNetwork",
    "CountingNoise",
    "OriginalInfo",
    "original",
    "merged_options",
    "check_int",
    "check_labels",
    "finish",
]
