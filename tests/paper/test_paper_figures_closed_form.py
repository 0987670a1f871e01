"""The paper's closed-form figures (Fig. 7: 1-D PF-ODE to a bimodal Gaussian; Fig. 8: Beta densities).

The analytic pieces are checked against independent computations: the closed-form posterior means and
velocity against importance-sampling Monte-Carlo estimates and against the continuity equation, the ODE's
endpoints against the mixture's quantiles and weights, the Beta curves against the Beta function. The last
tests run Snakemake for the two miniature targets in a temporary folder (about a minute on 2 cores).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import betainc, ndtr

from ucgm_core.figures_paper import closed_form as cf

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "smoke.yaml"
BIN = os.path.dirname(sys.executable)
MIX = cf.FIG7_MIXTURE
TRANSPORTS = ("Linear", "TrigFlow", "Random", "EDM", "ReLinear")


def coefficients(name: str, t: float) -> tuple[float, float, float, float]:
    c = cf.transport_coefficients(name, np.asarray([t]))
    return tuple(float(c[k][0]) for k in ("alpha", "gamma", "d_alpha", "d_gamma"))


def mixture_density(x: np.ndarray) -> np.ndarray:
    w, m, s = MIX.arrays()
    return (w * np.exp(-0.5 * ((x[:, None] - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).sum(-1)


def self_normalised(weights: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Importance-sampling estimate sum(w f) / sum(w) and its delta-method standard error."""
    est = float((weights * values).sum() / weights.sum())
    se = float(np.sqrt((weights**2 * (values - est) ** 2).sum()) / weights.sum())
    return est, se


# --- the mixture and its refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=(0.5, 0.5), means=(0.0,), stds=(1.0, 1.0)), "same non-zero length"),
        (dict(weights=(0.7, 0.7), means=(0.0, 1.0), stds=(1.0, 1.0)), r"sum to 1, got \(0.7, 0.7\)"),
        (dict(weights=(1.0,), means=(0.0,), stds=(0.0,)), r"stds must be > 0, got \(0.0,\)"),
        (dict(weights=(1.0,), means=(float("nan"),), stds=(1.0,)), "must be finite"),
    ],
)
def test_bad_mixture_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cf.GaussianMixture1D(**kwargs)


