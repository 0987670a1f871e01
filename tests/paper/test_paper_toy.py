"""The trained-toy miniatures of the paper's Fig. 2a, 2b, 2c, 3 and 4 (ucgm_core/figures_paper/toy_*.py,
workflow/rules/paper_toy.smk): the 2-D generators, the sliced-W2 metric, training and sampling with the real
UCGM-T / UCGM-S, and every figure rule run through Snakemake on a small overlay (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ucgm_core.figures_paper.plots import COLUMNS, PAPER_FIG2A_LOG_FID, read_figure_csv
from ucgm_core.figures_paper.toy_data import (
    DATASETS,
    GMIX_CENTRES,
    NUM_CLASSES,
    sample_dataset,
    sliced_w2,
)
from ucgm_core.figures_paper.toy_runs import (
    FIGURE_FILES,
    EvalSettings,
    ModelSpec,
    TrainSettings,
    distance,
    figure_models,
    parse_model_key,
    sample,
    split_settings,
    train_model,
)
from ucgm_core.figures_paper.toy_model import ToyMLP
from ucgm_core.figures_paper.toy_stage import train_toy

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)


# --- data ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_generator_shapes_labels_and_scale(name):
    pts, labels = sample_dataset(name, 8000, seed=3)
    assert pts.shape == (8000, 2) and pts.dtype == torch.float32
    assert labels.shape == (8000,) and labels.dtype == torch.int64
    k = NUM_CLASSES[name]
    assert torch.equal(labels, torch.arange(8000) % k)  # balanced classes by construction
    # standardised by fixed constants: mean near 0, per-axis std of order 1 (a 8000-point draw: the
    # sampling error of a mean is std / sqrt(8000) ~ 0.011, so 0.1 is a loose but non-trivial bound)
    assert pts.mean(0).abs().max() < 0.1, pts.mean(0)
    std = pts.std(0)
    assert ((std > 0.5) & (std < 1.1)).all(), std
    # reproducible from the seed, different for another seed
    again, _ = sample_dataset(name, 8000, seed=3)
    assert torch.equal(pts, again)
    other, _ = sample_dataset(name, 8000, seed=4)
    assert not torch.equal(pts, other)


def test_gaussian_mixture_points_sit_in_their_class_cells():
    pts, labels = sample_dataset("gmix", 4000, seed=0)
    centres = torch.tensor(GMIX_CENTRES)
    col = (pts[:, 0, None] - centres).abs().argmin(1)
    row = (pts[:, 1, None] - centres).abs().argmin(1)
    # the cells are 0.8 apart and the std 0.1: a point leaves its cell with probability ~ 2 * P(|N| > 4 sd)
    assert ((row + col) % 4 == labels).float().mean() > 0.999
    assert sorted(torch.unique(row * 4 + col).tolist()) == list(range(16))  # all 16 modes are used


def test_two_moons_lie_on_their_half_circles():
    pts, labels = sample_dataset("moons", 4000, seed=0)
    raw = pts / 1.15 + torch.tensor([0.5, 0.25])  # undo the fixed standardisation
    outer = raw[labels == 0].norm(dim=1)
    inner = (raw[labels == 1] - torch.tensor([1.0, 0.5])).norm(dim=1)
    # radius 1 plus isotropic noise 0.05: the mean radius is within 0.01 of 1, its spread about 0.05
    for r in (outer, inner):
        assert abs(float(r.mean()) - 1.0) < 0.01 and 0.03 < float(r.std()) < 0.07
    assert (raw[labels == 0, 1] > -0.2).all() and (raw[labels == 1, 1] < 0.7).all()  # upper / lower arcs


def test_generator_refuses_bad_input():
    with pytest.raises(ValueError, match="dataset 'spiral' is unknown"):
        sample_dataset("spiral", 10, 0)
    with pytest.raises(ValueError, match="n=0 is invalid"):
        sample_dataset("moons", 0, 0)


# --- metric ----------------------------------------------------------------------------------------------


def test_sliced_w2_zero_for_identical_sets_and_exact_for_a_shift():
    a, _ = sample_dataset("gmix", 2000, seed=1)
    assert sliced_w2(a, a) == 0.0
    assert sliced_w2(a, a[torch.randperm(2000)]) == 0.0  # a set, not a sequence
    # a shift d moves every projection by <d, u>: SW2^2 = mean_u <d, u>^2 = |d|^2 / 2 exactly for evenly
    # spaced directions (float64 arithmetic; 1e-9 covers the rounding of 2000-point sums)
    previous = 0.0
    for size in (0.05, 0.2, 0.8):
        d = torch.tensor([0.6, 0.8]) * size
        value = sliced_w2(a, a + d)
        assert math.isclose(value, size / math.sqrt(2), rel_tol=1e-6), (size, value)
        assert value > previous
        previous = value


def test_sliced_w2_separates_distributions_beyond_its_sampling_floor():
    a, _ = sample_dataset("moons", 3000, seed=1)
    b, _ = sample_dataset("moons", 3000, seed=2)
    c, _ = sample_dataset("swissroll", 3000, seed=2)
    floor = sliced_w2(a, b)
    assert 0 < floor < 0.06  # two draws of one distribution: O(n^-1/2) apart
    assert sliced_w2(a, c) > 5 * floor
    assert math.isclose(sliced_w2(a, c), sliced_w2(c, a), rel_tol=1e-12)


def test_sliced_w2_refuses_bad_input():
    a = torch.zeros(10, 2)
    with pytest.raises(ValueError, match=r"same shape \[n, 2\]"):
        sliced_w2(a, torch.zeros(11, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        sliced_w2(a, torch.full((10, 2), float("nan")))


# --- models, training, sampling --------------------------------------------------------------------------


def test_model_keys_round_trip_and_refusals():
    spec = parse_model_key("gmix-Linear-l0.5-z0")
    assert spec == ModelSpec("gmix", "Linear", 0.5, 0.0) and spec.key == "gmix-Linear-l0.5-z0"
    assert parse_model_key("gmix-EDM-l0-z0.45").objective().enhanced_style == "ft-vs-fe"
    for key in figure_models("fig2a") + figure_models("fig2b") + figure_models("fig3"):
        assert parse_model_key(key).key == key
    assert len(set(figure_models("fig2b"))) == 10 and "gmix-Random-l0-z0.45" in figure_models("fig2b")
    # Fig. 3's lambda = 1 models are tuned from the lambda = 0 model of the same data; Fig. 2a's are not
    tuned = parse_model_key("moons-Linear-l1-z1-tuned")
    assert tuned == ModelSpec("moons", "Linear", 1.0, 1.0, tuned=True) and tuned.key == "moons-Linear-l1-z1-tuned"
    assert (
        tuned.parent == ModelSpec("moons", "Linear", 0.0, 0.0) and parse_model_key("moons-Linear-l1-z0").parent is None
    )
    assert sorted(figure_models("fig3")) == sorted(
        f"{d}-Linear-{m}" for d in ("moons", "scurve", "swissroll") for m in ("l0-z0", "l1-z1-tuned")
    )
    assert not [k for k in figure_models("fig2a") + figure_models("fig4") if k.endswith("-tuned")]
    few = tuned.objective()
    assert (few.consistency_ratio, few.enhanced_ratio, few.enhanced_style) == (1.0, 1.0, "fc-vs-xz")
    assert few.teacher_decay == 1.0 and tuple(few.time_dist) == (0.8, 1.0, 1.0)
    for bad, message in (
        ("gmix_Linear", "malformed"),
        ("cube-Linear-l0-z0", "dataset 'cube' is unknown"),
        ("gmix-VP-l0-z0", "transport 'VP' is unknown"),
        ("gmix-Linear-l2-z0", "out of range"),
        ("gmix-Linear-l0.50-z0", "not canonical"),
        ("gmix-Linear-l0-z0-tuned", "a tuned model needs lambda > 0"),
        ("gmix-Linear-l1-z0-tune", "malformed"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_model_key(bad)
    with pytest.raises(ValueError, match="unknown keys"):
        split_settings({"train_steps": 5, "epochs": 3})
    with pytest.raises(ValueError, match="toy figure 'fig9' is unknown"):
        figure_models("fig9")


def test_training_is_deterministic_and_learns():
    spec = ModelSpec("moons", "Linear", 0.0, 0.0)
    short = TrainSettings(train_steps=20, batch_size=64, width=16, depth=1)
    first = train_model(spec, short, log=lambda _: None)
    second = train_model(spec, short, log=lambda _: None)
    for name, value in first["state_dict"].items():  # our own determinism: bit-equal
        assert torch.equal(value, second["state_dict"][name]), name
    settings = TrainSettings(train_steps=400, batch_size=128, width=64, depth=2, lr=3e-3, ema_decay=0.9)
    ckpt = train_model(spec, settings, log=lambda _: None)
    assert ckpt["losses"][-1][1] < ckpt["losses"][0][1]
    trained = ToyMLP(NUM_CLASSES["moons"], 64, 2)
    trained.load_state_dict(ckpt["state_dict"])
    torch.manual_seed(0)
    untrained = ToyMLP(NUM_CLASSES["moons"], 64, 2)
    ev = EvalSettings(eval_samples=1000, eval_seeds=1)
    # the untrained network returns about its noise (sliced W2 about 0.40 from the moons); 400 steps bring
    # the 16-step samples to about 0.16 (the data floor at 1000 points is about 0.05)
    assert distance(trained.eval(), spec, ev, 16) < 0.6 * distance(untrained.eval(), spec, ev, 16)


def test_paper_toy_schema_keys_and_defaults_are_the_settings_fields():
    """The config's paper_toy keys (schema, documented in config/README.md) are exactly the fields of
    TrainSettings and EvalSettings, with the same defaults: a key added to one must be added to the other."""
    from ucgm_core.config import SCHEMA_PATH

    props = yaml.safe_load(Path(SCHEMA_PATH).read_text())["properties"]["paper_toy"]["properties"]
    fields = {**TrainSettings.__dataclass_fields__, **EvalSettings.__dataclass_fields__}
    assert sorted(props) == sorted(fields)
    for name, field in fields.items():
        assert props[name]["default"] == field.default, name
    readme = (ROOT / "config" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `paper_toy` |"))
    assert not [name for name in fields if f"`{name}`" not in row]


def test_tuned_model_starts_from_its_parent_and_refuses_a_wrong_one():
    parent_spec = ModelSpec("moons", "Linear", 0.0, 0.0)
    # EMA decays 0: the saved weights are the online weights, so 20 Adam steps at lr 1e-2 move the parent's
    # far from its initialisation (Adam moves a weight by about lr per step)
    small = TrainSettings(
        train_steps=20,
        batch_size=64,
        width=16,
        depth=1,
        lr=1e-2,
        ema_decay=0.0,
        tune_steps=3,
        tune_lr=1e-12,
        tune_ema_decay=0.0,
    )
    parent = train_model(parent_spec, small, log=lambda _: None)
    spec = parse_model_key("moons-Linear-l1-z1-tuned")
    tuned = train_model(spec, small, log=lambda _: None, parent=parent)
    assert tuned["parent"] == "moons-Linear-l0-z0" and tuned["steps"] == 3 and len(tuned["losses"]) == 3
    assert all(math.isfinite(v) for _, v in tuned["losses"])
    # three RAdam steps at lr 1e-12 move no weight by more than ~1e-11 (RAdam's first steps are momentum
    # SGD with bias-corrected gradients of order 1), so the tuned weights equal the parent's to 1e-6, while the
    # parent is far from the seeded initialisation a model trained from scratch starts from
    for name, value in parent["state_dict"].items():
        assert torch.allclose(tuned["state_dict"][name], value, atol=1e-6), name
    torch.manual_seed(small.seed)
    init = ToyMLP(NUM_CLASSES["moons"], 16, 1).state_dict()
    assert max(float((init[k] - v).abs().max()) for k, v in parent["state_dict"].items()) > 0.05
    scratch = train_model(ModelSpec("moons", "Linear", 1.0, 1.0), small, log=lambda _: None)
    with pytest.raises(ValueError, match="needs its parent checkpoint 'moons-Linear-l0-z0'; got none"):
        train_model(spec, small, log=lambda _: None)
    with pytest.raises(ValueError, match="parent checkpoint holds 'moons-Linear-l1-z1'; expected 'moons-Linear-l0-z0'"):
        train_model(spec, small, log=lambda _: None, parent=scratch)
    with pytest.raises(ValueError, match=r"width/depth \{'width': 16, 'depth': 1\}; expected the settings' width=32"):
        train_model(spec, TrainSettings(width=32, depth=1, tune_steps=1), log=lambda _: None, parent=parent)


def test_train_toy_requires_a_parent_file_exactly_for_tuned_models(tmp_path):
    settings = {"train_steps": 2, "batch_size": 16, "width": 8, "depth": 1, "tune_steps": 2}
    parent = tmp_path / "moons-Linear-l0-z0.pt"
    train_toy("moons-Linear-l0-z0", str(parent), settings, lambda _: None)
    with pytest.raises(ValueError, match=r"moons-Linear-l1-z1-tuned: parent file None; expected the cached"):
        train_toy("moons-Linear-l1-z1-tuned", str(tmp_path / "a.pt"), settings, lambda _: None)
    with pytest.raises(ValueError, match=r"expected none \(trained from scratch\)"):
        train_toy("moons-Linear-l1-z1", str(tmp_path / "b.pt"), settings, lambda _: None, str(parent))
    lines = []
    train_toy("moons-Linear-l1-z1-tuned", str(tmp_path / "c.pt"), settings, lines.append, str(parent))
    assert f"trained 2 steps from {parent}" in lines[-1]
    assert torch.load(tmp_path / "c.pt", weights_only=True)["parent"] == "moons-Linear-l0-z0"


def test_consistency_model_trains_with_the_real_objective():
    spec = ModelSpec("moons", "Linear", 1.0, 0.0)
    out = train_model(spec, TrainSettings(train_steps=3, batch_size=32, width=16, depth=1), log=lambda _: None)
    assert len(out["losses"]) == 3 and all(math.isfinite(v) for _, v in out["losses"])
    from ucgm_core.training.objective import UCGMObjective

    objective = UCGMObjective(spec.objective())
    x, y = sample_dataset("moons", 16, 0)
    result = objective(ToyMLP(2, 16, 1), x[:, :, None, None], y)
    assert result.nfe == 3  # lambda = 1: the online forward plus the two central-difference forwards


def test_sampler_recording_leaves_the_samples_unchanged():
    torch.manual_seed(0)
    spec = ModelSpec("gmix", "Random", 0.0, 0.0)
    model = ToyMLP(4, 16, 1).eval()
    plain, traj, _, grid = sample(model, spec, 50, seed=5, steps=6, stochasticity=0.5, trajectory=True)
    recorded, _, states, _ = sample(model, spec, 50, seed=5, steps=6, stochasticity=0.5, record=True)
    assert torch.equal(plain, recorded)
    noise = torch.randn(50, 2, 1, 1, generator=torch.Generator().manual_seed(5)).reshape(50, 2)
    assert len(states) == 6 and torch.equal(states[0][0], noise)
    assert [t for _, t in states] == [float(v) for v in grid[:6]]
    assert traj.shape == (7, 50, 2) and torch.equal(traj[0], noise) and torch.equal(traj[-1], plain)


def test_plot_input_columns_are_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"lambda": [0.0], "steps": [1], "value": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad.csv: columns \['lambda', 'steps', 'value'\]; expected"):
        read_figure_csv("fig2a", bad)
    assert len(PAPER_FIG2A_LOG_FID) == 25 and PAPER_FIG2A_LOG_FID[(0.5, 16)] == 0.19
    assert PAPER_FIG2A_LOG_FID[(1.0, 2)] == 2.07


# --- the rules, end to end on a small overlay ------------------------------------------------------------

OVERLAY = {
    "train_steps": 40,
    "batch_size": 64,
    "width": 16,
    "depth": 2,
    "ema_decay": 0.9,
    "tune_steps": 10,
    "eval_samples": 64,
    "eval_seeds": 1,
    "fig3_trajectories": 3,
    "fig4_points": 5,
    "fig4_steps": 7,
}


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run


def test_every_toy_figure_through_snakemake(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["paper_toy"] = OVERLAY
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    # the miniature umbrella target: the five toy figures of this overlay plus the closed-form Fig. 7 and 8
    snakemake(work, config, "paper_mini")
    out = work / "results" / "figures" / "paper_mini"
    manifest = (work / "results" / "paper_mini_manifest.tsv").read_text()
    for name in (
        "fig2a_lambda_steps",
        "fig2b_zeta_transport",
        "fig2c_kappa_steps",
        "fig3_toy2d",
        "fig4_xhat_per_lambda",
        "fig7_pf_ode_1d",
        "fig8_beta",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (out / f"{name}.csv").stat().st_size > 0, name
        assert f"{name}.png" in manifest, name
    frames = {}
    for fig, name in FIGURE_FILES.items():
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        frames[fig] = read_figure_csv(fig, out / f"{name}.csv")
        assert list(frames[fig].columns) == COLUMNS[fig]
        assert (work / "results" / "logs" / "paper_toy" / f"paper_mini_{fig}.log").stat().st_size > 0
        assert (work / "results" / "benchmarks" / "paper_toy" / f"paper_mini_{fig}.tsv").exists()
    a = frames["fig2a"]
    assert sorted(set(zip(a["lambda"], a["steps"]))) == sorted(PAPER_FIG2A_LOG_FID)
    assert [PAPER_FIG2A_LOG_FID[(r["lambda"], r["steps"])] for _, r in a.iterrows()] == a["paper_log_fid"].tolist()
    b = frames["fig2b"]
    assert sorted(set(zip(b["transport"], b["zeta"]))) == sorted(
        (t, z) for t in ("EDM", "TrigLinear", "Linear", "Random", "TrigFlow") for z in (0.45, 0.0)
    )
    c = frames["fig2c"]
    assert len(c) == 5 * 6
    # UCGM-S extrapolates from its third step on: kappa cannot change 1- and 2-step samples (same noise)
    for steps in (1, 2):
        assert c[c["steps"] == steps]["value"].nunique() == 1
    for fig in ("fig2a", "fig2b", "fig2c"):
        df = frames[fig]
        assert (df["metric"] == "sliced_w2").all() and np.isfinite(df["value"]).all() and (df["value"] > 0).all()
    f3 = frames["fig3"]
    # per dataset: 3 trajectories of 32 + 1 points (lambda 0) and of 2 + 1 points (lambda 1), ending at t = 0
    assert len(f3) == 3 * 3 * (33 + 3)
    assert f3.groupby(["dataset", "lambda", "trajectory"])["step"].max().to_dict() == {
        (d, lam, j): {0.0: 32, 1.0: 2}[lam]
        for d in ("moons", "scurve", "swissroll")
        for lam in (0.0, 1.0)
        for j in range(3)
    }
    assert (f3[f3["step"] == 0]["t"] > 0.99).all() and (
        f3.groupby(["dataset", "lambda", "trajectory"])["t"].last() == 0
    ).all()
    start = f3[f3["step"] == 0].sort_values(["dataset", "trajectory"])
    # same noise for both models
    assert np.array_equal(
        start[start["lambda"] == 0][["x", "y"]].to_numpy(), start[start["lambda"] == 1][["x", "y"]].to_numpy()
    )
    f4 = frames["fig4"]
    assert len(f4) == 3 * 7 * 5 and sorted(f4["lambda"].unique()) == [0.0, 0.5, 1.0]
    assert np.isfinite(f4[["t", "x", "y"]].to_numpy()).all()
    toy = work / "results" / "paper_mini" / "toy"
    assert len(list(toy.glob("*.pt"))) == 20
    # Fig. 3's lambda = 1 models: tuned from their lambda = 0 model, which their rule takes as input (built first)
    for ds in ("moons", "scurve", "swissroll"):
        tuned, parent = toy / f"{ds}-Linear-l1-z1-tuned.pt", toy / f"{ds}-Linear-l0-z0.pt"
        assert torch.load(tuned, weights_only=True)["parent"] == parent.stem
        assert tuned.stat().st_mtime >= parent.stat().st_mtime
        log = (work / "results" / "logs" / "paper_toy" / f"model_{tuned.stem}.log").read_text()
        assert f"trained 10 steps from results/paper_mini/toy/{parent.name}" in log
    fig3_log = (work / "results" / "logs" / "paper_toy" / "paper_mini_fig3.log").read_text()
    for ds in ("moons", "scurve", "swissroll"):
        for steps, rho in ((1, 0), (2, 0), (2, 1)):
            assert (
                f"fig3 {ds}: mean end-point distance lambda=0 (32 steps) vs {ds}-Linear-l1-z1-tuned ({steps} step(s), rho={rho})"
                in fig3_log
            )
    # a second run has nothing to do; an evaluation budget reruns the figures, not the models
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(work, config, "-n", "paper_mini"))
    cfg["paper_toy"] = dict(OVERLAY, eval_seeds=2)
    config.write_text(yaml.safe_dump(cfg))
    text = (lambda r: r.stdout + r.stderr)(snakemake(work, config, "-n", "paper_toy_figures"))
    assert "paper_toy_fig2a" in text and "paper_toy_model" not in text
