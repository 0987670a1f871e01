"""The Random transport of the paper's Table 6 (ablation, Fig. 2b): coefficients, derivatives, determinant,
config schema, and UCGM-S with the ideal network carrying noise to the data.

Table 6 prints (alpha, gamma, alpha_hat, gamma_hat) = (sin(t pi/2), 1 - t, 1, -1 - exp(-5t)), pi/2 being 1.57
in the code (method doc, Sec. 1.1). The last two are target coefficients, not derivatives of the first two.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.special import ndtri

from ucgm_core.figures_paper import closed_form as cf
from ucgm_core.sampling.ucgm import ucgm_sample
from ucgm_core.transports import TRANSPORTS, get_transport, orient

ROOT = Path(__file__).resolve().parents[2]
T = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)


def test_coefficients_are_table_6():
    tr = get_transport("Random")
    s = torch.sin(1.57 * T)
    torch.testing.assert_close(tr.alpha_in(T), s, rtol=0, atol=0)
    torch.testing.assert_close(tr.gamma_in(T), 1 - T, rtol=0, atol=0)
    torch.testing.assert_close(tr.alpha_to(T), torch.ones_like(T), rtol=0, atol=0)
    torch.testing.assert_close(tr.gamma_to(T), -1 - torch.exp(-5 * T), rtol=0, atol=0)
    # the determinant of method doc Sec. 1.1: -S (1 + e^(-5t)) - (1 - t), never 0 on [0, 1] (invertible)
    det = tr.determinant(T)
    torch.testing.assert_close(det, -s * (1 + torch.exp(-5 * T)) - (1 - T), rtol=1e-15, atol=1e-15)
    assert float(det.abs().min()) >= 0.99


def test_derivatives_and_the_target_is_not_the_velocity():
    """d/dt by autograd: alpha' = 1.57 cos(1.57 t), gamma' = -1, gamma_hat' = 5 e^(-5t). The Quirk of the
    table: (alpha_hat, gamma_hat) differ from (alpha', gamma'), so F* is not dx_t/dt (unlike Linear)."""
    d = get_transport("Random").derivatives(T)
    torch.testing.assert_close(d["alpha_in"], 1.57 * torch.cos(1.57 * T), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(d["gamma_in"], -torch.ones_like(T), rtol=0, atol=0)
    torch.testing.assert_close(d["alpha_to"], torch.zeros_like(T), rtol=0, atol=0)
    torch.testing.assert_close(d["gamma_to"], 5 * torch.exp(-5 * T), rtol=1e-12, atol=1e-15)
    tr = get_transport("Random")
    mid = torch.tensor([0.5], dtype=torch.float64)
    assert abs(float(tr.gamma_to(mid) - d["gamma_in"][10])) == pytest.approx(math.exp(-2.5), rel=1e-12)
    lin = get_transport("Linear")
    torch.testing.assert_close(lin.derivatives(T)["alpha_in"], lin.alpha_to(T))  # Linear: target = velocity


def test_orientation_and_inversion():
    tr = orient("Random")
    assert tr.noise_at_one and tr.name == "Random"
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)[:, None]
    x_hat, z_hat = tr.invert(tr.target(x, z, t), tr.noisy(x, z, t), t)
    torch.testing.assert_close(x_hat, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z_hat, z, rtol=1e-12, atol=1e-12)


def test_schema_lists_every_registered_transport():
    """Every transport of the registry, Random included, can be configured, and nothing else can."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enum = schema["definitions"]["objective"]["properties"]["transport"]["enum"]
    assert sorted(enum) == sorted(TRANSPORTS)
    readme = (ROOT / "config" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `transport` |"))
    assert all(f"`{name}`" in row for name in TRANSPORTS), row


def test_schema_accepts_random_and_names_a_wrong_transport():
    from ucgm_core.workflow_config import ConfigError, validate_config

    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["models"]["multistep"]["objective"]["transport"] = "Random"
    validate_config(cfg, "smoke.yaml")
    cfg["models"]["multistep"]["objective"]["transport"] = "Randon"
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, "smoke.yaml")
    (msg,) = err.value.problems
    assert msg.startswith("models.multistep.objective.transport:") and "'Randon'" in msg and "'Random'" in msg


def _ideal_network(name: str):
    """F(x_t, t) = alpha_hat E[z | x_t] + gamma_hat E[x | x_t] for Fig. 7's mixture: what a perfectly
    trained network outputs (closed-form posterior means, ucgm_core.figures_paper.closed_form)."""
    tr = orient(name)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xs, ts = x.double().reshape(-1).numpy(), t.double().reshape(-1).numpy()
        (tv,) = np.unique(ts)
        coef = cf.transport_coefficients(name, np.asarray([tv]))
        x_hat, z_hat = cf.posterior_means(cf.FIG7_MIXTURE, xs, float(coef["alpha"][0]), float(coef["gamma"][0]))
        tt = torch.tensor([tv], dtype=torch.float64)
        out = float(tr.alpha_to(tt)) * z_hat + float(tr.gamma_to(tt)) * x_hat
        return torch.from_numpy(out).reshape(x.shape).to(x.dtype)

    return net


def test_ucgm_sampler_with_the_ideal_network_reaches_the_data():
    """UCGM-S on the Random transport with the ideal network: the deterministic sampler's output moves to the
    mixture's mean 0.4, variance 4.09 and lower-mode weight 0.4 as the steps grow (first order: the errors at
    200 steps are at most half those at 50), within 0.01 / 0.06 / 0.004 at 200 steps (noise at 4000 normal
    quantiles, so there is no sampling error beyond the 1/4000 quantisation)."""
    mix = cf.FIG7_MIXTURE
    noise = torch.from_numpy(ndtri((np.arange(4000) + 0.5) / 4000)).reshape(-1, 1)
    errors = {}
    for steps in (50, 200):
        out = ucgm_sample(_ideal_network("Random"), noise, "Random", steps=steps).sample.double().reshape(-1).numpy()
        assert np.isfinite(out).all()
        errors[steps] = np.asarray(
            [abs(out.mean() - mix.mean()), abs(out.var() - mix.variance()), abs(np.mean(out < 0) - mix.weights[0])]
        )
    assert np.all(errors[200] <= 0.5 * errors[50] + 1e-3), errors
    assert np.all(errors[200] <= [0.01, 0.06, 0.004]), errors[200]
