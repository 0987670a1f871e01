"""Post-hoc EMA (EDM2 Sec. 3, App. C): the profile algebra against numeric integration, the tracker against
its closed-form profile, and the reconstruction of a third EMA length against one tracked directly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from ucgm_core.training.posthoc_ema import (
    SIGMA_REL_MAX,
    PosthocEMA,
    PowerEMA,
    Snapshot,
    discrete_profile,
    gamma_to_sigma_rel,
    list_snapshots,
    power_ema_beta,
    profile,
    profile_gram,
    profile_inner_product,
    reconstruct,
    sigma_rel_to_gamma,
    solve_weights,
)

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


# -- sigma_rel <-> gamma ---------------------------------------------------------------------------------------
def test_sigma_rel_gamma_round_trip_and_paper_values():
    for s in np.linspace(0.01, SIGMA_REL_MAX, 57):
        g = sigma_rel_to_gamma(float(s))
        assert g >= 0.0
        assert gamma_to_sigma_rel(g) == pytest.approx(float(s), rel=1e-12)
    for g in (0.0, 0.5, 3.0, 6.94, 16.97, 100.0, 1000.0):
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(g)) == pytest.approx(g, rel=1e-9, abs=1e-9)
    # EDM2 Sec. 3.2 tracks sigma_rel 0.05 and 0.10, which it states as gamma 16.97 and 6.94 (2 decimals)
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.005)


def test_sigma_rel_is_the_profiles_relative_std():
    """Eq. 3 against numeric integration: the continuous profile on [0, t] is a density whose standard
    deviation is sigma_rel * t (quad's error on these smooth integrands is ~1e-14; tolerance 1e-9)."""
    for gamma in (0.0, 2.5, 6.94, 16.97):
        for t in (1.0, 37.0, 1000.0):

            def f(tau, t=t, gamma=gamma):
                return float(profile(np.array(tau), t, gamma))

            mass = integrate.quad(f, 0, t)[0]
            mean = integrate.quad(lambda tau: tau * f(tau), 0, t)[0]
            var = integrate.quad(lambda tau: (tau - mean) ** 2 * f(tau), 0, t)[0]
            assert mass == pytest.approx(1.0, rel=1e-9)
            assert math.sqrt(var) / t == pytest.approx(gamma_to_sigma_rel(gamma), rel=1e-9)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.3, float("nan")])
def test_sigma_rel_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"sigma_rel must lie in \(0, 1/sqrt\(12\)"):
        sigma_rel_to_gamma(bad)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="gamma must be > -1"):
        gamma_to_sigma_rel(-1.0)
    with pytest.raises(ValueError, match="update index t must be >= 1"):
        power_ema_beta(0, 1.0)
    with pytest.raises(ValueError, match="exactly one of sigma_rel and gamma"):
        PowerEMA(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="lie outside"):
        solve_weights([(10, 1.0)], 5, 1.0)
    with pytest.raises(ValueError, match="profiles='bogus' is unknown"):
        solve_weights([(10, 1.0)], 10, 1.0, "bogus")
    with pytest.raises(ValueError, match="sigma_rels must be a non-empty list of distinct"):
        PosthocEMA(nn.Linear(2, 2), [0.05, 0.05], 10, "x")
    with pytest.raises(ValueError, match="snapshot_every must be >= 1"):
        PosthocEMA(nn.Linear(2, 2), [0.05], 0, "x")


# -- the tracker's profile -------------------------------------------------------------------------------------
class Vector(nn.Module):
    """A bare parameter vector (float64) and an integer buffer: a stand-in network for a weight trajectory."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def set_(self, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.w.copy_(value)
            self.count += 1


def test_power_ema_profile_is_the_closed_form():
    """Feeding theta_tau = e_tau (unit vectors) makes the tracked average the profile itself. Its weights
    equal (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1), the continuous profile's mass on (tau-1, tau] (by quad), and
    sum to 1; float64 throughout, t <= 80 updates: 1e-12 covers the updates' rounding (~t * eps64)."""
    T = 80
    for sigma_rel in (0.05, 0.10, 0.2):
        net = Vector(T)
        ema = PowerEMA(net, sigma_rel=sigma_rel)
        for tau in range(1, T + 1):
            net.set_(torch.eye(T, dtype=torch.float64)[tau - 1])
            ema.update(net)
            if tau in (1, 2, 7, 40, T):
                w = discrete_profile(tau, ema.gamma, T)
                np.testing.assert_allclose(ema.module.w.detach().numpy(), w, rtol=0, atol=1e-12)
                assert w.sum() == pytest.approx(1.0, abs=1e-12)
        assert int(ema.module.count) == T  # buffers are copied, not averaged
        for tau in (1, 5, T // 2, T):
            mass = integrate.quad(lambda s: float(profile(np.array(s), T, ema.gamma)), tau - 1, tau)[0]
            assert discrete_profile(T, ema.gamma)[tau - 1] == pytest.approx(mass, rel=1e-9, abs=1e-300)


def test_discrete_profile_does_not_overflow_on_long_runs():
    w = discrete_profile(2_000_000, sigma_rel_to_gamma(0.01))  # gamma ~ 98: tau^99 alone would overflow
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0, abs=1e-9)


