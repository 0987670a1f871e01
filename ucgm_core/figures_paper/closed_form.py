"""The paper's closed-form figures: Fig. 7 (1-D probability-flow ODE trajectories) and Fig. 8 (Beta densities).

Neither needs a trained model, so the paper-scale and the miniature targets compute the same thing.

Fig. 7. The data is a 1-D Gaussian mixture sum_k w_k N(m_k, s_k^2). Under a transport
x_t = alpha(t) z + gamma(t) x (method doc, Sec. 1.1) with z ~ N(0, 1), the pair (x, x_t) given the component
k is jointly Gaussian, so everything is exact:

* marginal        p_t(y) = sum_k w_k N(y; gamma m_k, v_k),  v_k = gamma^2 s_k^2 + alpha^2
* responsibility  r_k(y) = w_k N(y; gamma m_k, v_k) / p_t(y)
* posterior means E[x | x_t = y] = sum_k r_k (m_k + gamma s_k^2 (y - gamma m_k) / v_k)
                  E[z | x_t = y] = sum_k r_k alpha (y - gamma m_k) / v_k
* PF-ODE velocity v(y, t) = alpha'(t) E[z | y] + gamma'(t) E[x | y]   (method doc, Sec. 2, "PF-ODE velocity")

Integrating dy/dt = v(y, t) from t = 1 (noise) to t = 0 carries p_1 onto the data distribution. In 1-D the
flow map is monotone, so a start at the u-quantile of p_1 ends at the u-quantile of the mixture; the tests
use this as an exact check of the integration.

Fig. 8. Beta(a, b) densities on [0, 1], the family of UCGM-T's training-time distribution (``time_dist``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..figures import pyplot

__all__ = [
    "GaussianMixture1D",
    "FIG7_MIXTURE",
    "FIG7_PANELS",
    "FIG8_PANELS",
    "transport_coefficients",
    "marginal_params",
    "marginal_density",
    "posterior_means",
    "pf_ode_velocity",
    "mixture_quantiles",
    "integrate_pf_ode",
    "fig7_data",
    "fig8_data",
    "plot_fig7",
    "plot_fig8",
    "endpoint_shares",
    "make_fig7",
    "make_fig8",
]


@dataclass(frozen=True)
class GaussianMixture1D:
    """A 1-D Gaussian mixture: weights w_k (> 0, summing to 1), means m_k and standard deviations s_k (> 0)."""

    weights: Tuple[float, ...]
    means: Tuple[float, ...]
    stds: Tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.weights)
        if n == 0 or len(self.means) != n or len(self.stds) != n:
            raise ValueError(
                f"GaussianMixture1D: weights, means and stds must have the same non-zero length, got "
                f"{len(self.weights)}, {len(self.means)}, {len(self.stds)}"
            )
        values = np.asarray([*self.weights, *self.means, *self.stds], dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"GaussianMixture1D: every weight, mean and std must be finite, got {self}")
        if min(self.weights) <= 0 or abs(sum(self.weights) - 1.0) > 1e-9:
            raise ValueError(f"GaussianMixture1D: weights must be > 0 and sum to 1, got {self.weights}")
        if min(self.stds) <= 0:
            raise ValueError(f"GaussianMixture1D: stds must be > 0, got {self.stds}")

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(w, m, s) as float64 arrays."""
        return (
            np.asarray(self.weights, np.float64),
            np.asarray(self.means, np.float64),
            np.asarray(self.stds, np.float64),
        )

    def mean(self) -> float:
        w, m, _ = self.arrays()
        return float(w @ m)

    def variance(self) -> float:
        w, m, s = self.arrays()
        return float(w @ (s**2 + m**2) - (w @ m) ** 2)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws: a component by weight, then a normal draw."""
        w, m, s = self.arrays()
        k = rng.choice(len(w), size=n, p=w)
        return m[k] + s[k] * rng.standard_normal(n)


# The bimodal target of Fig. 7. The paper prints no parameters; unequal weights make a wrong split of the
# mass visible (and testable), and the modes sit inside N(0, 1)'s range so the trajectories stay on the plot.
FIG7_MIXTURE = GaussianMixture1D(weights=(0.4, 0.6), means=(-2.0, 2.0), stds=(0.5, 0.5))

# (panel, registered transport, title). TrigFlow is the variance-preserving (OU-type) path:
# alpha^2 + gamma^2 = 1 up to the 1.57 stand-in for pi/2, i.e. an Ornstein-Uhlenbeck process in warped time.
FIG7_PANELS: Tuple[Tuple[str, str, str], ...] = (
    ("a", "TrigFlow", "(a) OU-type (TrigFlow): x_t = sin(1.57t) z + cos(1.57t) x"),
    ("b", "Linear", "(b) Linear: x_t = t z + (1 - t) x"),
)

# The three panels of Fig. 8: (a) skew, (b) concentration, (c) U- and J-shapes.
FIG8_PANELS: Tuple[Tuple[str, Tuple[Tuple[float, float], ...]], ...] = (
    ("a", ((2.0, 8.0), (5.0, 5.0), (8.0, 2.0))),
    ("b", ((1.0, 1.0), (5.0, 5.0), (20.0, 20.0))),
    ("c", ((0.5, 0.5), (0.5, 2.0), (2.0, 0.5))),
)


# --- the transport's coefficients -------------------------------------------------------------------------


def transport_coefficients(transport: str, t: np.ndarray) -> Dict[str, np.ndarray]:
    """alpha, gamma and their time derivatives (``d_alpha``, ``d_gamma``) of a registered transport, in
    internal time (t = 1 noise), float64. The derivatives come from :meth:`Transport.derivatives` (autograd),
    the same ones the baseline ODE samplers use."""
    import torch

    from ucgm_core.transports import orient

    tr = orient(transport)
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64))
    with torch.enable_grad():  # autograd derivatives, also when called under torch.no_grad() (a sampler)
        d = tr.derivatives(tt)
    return {
        "alpha": tr.alpha_in(tt).detach().numpy(),
        "gamma": tr.gamma_in(tt).detach().numpy(),
        "d_alpha": d["alpha_in"].numpy(),
        "d_gamma": d["gamma_in"].numpy(),
    }


def _scalar_coefficients(transport: str, t: float) -> Tuple[float, float, float, float]:
    c = transport_coefficients(transport, np.asarray([t], dtype=np.float64))
    return float(c["alpha"][0]), float(c["gamma"][0]), float(c["d_alpha"][0]), float(c["d_gamma"][0])


# --- the exact marginal, posterior and velocity -----------------------------------------------------------


def marginal_params(mix: GaussianMixture1D, alpha: float, gamma: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, variances) of p_t: the mixture seen through x_t = alpha z + gamma x."""
    w, m, s = mix.arrays()
    var = gamma**2 * s**2 + alpha**2
    if np.any(var <= 0):
        raise ValueError(f"marginal_params: alpha={alpha}, gamma={gamma} give a degenerate marginal (variance 0)")
    return w, gamma * m, var