def test_bad_ode_grid_and_quantiles_are_refused():
    with pytest.raises(ValueError, match="t_eval must start at 1 and decrease strictly"):
        cf.integrate_pf_ode(MIX, "Linear", np.zeros(2), np.asarray([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"probabilities must lie in \(0, 1\)"):
        cf.mixture_quantiles(*MIX.arrays()[:2], np.asarray(MIX.stds) ** 2, np.asarray([0.0, 0.5]))
    with pytest.raises(ValueError, match="unknown transport 'VP'"):
        cf.transport_coefficients("VP", np.asarray([0.5]))


def test_coefficients_are_the_transports_and_their_derivatives():
    t = np.linspace(0.05, 0.95, 7)
    lin, trig = cf.transport_coefficients("Linear", t), cf.transport_coefficients("TrigFlow", t)
    np.testing.assert_allclose(lin["alpha"], t, rtol=0, atol=1e-15)
    np.testing.assert_allclose(lin["d_gamma"], -1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(trig["d_alpha"], 1.57 * np.cos(1.57 * t), rtol=1e-12, atol=0)
    # ReLinear is Linear in internal time (method doc, Sec. 1.1: orientation)
    for key, value in cf.transport_coefficients("ReLinear", t).items():
        np.testing.assert_allclose(value, lin[key], rtol=0, atol=1e-15, err_msg=key)


# --- closed-form posterior and velocity ------------------------------------------------------------------


@pytest.mark.parametrize("name", ("Linear", "TrigFlow", "Random", "EDM"))
@pytest.mark.parametrize("t", (0.3, 0.7))
def test_posterior_means_and_velocity_match_monte_carlo(name, t):
    """E[x | x_t = y] and E[z | x_t = y] by importance sampling over the prior of x, resp. of z (no Gaussian
    conjugacy used), agree with the closed form within 5 standard errors; the errors are small enough (< 0.03)
    that the check is not vacuous. Seeded numpy PCG64 draws are the same on every machine."""
    alpha, gamma, d_alpha, d_gamma = coefficients(name, t)
    rng = np.random.default_rng(1234)
    n = 400_000
    xs, zs = MIX.sample(n, rng), rng.standard_normal(n)
    for x0, z0 in ((-2.2, 0.5), (1.7, -1.0), (0.3, 1.2)):
        y = gamma * x0 + alpha * z0  # a typical point of p_t
        x_mc, x_se = self_normalised(np.exp(-0.5 * ((y - gamma * xs) / alpha) ** 2), xs)
        z_mc, z_se = self_normalised(mixture_density((y - alpha * zs) / gamma), zs)
        x_hat, z_hat = cf.posterior_means(MIX, np.asarray([y]), alpha, gamma)
        assert max(x_se, z_se) < 0.03, (name, t, y, x_se, z_se)
        assert abs(float(x_hat[0]) - x_mc) <= 5 * x_se, (name, t, y, float(x_hat[0]), x_mc, x_se)
        assert abs(float(z_hat[0]) - z_mc) <= 5 * z_se, (name, t, y, float(z_hat[0]), z_mc, z_se)
        v = float(cf.pf_ode_velocity(MIX, name, np.asarray([y]), t)[0])
        v_mc = d_alpha * z_mc + d_gamma * x_mc
        assert abs(v - v_mc) <= 5 * (abs(d_alpha) * z_se + abs(d_gamma) * x_se), (name, t, y, v, v_mc)


@pytest.mark.parametrize("name", TRANSPORTS)
@pytest.mark.parametrize("t", (0.1, 0.5, 0.9))
def test_velocity_satisfies_the_continuity_equation(name, t):
    """dp_t/dt + d(p_t v)/dy = 0: the velocity carries the exact marginal along (checked by central
    differences, h = 1e-4: truncation error ~h^2 times third derivatives, i.e. <= 3e-6 of max |dp/dt| for
    EDM's fast sigma(t) and ~1e-7 for the others; rounding ~1e-12). A wrong factor or sign is O(1)."""
    y, h = np.linspace(-5.0, 5.0, 201), 1e-4

    def density(tt: float, yy: np.ndarray) -> np.ndarray:
        a, g, _, _ = coefficients(name, tt)
        return cf.marginal_density(MIX, yy, a, g)

    def flux(yy: np.ndarray) -> np.ndarray:
        return density(t, yy) * cf.pf_ode_velocity(MIX, name, yy, t)

    dp_dt = (density(t + h, y) - density(t - h, y)) / (2 * h)
    residual = dp_dt + (flux(y + h) - flux(y - h)) / (2 * h)
    assert np.abs(dp_dt).max() > 1e-4  # the density moves (EDM at t = 0.1 barely: sigma = 0.008)
    assert np.abs(residual).max() <= 1e-5 * np.abs(dp_dt).max(), (np.abs(residual).max(), np.abs(dp_dt).max())


def test_marginal_density_integrates_to_one_and_matches_the_data_at_t0():
    y = np.linspace(-12.0, 12.0, 6001)  # EDM's data end is gamma(0) x = 2 x: modes at +-4
    for name in TRANSPORTS:
        for t in (0.0, 0.4, 1.0):
            a, g, _, _ = coefficients(name, t)
            assert np.trapezoid(cf.marginal_density(MIX, y, a, g), y) == pytest.approx(1.0, abs=1e-6), (name, t)
    a, g, _, _ = coefficients("Linear", 0.0)
    np.testing.assert_allclose(cf.marginal_density(MIX, y, a, g), mixture_density(y), rtol=1e-12, atol=1e-300)


# --- the ODE's trajectories -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSPORTS)
def test_trajectories_from_quantiles_stay_on_the_quantiles(name):
    """In 1-D the PF-ODE's flow is monotone, so a start at the u-quantile of p_1 is at the u-quantile of p_t
    for every t, down to the data (x_0 = gamma(0) x: EDM's c_in scales the data by 2). The solver runs at
    tolerance 1e-10; 1e-6 leaves room for the quantiles' bisection and the solver's global error."""
    u = (np.arange(40) + 0.5) / 40
    t_eval = np.asarray([1.0, 0.6, 0.25, 0.0])

    def quantiles(t: float) -> np.ndarray:
        a, g, _, _ = coefficients(name, t)
        return cf.mixture_quantiles(*cf.marginal_params(MIX, a, g), u)

    paths = cf.integrate_pf_ode(MIX, name, quantiles(1.0), t_eval)
    for i, t in enumerate(t_eval):
        np.testing.assert_allclose(paths[i], quantiles(float(t)), rtol=0, atol=1e-6, err_msg=f"{name} t={t}")


@pytest.mark.parametrize("name", ("TrigFlow", "Linear"))
def test_endpoint_histogram_matches_the_mixture(name):
    """Random starts drawn from p_1 end with the mixture's weights: the share below the modes' midpoint is the
    lower weight 0.4 (plus a 6e-6 tail) within 4 binomial standard errors (n = 2000: 0.044), and so is the
    share of every bin of the data's range."""
    rng = np.random.default_rng(7)
    a, g, _, _ = coefficients(name, 1.0)
    w, mu, var = cf.marginal_params(MIX, a, g)
    k = rng.choice(len(w), size=2000, p=w)
    y1 = mu[k] + np.sqrt(var[k]) * rng.standard_normal(2000)
    ends = cf.integrate_pf_ode(MIX, name, y1, np.asarray([1.0, 0.0]))[-1]
    n = len(ends)
    share = float(np.mean(ends < 0.0))
    assert abs(share - MIX.weights[0]) <= 4 * math.sqrt(0.4 * 0.6 / n), share
    edges = np.asarray([-np.inf, -3.0, -2.5, -2.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0, 2.5, 3.0, np.inf])
    ws, ms, ss = MIX.arrays()
    cdf = (ws * ndtr((edges[:, None] - ms) / ss)).sum(-1)
    expected = np.diff(cdf)
    observed = np.histogram(ends, edges)[0] / n
    bound = 4 * np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert np.all(np.abs(observed - expected) <= bound), (observed, expected)


def test_fig7_data_layout_and_key_numbers():
    rows = cf.fig7_data(n_traj=10, n_t=11, n_x=21)
    frame = pd.DataFrame(rows)
    assert set(frame.columns) == {"panel", "transport", "kind", "index", "t", "x", "density"}
    assert [(p, tr) for p, tr, _ in cf.FIG7_PANELS] == [("a", "TrigFlow"), ("b", "Linear")]
    for panel, transport, _ in cf.FIG7_PANELS:
        part = frame[frame.panel == panel]
        assert (part.transport == transport).all()
        assert (part.kind == "density").sum() == 11 * 21 and (part.kind == "trajectory").sum() == 11 * 10
        assert np.isfinite(part[["t", "x", "density"]].to_numpy()).all()
        ends = part[(part.kind == "trajectory") & (part.t == 0.0)].sort_values("index").x.to_numpy()
        u = (np.arange(10) + 0.5) / 10
        np.testing.assert_allclose(
            ends, cf.mixture_quantiles(*MIX.arrays()[:2], np.asarray(MIX.stds) ** 2, u), rtol=0, atol=1e-6
        )
    # quantile starts (i + 0.5) / 10: exactly 4 of 10 below 0 (weight 0.4)
    assert all(v == pytest.approx(0.4, abs=1e-12) for v in cf.endpoint_shares(rows).values())


# --- Fig. 8 ------------------------------------------------------------------------------------------------


def test_fig8_panels_are_the_papers():
    assert cf.FIG8_PANELS == (
        ("a", ((2.0, 8.0), (5.0, 5.0), (8.0, 2.0))),
        ("b", ((1.0, 1.0), (5.0, 5.0), (20.0, 20.0))),
        ("c", ((0.5, 0.5), (0.5, 2.0), (2.0, 0.5))),
    )


def test_fig8_curves_are_beta_densities():
    """Each curve equals x^(a-1) (1-x)^(b-1) / B(a, b), B from log-gamma (independent of scipy.stats), to
    1e-10 relative; the bounded ones integrate over the grid to the mass the incomplete Beta function gives
    (trapezoid error at spacing h = 0.002: h^2 / 12 |f'(end) - f'(start)| <= 2.4e-5, Beta(2, 8)'s f'(0) = 72
    being the largest slope; bound 5e-5)."""
    frame = pd.DataFrame(cf.fig8_data())
    assert len(frame) == 9 * 499
    for panel, params in cf.FIG8_PANELS:
        for a, b in params:
            curve = frame[(frame.panel == panel) & (frame.a == a) & (frame.b == b)].sort_values("x")
            x = curve.x.to_numpy()
            assert len(x) == 499 and x.min() > 0 and x.max() < 1
            log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
            expected = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta)
            np.testing.assert_allclose(curve.density.to_numpy(), expected, rtol=1e-10, atol=0, err_msg=f"{a},{b}")
            if a >= 1 and b >= 1:  # the grid's mass equals the regularised incomplete Beta function's
                mass = betainc(a, b, x.max()) - betainc(a, b, x.min())
                assert np.trapezoid(curve.density, x) == pytest.approx(mass, abs=5e-5), (a, b)


# --- the script and the Snakemake targets ---------------------------------------------------------------


def _script():
    spec = importlib.util.spec_from_file_location("paper_figure", ROOT / "workflow" / "scripts" / "paper_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_refuses_unknown_figure_and_missing_manifest_file(tmp_path):
    script = _script()
    with pytest.raises(SystemExit, match=r"unknown figure 'fig9': expected one of \['fig7_pf_ode_1d', 'fig8_beta'\]"):
        script.main(["figure", "fig9", "--png", str(tmp_path / "a.png"), "--csv", str(tmp_path / "a.csv")])
    with pytest.raises(SystemExit, match="expected files are missing"):
        script.main(["manifest", "--out", str(tmp_path / "m.tsv"), str(tmp_path / "absent.png")])
    assert not (tmp_path / "m.tsv").exists()


def test_manifest_lists_the_files_with_their_hashes(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.csv"]
    files[0].write_bytes(b"\x89PNG one")
    files[1].write_text("x,y\n1,2\n")
    out = tmp_path / "results" / "manifest.tsv"
    assert _script().main(["manifest", "--out", str(out), *map(str, files)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert table.path.tolist() == [str(f) for f in files]
    assert table.bytes.tolist() == [8, 8]
    assert table.sha256.tolist() == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(SMOKE),
        "--cores",
        "2",
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The two closed-form miniature targets, built by Snakemake in a temporary folder."""
    work = tmp_path_factory.mktemp("paper_figures")
    snakemake(work, "results/figures/paper_mini/fig7_pf_ode_1d.png", "results/figures/paper_mini/fig8_beta.png")
    return work


def test_snakemake_builds_the_miniature_figures(mini):
    out = mini / "results" / "figures" / "paper_mini"
    for name in ("fig7_pf_ode_1d", "fig8_beta"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (mini / "results" / "benchmarks" / "paper_figures" / "paper_mini" / f"{name}.tsv").is_file()
    fig7 = pd.read_csv(out / "fig7_pf_ode_1d.csv")
    assert set(fig7.panel) == {"a", "b"} and set(fig7.kind) == {"density", "trajectory"}
    assert fig7[fig7.kind == "trajectory"].groupby("panel")["index"].nunique().tolist() == [25, 25]
    fig8 = pd.read_csv(out / "fig8_beta.csv")
    assert sorted(set(zip(fig8.a, fig8.b))) == sorted({ab for _, params in cf.FIG8_PANELS for ab in params})
    log = (mini / "results" / "logs" / "paper_figures" / "paper_mini" / "fig7_pf_ode_1d.log").read_text()
    assert "(a) TrigFlow: share of endpoints below 0 = 0.4000" in log, log
    assert "(b) Linear: share of endpoints below 0 = 0.4000" in log, log


def test_snakemake_scales_and_rerun(mini):
    # same inputs: nothing to redo; the paper scale is the same rule at the other scale; other scales have no rule
    again = snakemake(
        mini, "-n", "results/figures/paper_mini/fig7_pf_ode_1d.png", "results/figures/paper_mini/fig8_beta.png"
    )
    assert "Nothing to be done" in again.stdout + again.stderr
    plan = snakemake(mini, "-n", "results/figures/paper/fig7_pf_ode_1d.png")
    assert "paper_fig7" in plan.stdout + plan.stderr
    bad = snakemake(mini, "-n", "results/figures/huge/fig7_pf_ode_1d.png", check=False)
    assert bad.returncode != 0 and "MissingRuleException" in bad.stdout + bad.stderr