# -- inner products ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ta, ga, tb, gb",
    [
        (10.0, 6.94, 10.0, 6.94),
        (10.0, 6.94, 25.0, 16.97),
        (300.0, 0.0, 120.0, 3.3),
        (1e5, 16.97, 7e4, 6.94),
    ],
)
def test_inner_products_match_numeric_integration(ta, ga, tb, gb):
    """Closed form vs scipy quad of p_a * p_b over [0, min(ta, tb)] (both smooth there; quad reaches ~1e-13
    relative, the bound 1e-9 leaves room for the large exponents)."""
    m = min(ta, tb)
    num = integrate.quad(lambda s: float(profile(np.array(s), ta, ga) * profile(np.array(s), tb, gb)), 0, m, limit=200)[
        0
    ]
    assert profile_inner_product(ta, ga, tb, gb) == pytest.approx(num, rel=1e-9)
    assert profile_inner_product(ta, ga, tb, gb) == pytest.approx(profile_inner_product(tb, gb, ta, ga), rel=1e-14)
    gram = profile_gram([(ta, ga), (tb, gb)])
    if (ta, ga) != (tb, gb):  # distinct profiles are linearly independent: a positive definite Gram matrix
        assert np.all(np.linalg.eigvalsh(gram) > 0)


def test_target_equal_to_a_snapshot_gets_that_snapshot():
    keys = [(s, g) for s in (100, 200, 300) for g in (sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10))]
    for profiles in ("continuous", "discrete"):
        x, residual = solve_weights(keys, 300, keys[-1][1], profiles)
        expected = np.zeros(len(keys))
        expected[-1] = 1.0
        # the Gram matrix's condition number here is ~1e3: the solution is exact to ~1e3 * eps64
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-10)
        assert residual < 1e-7