def _log_components(mix: GaussianMixture1D, y: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """log(w_k N(y; gamma m_k, v_k)), shape [len(y), K]."""
    w, mu, var = marginal_params(mix, alpha, gamma)
    y = np.asarray(y, dtype=np.float64)[..., None]
    return np.log(w) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (y - mu) ** 2 / var


def marginal_density(mix: GaussianMixture1D, y: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """p_t(y), the exact density of x_t."""
    return np.exp(_log_components(mix, y, alpha, gamma)).sum(-1)


def posterior_means(mix: GaussianMixture1D, y: np.ndarray, alpha: float, gamma: float) -> Tuple[np.ndarray, np.ndarray]:
    """(E[x | x_t = y], E[z | x_t = y]): the x_hat and z_hat an ideal network would give (module docstring)."""
    _, m, s = mix.arrays()
    y = np.asarray(y, dtype=np.float64)
    logc = _log_components(mix, y, alpha, gamma)
    resp = np.exp(logc - logc.max(-1, keepdims=True))
    resp /= resp.sum(-1, keepdims=True)
    var = gamma**2 * s**2 + alpha**2
    resid = y[..., None] - gamma * m
    x_hat = (resp * (m + gamma * s**2 * resid / var)).sum(-1)
    z_hat = (resp * (alpha * resid / var)).sum(-1)
    return x_hat, z_hat


def pf_ode_velocity(mix: GaussianMixture1D, transport: str, y: np.ndarray, t: float) -> np.ndarray:
    """dx_t/dt of the probability-flow ODE: alpha'(t) E[z | y] + gamma'(t) E[x | y]."""
    alpha, gamma, d_alpha, d_gamma = _scalar_coefficients(transport, t)
    x_hat, z_hat = posterior_means(mix, y, alpha, gamma)
    return d_alpha * z_hat + d_gamma * x_hat


def mixture_quantiles(weights: np.ndarray, means: np.ndarray, variances: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Quantiles of a 1-D Gaussian mixture at probabilities u in (0, 1), by bisection on the CDF (to 1e-12)."""
    from scipy.special import ndtr

    u = np.asarray(u, dtype=np.float64)
    if np.any((u <= 0) | (u >= 1)):
        raise ValueError(f"mixture_quantiles: probabilities must lie in (0, 1), got min {u.min()}, max {u.max()}")
    sd = np.sqrt(variances)
    lo = np.full_like(u, float(np.min(means - 40 * sd)))
    hi = np.full_like(u, float(np.max(means + 40 * sd)))
    while np.max(hi - lo) > 1e-12 * max(1.0, float(np.max(np.abs(hi)))):
        mid = 0.5 * (lo + hi)
        below = (weights * ndtr((mid[..., None] - means) / sd)).sum(-1) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def integrate_pf_ode(
    mix: GaussianMixture1D, transport: str, y1: np.ndarray, t_eval: np.ndarray, rtol: float = 1e-10, atol: float = 1e-10
) -> np.ndarray:
    """Trajectories of the PF-ODE from y1 at t = 1 down to t = 0, at the decreasing times ``t_eval``
    (t_eval[0] must be 1), with an adaptive 8th-order Runge-Kutta (scipy's DOP853). Returns [len(t_eval), N]."""
    from scipy.integrate import solve_ivp

    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval[0] != 1.0 or np.any(np.diff(t_eval) >= 0) or t_eval[-1] < 0:
        raise ValueError(
            "integrate_pf_ode: t_eval must start at 1 and decrease strictly to a value >= 0, got "
            f"{t_eval[:3]} ... {t_eval[-3:]}"
        )
    sol = solve_ivp(
        lambda t, y: pf_ode_velocity(mix, transport, y, t),
        (1.0, float(t_eval[-1])),
        np.asarray(y1, dtype=np.float64),
        method="DOP853",
        t_eval=t_eval,
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"integrate_pf_ode: the solver failed for transport {transport!r}: {sol.message}")
    return sol.y.T


# --- Fig. 7 -----------------------------------------------------------------------------------------------


def fig7_data(
    mix: GaussianMixture1D = FIG7_MIXTURE,
    n_traj: int = 25,
    n_t: int = 101,
    n_x: int = 161,
    x_range: Tuple[float, float] = (-4.0, 4.0),
) -> List[dict]:
    """Rows of Fig. 7's CSV, per panel: the density p_t on an (n_t x n_x) grid (``kind`` = density) and
    n_traj PF-ODE trajectories started at evenly spaced quantiles (i + 0.5) / n_traj of p_1 (``kind`` =
    trajectory, with the density at the trajectory's point). Deterministic: no random draw."""
    t_grid = np.linspace(1.0, 0.0, n_t)
    x_grid = np.linspace(*x_range, n_x)
    u = (np.arange(n_traj) + 0.5) / n_traj
    rows: List[dict] = []
    for panel, transport, _ in FIG7_PANELS:
        coef = transport_coefficients(transport, t_grid)
        w, mu, var = marginal_params(mix, float(coef["alpha"][0]), float(coef["gamma"][0]))
        paths = integrate_pf_ode(mix, transport, mixture_quantiles(w, mu, var, u), t_grid)
        for i, t in enumerate(t_grid):
            a, g = float(coef["alpha"][i]), float(coef["gamma"][i])
            for x, p in zip(x_grid, marginal_density(mix, x_grid, a, g)):
                rows.append(dict(panel=panel, transport=transport, kind="density", index=-1, t=t, x=x, density=p))
            for j, (x, p) in enumerate(zip(paths[i], marginal_density(mix, paths[i], a, g))):
                rows.append(dict(panel=panel, transport=transport, kind="trajectory", index=j, t=t, x=x, density=p))
    return rows


def _save(fig, path: os.PathLike | str) -> None:
    """Write a matplotlib figure as PNG atomically (ucgm_core.io)."""
    from ucgm_core.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))


def _write_csv(rows: Sequence[dict], path: os.PathLike | str) -> None:
    import pandas as pd

    from ucgm_core.io import atomic_write

    frame = pd.DataFrame(list(rows))
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.10g"))


def plot_fig7(rows: Sequence[dict], path: os.PathLike | str, mix: GaussianMixture1D = FIG7_MIXTURE) -> None:
    """Heat map of p_t(x) over (t, x), t running from 1 (noise, left) to 0 (data, right), with the
    trajectories on top and the endpoints' share of each mode in the panel title."""
    import pandas as pd

    plt = pyplot()
    frame = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, len(FIG7_PANELS), figsize=(5.2 * len(FIG7_PANELS), 3.8), sharey=True)
    split = float(np.mean(mix.means))
    for ax, (panel, transport, title) in zip(np.atleast_1d(axes), FIG7_PANELS):
        dens = frame[(frame.panel == panel) & (frame.kind == "density")]
        grid = dens.pivot(index="x", columns="t", values="density").sort_index(axis=1, ascending=False)
        ax.pcolormesh(grid.columns.to_numpy(), grid.index.to_numpy(), grid.to_numpy(), shading="gouraud", cmap="magma")
        traj = frame[(frame.panel == panel) & (frame.kind == "trajectory")]
        ends = []
        for _, path_rows in traj.groupby("index"):
            path_rows = path_rows.sort_values("t", ascending=False)
            ax.plot(path_rows.t, path_rows.x, color="white", lw=0.7, alpha=0.85)
            ends.append(float(path_rows.x.iloc[-1]))
        share = np.mean(np.asarray(ends) < split)
        ax.set_xlim(1.0, 0.0)
        ax.set_xlabel("t (1 = noise, 0 = data)")
        ax.set_title(f"{title}\nendpoints below {split:g}: {share:.2f} (weight {mix.weights[0]:g})", fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("x")
    fig.suptitle("Probability-flow ODE trajectories to a bimodal Gaussian (closed-form velocity)", fontsize=9, y=1.06)
    _save(fig, path)
    plt.close(fig)


def endpoint_shares(rows: Sequence[dict], mix: GaussianMixture1D = FIG7_MIXTURE) -> Dict[str, float]:
    """Per panel, the share of trajectories that end below the midpoint of the two modes (to compare with
    the lower mode's weight): Fig. 7's key number."""
    split = float(np.mean(mix.means))
    out: Dict[str, float] = {}
    for panel, transport, _ in FIG7_PANELS:
        ends = [r["x"] for r in rows if r["panel"] == panel and r["kind"] == "trajectory" and r["t"] == 0.0]
        if not ends:
            raise ValueError(f"endpoint_shares: no trajectory point at t = 0 in panel {panel!r}")
        out[f"({panel}) {transport}: share of endpoints below {split:g}"] = float(np.mean(np.asarray(ends) < split))
    return out


def make_fig7(png: os.PathLike | str, csv: os.PathLike | str) -> Dict[str, float]:
    """Fig. 7: the PNG and its CSV (same at every scale). Returns :func:`endpoint_shares`."""
    rows = fig7_data()
    _write_csv(rows, csv)
    plot_fig7(rows, png)
    return endpoint_shares(rows)


# --- Fig. 8 -----------------------------------------------------------------------------------------------


def fig8_data(n_x: int = 499) -> List[dict]:
    """Rows of Fig. 8's CSV: each panel's Beta(a, b) densities at n_x interior points of (0, 1) (the ends are
    left out: Beta(0.5, .) is infinite there)."""
    from scipy.stats import beta

    x = np.linspace(0.0, 1.0, n_x + 2)[1:-1]
    rows: List[dict] = []
    for panel, params in FIG8_PANELS:
        for a, b in params:
            for xi, p in zip(x, beta.pdf(x, a, b)):
                rows.append(dict(panel=panel, a=a, b=b, x=xi, density=p))
    return rows


FIG8_YMAX = 5.5  # the U- and J-shaped densities of panel (c) are infinite at the ends; the axis stops here


def plot_fig8(rows: Sequence[dict], path: os.PathLike | str) -> None:
    """Three panels of Beta densities, one curve per (a, b)."""
    import pandas as pd

    plt = pyplot()
    frame = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, len(FIG8_PANELS), figsize=(4.0 * len(FIG8_PANELS), 3.0))
    for ax, (panel, params) in zip(np.atleast_1d(axes), FIG8_PANELS):
        top = 0.0
        for a, b in params:
            curve = frame[(frame.panel == panel) & (frame.a == a) & (frame.b == b)].sort_values("x")
            ax.plot(curve.x, curve.density, lw=1.4, label=f"Beta({a:g}, {b:g})")
            top = max(top, float(curve.density.max()))
        ax.set_ylim(0.0, min(1.05 * top, FIG8_YMAX))
        ax.set_xlim(0.0, 1.0)
        ax.set_title(f"({panel})", fontsize=9)
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("density")
    _save(fig, path)
    plt.close(fig)


def make_fig8(png: os.PathLike | str, csv: os.PathLike | str) -> Dict[str, float]:
    """Fig. 8: the PNG and its CSV (same at every scale). Returns each curve's mean a / (a + b)."""
    rows = fig8_data()
    _write_csv(rows, csv)
    plot_fig8(rows, png)
    return {f"Beta({a:g}, {b:g})": a / (a + b) for _, params in FIG8_PANELS for a, b in params}
