"""Transports: parity with the official coefficient functions and analytic properties."""

from __future__ import annotations

import math

import pytest
import torch

from ucgm_core.transports import TRANSPORTS, get_transport, orient

COEFFS = ("alpha_in", "gamma_in", "alpha_to", "gamma_to")


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return torch.load(fixtures_dir / "ucgm_reference" / "transports.pt", weights_only=True)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_raw_coefficients_match_official(ref, name):
    rec, tr = ref[name], get_transport(name)
    for key in COEFFS:
        torch.testing.assert_close(getattr(tr, key)(ref["t"]), rec[key], atol=1e-12, rtol=1e-12, msg=key)
        torch.testing.assert_close(getattr(tr, key)(ref["t_f32"]), rec[f"{key}_f32"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_derivatives_match_autograd_reference(ref, name):
    derivs = get_transport(name).derivatives(ref["t"])
    for key in COEFFS:
        torch.testing.assert_close(derivs[key], ref[name][f"d_{key}"], atol=1e-9, rtol=1e-9, msg=key)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_orientation_matches_trainer(ref, name):
    rec, tr = ref[name], orient(name)
    assert int(tr.noise_at_one) == rec["integ_st"]
    for key in COEFFS:
        torch.testing.assert_close(getattr(tr, key)(ref["t"]), rec[f"eff_{key}"], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(tr.determinant(ref["t"]), rec["eff_dent"], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_boundary_values_internal_time(name):
    """Internal time: t = 1 is (almost) pure noise for every transport, t = 0 is (almost) data."""
    tr = orient(name)
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    # data-to-noise ratio gamma/alpha at t = 1: 1.57 stands in for pi/2, so trig paths keep
    # cos(1.57) = 7.96e-4 of the data; EDM stops at sigma_max = 78.3, i.e. 1/78.3 = 0.0128
    ratio = abs(float(tr.gamma_in(one) / tr.alpha_in(one)))
    assert ratio < (0.013 if name == "EDM" else 1e-3)
    assert abs(float(tr.alpha_in(zero))) < 5e-3
    assert float(tr.gamma_in(zero)) > 0.99 or name == "EDM"  # EDM's c_in scales data: 1/sqrt(s^2+1/4)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_invert_recovers_data_and_noise(name):
    tr = orient(name)
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.95], dtype=torch.float64)[:, None]
    x_hat, z_hat = tr.invert(tr.target(x, z, t), tr.noisy(x, z, t), t)
    torch.testing.assert_close(x_hat, x)
    torch.testing.assert_close(z_hat, z)


def test_edm_constants():
    tr = get_transport("EDM")
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(tr.determinant(t), torch.full_like(t, 2.0))
    assert float(tr.sigma(torch.tensor(0.0))) == pytest.approx(0.00173, rel=1e-2)
    assert float(tr.sigma(torch.tensor(1.0))) == pytest.approx(78.3, rel=1e-2)
    assert math.log(float(tr.sigma(torch.tensor(0.5)))) == pytest.approx(10.72 * 0.5 - 6.36)


def test_flipped_network_call():
    tr = orient("ReLinear")
    seen = {}

    def net(x, t, y=None):
        seen["t"] = t
        return torch.ones_like(x)

    out = tr.call(net, torch.zeros(2, 3), torch.tensor(0.25), y=None)
    torch.testing.assert_close(seen["t"], torch.tensor([0.75, 0.75]))
    torch.testing.assert_close(out, -torch.ones(2, 3))


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="unknown transport 'VP'"):
        orient("VP")