# -- the reconstruction ---------------------------------------------------------------------------------------------
def _random_walk(T: int, n: int, seed: int) -> torch.Tensor:
    """T steps of a drifting Gaussian random walk in n dimensions (float64): theta_1 .. theta_T."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(T, n, generator=g, dtype=torch.float64) + 0.05
    return steps.cumsum(0)


def _track(tmp_path: Path, thetas: torch.Tensor, tracked, direct, every: int):
    """Run the trajectory through a PosthocEMA(tracked, every) writing snapshots into tmp_path and
    PowerEMAs of the ``direct`` lengths; returns (snapshots read back from disk, {sigma_rel: direct average})."""
    net = Vector(thetas.shape[1])
    posthoc = PosthocEMA(net, tracked, every, tmp_path / "posthoc_ema")
    directs = {s: PowerEMA(net, sigma_rel=s) for s in direct}
    T = thetas.shape[0]
    for tau in range(1, T + 1):
        net.set_(thetas[tau - 1])
        posthoc.update(net)
        for d in directs.values():
            d.update(net)
        posthoc.maybe_snapshot(tau, last=tau == T)
    snaps = []
    for path, step, _ in list_snapshots(tmp_path):
        payload = torch.load(path, weights_only=True)
        snaps += [Snapshot(step, p["gamma"], p["ema"]) for p in payload["profiles"]]
    return snaps, {s: d.module.w.detach().clone() for s, d in directs.items()}


def test_reconstruction_equals_directly_tracked_ema(tmp_path):
    """THE check: two tracked lengths (0.05, 0.10) with a snapshot after every step reconstruct a third
    (0.075, and 0.15 outside their range) equal to a PowerEMA of that length tracked in the same run.

    With a snapshot every step the target's discrete profile lies in the snapshots' span, so the discrete
    least squares is exact and only rounding remains: the trackers' float64 updates (~T eps64 |theta| each)
    and the weighted sum (~sum|x| eps64 |theta|). T = 48, |x| <= 1.3, |theta| <= 19: ~1e-13 (measured 7e-15);
    the tolerance 1e-10 is 1000x that and 1e7x below the profile-mismatch error of sparse snapshots (~3e-3,
    see the next test), so a wrong beta, gamma or profile cannot pass."""
    thetas = _random_walk(48, 64, seed=1)
    snaps, direct = _track(tmp_path, thetas, [0.05, 0.10], [0.075, 0.15], every=1)
    assert len(snaps) == 2 * 48
    for target in (0.075, 0.15):
        rec = reconstruct(snaps, target, profiles="discrete")
        assert rec["w"].dtype == torch.float64 and int(rec["count"]) == 48
        torch.testing.assert_close(rec["w"], direct[target], rtol=0, atol=1e-10)
        # and it is not one of the tracked averages: these differ from it by far more than the tolerance
        assert (rec["w"] - reconstruct(snaps, 0.10, profiles="discrete")["w"]).abs().max() > 1e-2


def test_sparse_snapshots_error_is_the_residual_profile(tmp_path):
    """Snapshots every 30 of 600 steps: the target profile is no longer in their span. The reconstruction
    then differs from the direct average by exactly sum_tau (q_tau - w_tau) theta_tau, q = sum_i x_i w_i the
    fitted profile (an identity: float64 rounding ~1e-12 of |theta| ~ 60); that residual profile is small
    (relative L2 < 1%, EDM2's point) and so is the error: < 1% of the gap between the two tracked lengths
    (measured 0.06%: 3.5e-3 against 6.2)."""
    T, every = 600, 30
    thetas = _random_walk(T, 32, seed=2)
    snaps, direct = _track(tmp_path, thetas, [0.05, 0.10], [0.05, 0.075, 0.10], every)
    assert sorted({s.step for s in snaps}) == list(range(every, T + 1, every))
    target_gamma = sigma_rel_to_gamma(0.075)
    for profiles in ("discrete", "continuous"):
        rec = reconstruct(snaps, 0.075, profiles=profiles)["w"]
        x, residual = solve_weights([(s.step, s.gamma) for s in snaps], T, target_gamma, profiles)
        q = sum(xi * discrete_profile(s.step, s.gamma, T) for xi, s in zip(x, snaps))
        predicted = torch.from_numpy(q - discrete_profile(T, target_gamma)) @ thetas
        torch.testing.assert_close(rec - direct[0.075], predicted, rtol=0, atol=1e-9)
        assert residual < 1e-2
        gap = (direct[0.05] - direct[0.10]).abs().max()
        err = (rec - direct[0.075]).abs().max()
        assert err < 0.01 * gap, f"{profiles}: error {err:.3g} vs gap {gap:.3g}"


# -- in the training loop ---------------------------------------------------------------------------------------------
def _trainer(tmp_path: Path, steps: int, run: str, every: int, lr: float = 1e-3):
    """A small TiT trained by the real Trainer (as tests/training/test_training_loop.py) with post-hoc EMA trackers whose
    snapshots go to ``tmp_path/run/posthoc_ema`` (the run folder, beside the state file)."""
    from test_training_loop import TensorLoader

    from ucgm_core.models import build_model
    from ucgm_core.training import UCGMConfig, UCGMObjective
    from ucgm_core.training.loop import Trainer, TrainSettings

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(123)
    kwargs = dict(input_size=8, in_channels=1, num_classes=3, depth=1, hidden_size=32)  # 31k parameters: fast
    model = build_model("TiT-Tiny/2", **kwargs)
    meta = {
        "architecture": "TiT-Tiny/2",
        "model_kwargs": kwargs,
        "transport": "Linear",
        "num_classes": 3,
        "latent_shape": [1, 8, 8],
        "normalizer": {"mean": None, "std": None, "multiplier": 1.0},
        "autoencoder": "identity",
        "info": {"spec": {"note": "test"}},
    }
    posthoc = PosthocEMA(model, [0.05, 0.10], every, tmp_path / run / "posthoc_ema", meta=meta)
    cfg = UCGMConfig(enhanced_ratio=0.5, enhanced_style="ft-vs-fe", num_classes=3)
    settings = TrainSettings(steps=steps, batch_size=8, lr=lr, ema_decay=0.9, log_every=2, checkpoint_every=3)
    return Trainer(
        model,
        UCGMObjective(cfg),
        TensorLoader(x, y, 8, seed=5),
        settings,
        tmp_path / run / "state.pt",
        log=lambda s: None,
        posthoc_ema=posthoc,
    )


def _snapshot_files(folder: Path) -> dict:
    return {p.name: torch.load(p, weights_only=True) for p in sorted(folder.glob("step-*.pt"))}


def test_trainer_tracks_and_resumes_exactly(tmp_path):
    """Snapshots every 2 steps and at the last (7); a run stopped at step 3 and resumed writes the same
    trackers and the same snapshots, bit for bit, as one run straight through."""
    from ucgm_core.training.loop import Preempted

    straight = _trainer(tmp_path, 7, "a", every=2)
    straight.run()
    killed = _trainer(tmp_path, 7, "b", every=2)
    with pytest.raises(Preempted):  # as a job stopped by SIGTERM after step 3
        killed.run(should_stop=lambda: killed.state.step >= 3)
    resumed = _trainer(tmp_path, 7, "b", every=2)
    assert resumed.resumed and [tr.updates for tr in resumed.posthoc_ema.trackers] == [3, 3]
    resumed.run()
    for a, b in zip(straight.posthoc_ema.trackers, resumed.posthoc_ema.trackers):
        assert a.updates == b.updates == 7
        for (n, u), v in zip(a.module.state_dict().items(), b.module.state_dict().values()):
            assert torch.equal(u, v), n
    files_a, files_b = _snapshot_files(tmp_path / "a" / "posthoc_ema"), _snapshot_files(tmp_path / "b" / "posthoc_ema")
    assert list(files_a) == list(files_b) == [f"step-{s:07d}.pt" for s in (2, 4, 6, 7)]
    for name in files_a:
        for pa, pb in zip(files_a[name]["profiles"], files_b[name]["profiles"]):
            assert pa["gamma"] == pb["gamma"]
            assert all(torch.equal(pa["ema"][k], pb["ema"][k]) for k in pa["ema"]), name
    assert not list((tmp_path / "b" / "posthoc_ema").glob("*.tmp"))  # atomic writes leave no temporaries


def test_trainer_state_without_trackers_is_refused(tmp_path):
    from ucgm_core.training.loop import StateFileError

    t = _trainer(tmp_path, 2, "c", every=1)
    t.posthoc_ema = None
    t.run()  # a state written with the trackers off
    with pytest.raises(StateFileError, match=r"state\.pt: the training state holds no post-hoc EMA trackers"):
        _trainer(tmp_path, 4, "c", every=1)


def test_trained_model_reconstruction_and_checkpoint(tmp_path):
    """A real (float32) training run: snapshots of 0.05 and 0.10 after every step reconstruct 0.075 equal to a
    PowerEMA(0.075) updated in the same run. Tolerance from float32 rounding: each tracker's T updates round
    by <= ~2 eps32 |theta| each, and the reconstruction sums the snapshots with weights x (in float64), so
    |error| <= (sum|x| + 1) * 2 T eps32 max|theta| (~1e-5 here); the lengths themselves differ by ~1e-2.
    reconstruct_checkpoint writes an ordinary checkpoint holding the same weights."""
    from ucgm_core.checkpoint import build_network, load_checkpoint
    from ucgm_core.training.posthoc_ema import reconstruct_checkpoint

    T = 12
    trainer = _trainer(tmp_path, T, "run", every=1, lr=1e-2)
    direct = PowerEMA(trainer.model, sigma_rel=0.075)
    trainer.run(on_step=lambda tr: direct.update(tr.model))
    snaps = [
        Snapshot(step, p["gamma"], p["ema"])
        for path, step, _ in list_snapshots(tmp_path / "run")
        for p in [torch.load(path, weights_only=True)][0]["profiles"]
    ]
    x, _ = solve_weights([(s.step, s.gamma) for s in snaps], T, sigma_rel_to_gamma(0.075), "discrete")
    rec = reconstruct(snaps, 0.075, profiles="discrete")
    tracked_010 = trainer.posthoc_ema.trackers[1].module.state_dict()
    theta_max = max(float(v.abs().max()) for v in direct.module.state_dict().values() if v.is_floating_point())
    atol = (float(np.abs(x).sum()) + 1.0) * 2 * T * EPS32 * theta_max
    gap = 0.0
    for name, v in direct.module.state_dict().items():
        torch.testing.assert_close(rec[name], v, rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")
        if v.is_floating_point():
            gap = max(gap, float((v - tracked_010[name]).abs().max()))
    assert gap > 100 * atol  # the third length is not one of the tracked ones within the tolerance

    out = reconstruct_checkpoint(trainer.state_path.parent, 0.075, tmp_path / "ema-0.075.pt", profiles="discrete")
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == T and ckpt["info"]["posthoc_ema"]["sigma_rel"] == 0.075
    assert ckpt["info"]["spec"] == {"note": "test"}
    net = build_network(ckpt)
    for name, v in net.state_dict().items():
        assert torch.equal(v, rec[name]), name
    with pytest.raises(ValueError, match="no post-hoc EMA snapshot at or before step 0"):
        reconstruct_checkpoint(trainer.state_path.parent, 0.075, tmp_path / "x.pt", step=0)
    with pytest.raises(ValueError, match=r"no post-hoc EMA snapshots \(.*posthoc_ema missing\)"):
        reconstruct_checkpoint(tmp_path / "elsewhere", 0.075, tmp_path / "x.pt")


def test_train_script_keeps_snapshots_and_the_tool_writes_a_checkpoint(tmp_path):
    """workflow/scripts/train.py with train.posthoc_ema: snapshots in the run folder (every 2 of 5 steps and
    the last) carrying the checkpoint fields; the command line tool, given the final checkpoint, writes a
    checkpoint of a tracked length at the last step, which must be that snapshot (x = e_i, to float64
    rounding, then cast: float32 assert_close defaults), and of an untracked one the sampler's loader accepts."""
    import json
    import subprocess
    import sys

    from test_preemption import TRAIN, clean_env, make_latent_dir

    from ucgm_core.checkpoint import build_network, load_checkpoint

    latents = make_latent_dir(tmp_path)
    spec = {
        "architecture": "TiT-Tiny/2",
        "architecture_overrides": {"depth": 1, "hidden_size": 32},
        "data": {"dataset": "toy"},
        "objective": {"transport": "Linear", "enhanced_ratio": 0.0},
        "train": {
            "steps": 5,
            "batch_size": 8,
            "lr": 0.01,
            "ema_decay": 0.9,
            "log_every": 1,
            "checkpoint_every": 2,
            "posthoc_ema": {"sigma_rels": [0.05, 0.10], "snapshot_every": 2},
        },
    }
    run = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "--latents",
            str(latents),
            "--spec",
            json.dumps(spec),
            "--out-dir",
            str(tmp_path / "out"),
            "--state-dir",
            str(tmp_path / "state"),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "post-hoc EMA: sigma_rel [0.05, 0.1], snapshots every 2 steps" in run.stdout
    (run_dir,) = (tmp_path / "state").iterdir()
    listing = list_snapshots(run_dir)
    assert [s for _, s, _ in listing] == [2, 4, 5]
    last = torch.load(listing[-1][0], weights_only=True)
    assert last["meta"]["architecture"] == "TiT-Tiny/2" and last["meta"]["info"]["spec"]["train"]["steps"] == 5

    final = tmp_path / "out" / "checkpoint.pt"
    for sigma_rel in (0.10, 0.07):
        out = tmp_path / f"ema-{sigma_rel}.pt"
        tool = subprocess.run(
            [
                sys.executable,
                str(Path(TRAIN).with_name("posthoc_ema.py")),
                str(final),
                "--sigma-rel",
                str(sigma_rel),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        assert tool.returncode == 0, tool.stdout + tool.stderr
        ckpt = load_checkpoint(out)
        assert ckpt["step"] == 5 and ckpt["architecture"] == "TiT-Tiny/2"
        assert ckpt["normalizer"]["multiplier"] == load_checkpoint(final)["normalizer"]["multiplier"]
        net = build_network(ckpt)
        if sigma_rel == 0.10:
            for name, v in net.state_dict().items():
                torch.testing.assert_close(v, last["profiles"][1]["ema"][name], msg=lambda m: f"{name}: {m}")
        y = net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.zeros(2, dtype=torch.long))
        assert y.shape == (2, 1, 8, 8) and torch.isfinite(y).all()
