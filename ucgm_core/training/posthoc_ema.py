"""Post-hoc EMA: choose the EMA length after training (EDM2, Karras et al. 2024, Sec. 3 and App. C).

Written from the paper's equations. The pieces, one function each:

* Power-function EMA (EDM2 Sec. 3.1): the average at time ``t`` weighs the weights at time ``tau`` by
  the *profile* ``p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on ``[0, t]`` (zero after ``t``).
  Its length is the profile's standard deviation relative to ``t``,
  ``sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))`` (:func:`gamma_to_sigma_rel`); the
  inverse takes the largest real root of the cubic ``sigma_rel^2 (gamma + 2)^2 (gamma + 3) - (gamma + 1)``
  (:func:`sigma_rel_to_gamma`). ``sigma_rel = 0.05, 0.10`` give ``gamma = 16.97, 6.94`` (the paper's two).
* Discrete tracking (EDM2 Sec. 3.1, App. C.1): after optimizer step ``t = 1, 2, ...``
  ``avg <- beta_t avg + (1 - beta_t) theta_t`` with ``beta_t = (1 - 1/t)^(gamma + 1)``
  (:func:`power_ema_beta`, :class:`PowerEMA`). The products of the betas telescope: the weight of
  ``theta_tau`` in the average at step ``t`` is ``(tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1)``
  (:func:`discrete_profile`), the mass of the continuous profile on ``(tau - 1, tau]``: the discrete
  tracker *is* the continuous one with the weights held constant over each step.
* Snapshots (EDM2 Sec. 3.2): two such averages (``sigma_rel`` 0.05 and 0.10 by default) are tracked
  during training and saved every ``snapshot_every`` steps (:class:`PosthocEMA`).
* Reconstruction (EDM2 App. C.2): the average of any other ``sigma_rel`` at a time ``t_r`` is
  approximated by ``sum_i x_i * snapshot_i``, the ``x`` minimising the L2 distance between
  ``sum_i x_i p_i`` and the target profile: ``A x = b`` with the profiles' inner products
  ``A_ij = <p_i, p_j>``, ``b_i = <p_i, p_r>`` (closed form, :func:`profile_inner_product`;
  ``profiles="continuous"``, the paper's). ``profiles="discrete"`` solves the same least-squares problem
  over the exact discrete weights (:func:`discrete_profile`) instead, which is what the trackers
  compute; for long runs the two agree to O(1/t). The fit is exact only when the target profile lies in
  the snapshots' span (e.g. snapshots every step); otherwise the reconstruction differs from a directly
  tracked average by ``sum_tau (q_tau - w_tau) theta_tau``, the residual profile ``q - w`` applied to
  the trajectory (tests/training/test_posthoc_ema.py checks this identity and the residual's size).

:func:`reconstruct` combines in-memory snapshots; :func:`reconstruct_checkpoint` reads a run's snapshot
folder and writes an ordinary model checkpoint (:mod:`ucgm_core.checkpoint`) whose EMA is the
reconstruction, so the sampler uses it like any other. Command line::

    python workflow/scripts/posthoc_ema.py RUN_DIR_OR_CHECKPOINT --sigma-rel 0.08 --out ema-0.080.pt
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..io import atomic_torch_save
from .ema import ema_update_, frozen_copy

__all__ = [
    "FORMAT",
    "SIGMA_REL_MAX",
    "SNAPSHOT_DIR",
    "PosthocEMA",
    "PowerEMA",
    "Snapshot",
    "discrete_profile",
    "gamma_to_sigma_rel",
    "list_snapshots",
    "power_ema_beta",
    "profile",
    "profile_gram",
    "profile_inner_product",
    "reconstruct",
    "reconstruct_checkpoint",
    "sigma_rel_to_gamma",
    "solve_weights",
]

FORMAT = "ucgm-posthoc-ema/1"
SNAPSHOT_DIR = "posthoc_ema"  # inside the run folder (the training's resumable state folder)
SIGMA_REL_MAX = 1.0 / math.sqrt(12.0)  # gamma = 0 (a flat profile); longer lengths need gamma < 0
PROFILE_KINDS = ("auto", "discrete", "continuous")
DISCRETE_MAX_ENTRIES = 1 << 24  # "auto": discrete while snapshots x steps fits 128 MiB of float64


# -- the profile and its length --------------------------------------------------------------------------
def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative standard deviation of the power profile with exponent ``gamma`` (EDM2 Eq. 3):
    ``sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))``."""
    g = float(gamma)
    if not g > -1.0:
        raise ValueError(f"gamma must be > -1 (the profile tau^gamma is integrable only then), got {gamma}")
    return math.sqrt((g + 1.0) / ((g + 2.0) ** 2 * (g + 3.0)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Exponent ``gamma >= 0`` of the power profile of relative length ``sigma_rel`` (EDM2 Eq. 3 inverted).

    ``sigma_rel^2 (gamma + 2)^2 (gamma + 3) = gamma + 1`` is the cubic
    ``s gamma^3 + 7 s gamma^2 + (16 s - 1) gamma + (12 s - 1) = 0`` with ``s = sigma_rel^2``; its largest
    real root is the one on the decreasing branch ``gamma >= 0``, i.e. ``0 < sigma_rel <= 1/sqrt(12)``.
    """
    s_rel = float(sigma_rel)
    if not 0.0 < s_rel <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel must lie in (0, 1/sqrt(12) = {SIGMA_REL_MAX:.4f}] (gamma >= 0), got {sigma_rel}")
    s = s_rel * s_rel
    roots = np.roots([s, 7.0 * s, 16.0 * s - 1.0, 12.0 * s - 1.0])
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots))].real
    gamma = float(real.max())
    # polish the root with two Newton steps on the cubic (np.roots goes through an eigenvalue solver)
    for _ in range(2):
        f = ((s * gamma + 7.0 * s) * gamma + 16.0 * s - 1.0) * gamma + 12.0 * s - 1.0
        df = (3.0 * s * gamma + 14.0 * s) * gamma + 16.0 * s - 1.0
        if df != 0.0:
            gamma -= f / df
    return max(gamma, 0.0)


def power_ema_beta(t: int, gamma: float) -> float:
    """Decay of update ``t`` (1-based) of the power EMA: ``beta_t = (1 - 1/t)^(gamma + 1)`` (EDM2 Sec. 3.1).
    ``beta_1 = 0``: the first update copies the weights."""
    if int(t) < 1:
        raise ValueError(f"power EMA update index t must be >= 1, got {t}")
    return (1.0 - 1.0 / int(t)) ** (float(gamma) + 1.0)


def profile(tau: np.ndarray, t: float, gamma: float) -> np.ndarray:
    """Continuous profile ``p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on ``[0, t]``, 0 elsewhere."""
    tau = np.asarray(tau, dtype=np.float64)
    g1 = float(gamma) + 1.0
    inside = (tau >= 0.0) & (tau <= t)
    safe = np.where(inside, tau, 0.0) / float(t)
    return np.where(inside, g1 * safe ** float(gamma) / float(t), 0.0)


def discrete_profile(t: int, gamma: float, length: int | None = None) -> np.ndarray:
    """Weights of ``theta_1 .. theta_t`` in the tracked power EMA after update ``t`` (float64), zero-padded
    to ``length``: ``w_tau = (tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1)``, the product
    ``(1 - beta_tau) prod_{s > tau} beta_s`` in closed form; written as
    ``(tau/t)^(gamma+1) * -expm1((gamma+1) log1p(-1/tau))`` so that it neither overflows nor cancels."""
    t = int(t)
    n = t if length is None else int(length)
    if t < 1 or n < t:
        raise ValueError(f"discrete profile: need 1 <= t <= length, got t={t}, length={n}")
    g1 = float(gamma) + 1.0
    tau = np.arange(1, t + 1, dtype=np.float64)
    w = np.zeros(n, dtype=np.float64)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf at tau = 1: expm1(-inf) = -1, the weight is (1/t)^g1
        w[:t] = (tau / t) ** g1 * -np.expm1(g1 * np.log1p(-1.0 / tau))
    return w


def profile_inner_product(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    """``<p_a, p_b> = int_0^min(t_a, t_b) p_a p_b dtau`` (EDM2 App. C.2), in closed form:
    ``(g_a + 1)(g_b + 1) m^(g_a + g_b + 1) / ((g_a + g_b + 1) t_a^(g_a + 1) t_b^(g_b + 1))``, ``m = min``;
    evaluated as ``... (m/t_a)^(g_a+1) (m/t_b)^(g_b+1) / m`` so that long runs do not overflow."""
    ga1, gb1 = float(gamma_a) + 1.0, float(gamma_b) + 1.0
    m = min(float(t_a), float(t_b))
    return ga1 * gb1 / (ga1 + gb1 - 1.0) * (m / float(t_a)) ** ga1 * (m / float(t_b)) ** gb1 / m


def profile_gram(keys: Sequence[tuple[int, float]]) -> np.ndarray:
    """Matrix of :func:`profile_inner_product` over ``(step, gamma)`` pairs."""
    n = len(keys)
    gram = np.empty((n, n), dtype=np.float64)
    for i, (ti, gi) in enumerate(keys):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = profile_inner_product(ti, gi, keys[j][0], keys[j][1])
    return gram


def solve_weights(
    keys: Sequence[tuple[int, float]], target_step: int, target_gamma: float, profiles: str = "auto"
) -> tuple[np.ndarray, float]:
    """Least-squares weights ``x`` of snapshots ``keys = [(step, gamma), ...]`` for the target profile
    ``(target_step, target_gamma)`` and the relative residual ``||sum x_i p_i - p_r|| / ||p_r||`` (float64).

    ``profiles``: ``"continuous"`` (the paper's closed-form inner products, ``A x = b``), ``"discrete"``
    (the exact per-step weights, solved as an overdetermined system by ``numpy.linalg.lstsq``, which keeps
    the conditioning of the weights rather than squaring it) or ``"auto"`` (discrete while
    ``len(keys) * target_step <= 2^24``). Rank-deficient systems get the minimum-norm solution.
    """
    if profiles not in PROFILE_KINDS:
        raise ValueError(f"profiles={profiles!r} is unknown; expected one of {PROFILE_KINDS}")
    if not keys:
        raise ValueError("post-hoc EMA: no snapshots to reconstruct from")
    late = [int(s) for s, _ in keys if int(s) > int(target_step) or int(s) < 1]
    if late:
        raise ValueError(f"post-hoc EMA: snapshot steps {late} lie outside [1, target step {target_step}]")
    if profiles == "auto":
        profiles = "discrete" if len(keys) * int(target_step) <= DISCRETE_MAX_ENTRIES else "continuous"
    if profiles == "discrete":
        basis = np.stack([discrete_profile(s, g, int(target_step)) for s, g in keys], axis=1)  # [T, K]
        target = discrete_profile(int(target_step), target_gamma)
        x = np.linalg.lstsq(basis, target, rcond=None)[0]
        return x, float(np.linalg.norm(basis @ x - target) / np.linalg.norm(target))
    gram = profile_gram(keys)
    b = np.array([profile_inner_product(s, g, target_step, target_gamma) for s, g in keys])
    x = np.linalg.lstsq(gram, b, rcond=None)[0]
    rr = profile_inner_product(target_step, target_gamma, target_step, target_gamma)
    residual2 = max(float(x @ gram @ x - 2.0 * x @ b + rr), 0.0)  # ||q - p_r||^2 expanded
    return x, math.sqrt(residual2 / rr)


# -- tracking ---------------------------------------------------------------------------------------------
class PowerEMA:
    """A power-function EMA of a model's parameters (buffers copied), resumable.

    ``update(model)`` after each optimizer step ``t = 1, 2, ...`` applies ``beta_t = (1 - 1/t)^(gamma + 1)``
    (:func:`power_ema_beta`) in the parameters' own dtype. Give ``sigma_rel`` or ``gamma``.
    """

    def __init__(self, model: nn.Module, sigma_rel: float | None = None, gamma: float | None = None):
        if (sigma_rel is None) == (gamma is None):
            raise ValueError(
                f"PowerEMA: give exactly one of sigma_rel and gamma (got sigma_rel={sigma_rel}, gamma={gamma})"
            )
        self.gamma = sigma_rel_to_gamma(sigma_rel) if gamma is None else float(gamma)
        self.sigma_rel = float(sigma_rel) if sigma_rel is not None else gamma_to_sigma_rel(self.gamma)
        self.module = frozen_copy(model).eval()
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        ema_update_(self.module, model, power_ema_beta(self.updates, self.gamma))

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "gamma": self.gamma,
            "sigma_rel": self.sigma_rel,
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not math.isclose(float(state["gamma"]), self.gamma, rel_tol=1e-12, abs_tol=1e-12):
            raise ValueError(
                f"PowerEMA state has gamma={state['gamma']} (sigma_rel={state.get('sigma_rel')}); "
                f"this tracker has gamma={self.gamma} (sigma_rel={self.sigma_rel})"
            )
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@dataclass
class Snapshot:
    """A tracked average saved at ``step`` (its update count) with exponent ``gamma``."""

    step: int
    gamma: float
    state: Mapping[str, Tensor]


def _combine(states: Iterable[tuple[float, Mapping[str, Tensor]]], last: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``sum_i x_i state_i`` in float64 for floating tensors, cast back to their dtype; other tensors
    (integer buffers) come from ``last``, as the trackers copy buffers verbatim."""
    acc: dict[str, Tensor] = {}
    for x, state in states:
        for name, v in state.items():
            if torch.is_floating_point(v):
                term = v.detach().to("cpu", torch.float64) * float(x)
                acc[name] = term if name not in acc else acc[name].add_(term)
    out: dict[str, Tensor] = {}
    for name, v in last.items():
        out[name] = acc[name].to(v.dtype) if torch.is_floating_point(v) else v.detach().cpu().clone()
    return out


def reconstruct(
    snapshots: Sequence[Snapshot], target_sigma_rel: float, step: int | None = None, profiles: str = "auto"
) -> dict[str, Tensor]:
    """The power EMA of length ``target_sigma_rel`` at ``step`` (default: the latest snapshot's),
    reconstructed from ``snapshots`` (those at or before ``step``) by least squares over their profiles
    (:func:`solve_weights`); a state dict on the CPU in the snapshots' dtypes (summed in float64)."""
    if not snapshots:
        raise ValueError("post-hoc EMA: no snapshots to reconstruct from")
    step = max(s.step for s in snapshots) if step is None else int(step)
    used = [s for s in snapshots if s.step <= step]
    if not used:
        raise ValueError(
            f"post-hoc EMA: no snapshot at or before step {step} (steps held: {sorted({s.step for s in snapshots})})"
        )
    x, _ = solve_weights([(s.step, s.gamma) for s in used], step, sigma_rel_to_gamma(target_sigma_rel), profiles)
    last = max(used, key=lambda s: s.step).state
    return _combine(zip(x.tolist(), (s.state for s in used)), last)


# -- during training: trackers and their snapshot files -----------------------------------------------------
class PosthocEMA:
    """The trackers of a training run and their snapshots (EDM2 Sec. 3.2).

    Args:
        model: the online model (wrappers stripped by the trackers' copies).
        sigma_rels: lengths tracked (``train.posthoc_ema.sigma_rels``; EDM2 tracks 0.05 and 0.10).
        snapshot_every: steps between snapshots (``train.posthoc_ema.snapshot_every``); the last step of
            the run is always kept too.
        folder: where snapshots go, ``step-NNNNNNN.pt`` (all trackers in one file, written atomically).
        meta: checkpoint fields (architecture, model_kwargs, transport, num_classes, latent_shape,
            normalizer, autoencoder, info) stored in every snapshot so that
            :func:`reconstruct_checkpoint` can write an ordinary checkpoint; may be ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma_rels: Sequence[float],
        snapshot_every: int,
        folder: os.PathLike | str,
        meta: Mapping[str, Any] | None = None,
    ):
        sigma_rels = [float(s) for s in sigma_rels]
        if not sigma_rels or len(set(sigma_rels)) != len(sigma_rels):
            raise ValueError(
                f"train.posthoc_ema.sigma_rels must be a non-empty list of distinct values, got {sigma_rels}"
            )
        if int(snapshot_every) < 1:
            raise ValueError(f"train.posthoc_ema.snapshot_every must be >= 1, got {snapshot_every}")
        self.trackers = [PowerEMA(model, sigma_rel=s) for s in sigma_rels]
        self.snapshot_every = int(snapshot_every)
        self.folder = Path(folder)
        self.meta = dict(meta) if meta is not None else None

    @property
    def sigma_rels(self) -> list[float]:
        return [tr.sigma_rel for tr in self.trackers]

    def update(self, model: nn.Module) -> None:
        """After each optimizer step (every rank: the trackers are part of the state)."""
        for tr in self.trackers:
            tr.update(model)

    def snapshot_path(self, step: int) -> Path:
        return self.folder / f"step-{int(step):07d}.pt"

    def maybe_snapshot(self, step: int, last: bool = False) -> Path | None:
        """Write the trackers' averages at ``step`` if it is a multiple of ``snapshot_every`` or ``last``."""
        if int(step) < 1 or not (last or int(step) % self.snapshot_every == 0):
            return None
        updates = {tr.updates for tr in self.trackers}
        if updates != {int(step)}:
            raise RuntimeError(
                f"post-hoc EMA snapshot at step {step}: the trackers have {sorted(updates)} "
                "updates (they must be updated once per optimizer step)"
            )
        payload = {
            "format": FORMAT,
            "step": int(step),
            "profiles": [
                {
                    "sigma_rel": tr.sigma_rel,
                    "gamma": tr.gamma,
                    "ema": {k: v.detach().cpu() for k, v in tr.module.state_dict().items()},
                }
                for tr in self.trackers
            ],
            "meta": self.meta,
        }
        path = self.snapshot_path(step)
        atomic_torch_save(payload, path)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {
            "sigma_rels": self.sigma_rels,
            "snapshot_every": self.snapshot_every,
            "trackers": [tr.state_dict() for tr in self.trackers],
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str = "the training state") -> None:
        held = [float(s) for s in state.get("sigma_rels", [])]
        if held != self.sigma_rels:
            raise ValueError(
                f"{source}: post-hoc EMA tracks sigma_rels {held}; train.posthoc_ema.sigma_rels is "
                f"{self.sigma_rels} (a changed list needs a fresh run)"
            )
        for tr, s in zip(self.trackers, state["trackers"]):
            tr.load_state_dict(s)


# -- after training -------------------------------------------------------------------------------------------
def _load(path: Path) -> dict:
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: cannot read post-hoc EMA snapshot ({type(e).__name__}: {e})") from None
    if not isinstance(snap, dict) or snap.get("format") != FORMAT:
        got = snap.get("format") if isinstance(snap, dict) else type(snap).__name__
        raise ValueError(f"{path}: not a {FORMAT} snapshot (format={got!r})")
    return snap


def _snapshot_folder(run_dir: os.PathLike | str) -> Path:
    """``run_dir/posthoc_ema``, ``run_dir`` itself if it holds snapshots, or for a model checkpoint the
    folder of the state it records (``info.state``)."""
    p = Path(run_dir)
    if p.is_file():
        from ..checkpoint import load_checkpoint

        state = (load_checkpoint(p).get("info") or {}).get("state")
        if not state:
            raise ValueError(f"{p}: the checkpoint records no training state folder (info.state)")
        p = Path(state).parent
    if (p / SNAPSHOT_DIR).is_dir():
        return p / SNAPSHOT_DIR
    if p.is_dir() and any(p.glob("step-*.pt")):
        return p
    raise ValueError(
        f"{run_dir}: no post-hoc EMA snapshots ({p / SNAPSHOT_DIR} missing); train with train.posthoc_ema set"
    )


def list_snapshots(run_dir: os.PathLike | str) -> list[tuple[Path, int, list[tuple[float, float]]]]:
    """``[(file, step, [(sigma_rel, gamma), ...]), ...]`` of a run's snapshots, by step."""
    folder = _snapshot_folder(run_dir)
    out = []
    for path in sorted(folder.glob("step-*.pt")):
        snap = _load(path)
        out.append((path, int(snap["step"]), [(float(p["sigma_rel"]), float(p["gamma"])) for p in snap["profiles"]]))
    if not out:
        raise ValueError(f"{folder}: no step-*.pt snapshots")
    return out


def reconstruct_checkpoint(
    run_dir: os.PathLike | str,
    sigma_rel: float,
    out: os.PathLike | str,
    step: int | None = None,
    profiles: str = "auto",
    template: os.PathLike | str | None = None,
) -> Path:
    """Write a model checkpoint at ``out`` whose EMA (and online) weights are the power EMA of length
    ``sigma_rel`` at ``step`` (default: the last snapshot), reconstructed from ``run_dir``'s snapshots.

    ``run_dir``: the run folder (holding ``posthoc_ema/``), the snapshot folder, or the model's final
    checkpoint (its ``info.state`` names the run folder). The checkpoint's architecture, normalizer etc.
    come from the snapshots' ``meta`` or, if given, from ``template`` (a checkpoint of the same model).
    Snapshot files are memory-mapped and summed one at a time. Returns ``out``.
    """
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data.loader import LatentNormalizer
    from ..models import build_model

    target_gamma = sigma_rel_to_gamma(sigma_rel)
    listing = list_snapshots(run_dir)
    step = max(s for _, s, _ in listing) if step is None else int(step)
    used = [(path, s, prof) for path, s, prof in listing if s <= step]
    if not used:
        raise ValueError(
            f"{run_dir}: no post-hoc EMA snapshot at or before step {step} (steps held: {[s for _, s, _ in listing]})"
        )
    keys = [(s, g) for _, s, prof in used for _, g in prof]
    x, residual = solve_weights(keys, step, target_gamma, profiles)

    def terms():
        k = 0
        for path, _, prof in used:
            snap = _load(path)
            for p in snap["profiles"]:
                yield float(x[k]), p["ema"]
                k += 1

    last = _load(used[-1][0])
    state = _combine(terms(), last["profiles"][0]["ema"])
    if template is not None:
        meta = load_checkpoint(template)
        meta = {
            k: meta[k]
            for k in (
                "architecture",
                "model_kwargs",
                "transport",
                "num_classes",
                "latent_shape",
                "normalizer",
                "autoencoder",
                "info",
            )
            if k in meta
        }
    else:
        meta = last.get("meta")
        if not meta:
            raise ValueError(
                f"{used[-1][0]}: the snapshot carries no checkpoint metadata (meta); pass template= "
                "a checkpoint of the same model"
            )
    net = build_model(meta["architecture"], **meta["model_kwargs"])
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{used[-1][0]}: the reconstructed weights do not fit {meta['architecture']} {meta['model_kwargs']} ({e})"
        ) from None
    n = meta["normalizer"]
    info = dict(meta.get("info") or {})
    info["posthoc_ema"] = {
        "sigma_rel": float(sigma_rel),
        "gamma": target_gamma,
        "step": step,
        "profiles": profiles,
        "relative_residual": residual,
        "source": str(_snapshot_folder(run_dir)),
        "weights": [
            [s, sr, float(w)] for (s, sr), w in zip([(s, sr) for _, s, prof in used for sr, _ in prof], x.tolist())
        ],
        "online_weights": "the reconstructed EMA (snapshots keep no online weights)",
    }
    return save_checkpoint(
        out,
        architecture=meta["architecture"],
        model_kwargs=meta["model_kwargs"],
        transport=meta["transport"],
        num_classes=meta["num_classes"],
        latent_shape=meta["latent_shape"],
        normalizer=LatentNormalizer(n.get("mean"), n.get("std"), float(n.get("multiplier", 1.0))),
        autoencoder=meta["autoencoder"],
        step=step,
        model=net,
        ema=net,
        info=info,
    )
