"""The paper's Fig. 4 at paper scale (ucgm_core/figures_paper/xhat.py, workflow/rules/paper_fig4.smk): x_hat
along one UCGM-S run per lambda from the same noise, on a tiny untrained network with the identity
autoencoder (CPU, seconds); and the paper-scale plan of the umbrella target paper_scale, which must now
build (Fig. 3 and Fig. 4 at scale ``paper`` have rules) and run Fig. 4 as one 1-GPU job after the three
lambda models' training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ucgm_core.autoencoders import get_autoencoder
from ucgm_core.config import ConfigError
from ucgm_core.data.loader import LatentNormalizer
from ucgm_core.figures_paper.xhat import CSV_COLUMNS, LambdaRun, shown_steps, write_xhat_figure, xhat_trajectories
from ucgm_core.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_paper_plan_figures import overlay, snakemake  # noqa: E402,F401 (the module fixture)
from test_paper_plan import load_with_overlay, planned  # noqa: E402

C, S, K = 4, 8, 3
LAMBDAS = (0.0, 0.5, 1.0)


def _runs() -> list:
    runs = []
    for i, lam in enumerate(LAMBDAS):
        torch.manual_seed(100 + i)  # three different untrained networks
        net = build_model("TiT-Tiny/2", input_size=S, in_channels=C, num_classes=K)
        with torch.no_grad():  # the output layer starts at zero (adaLN-zero): give every weight a value
            for p in net.parameters():
                p.normal_(0.0, 0.05)
        runs.append(
            LambdaRun(
                lam,
                net,
                "Linear",
                LatentNormalizer(None, None, 1.0),
                {"order": 1, "extrapolation": 0.0, "time_warp": [1.0, 1.0, 1.0], "end_gaps": [0.001, 0.001]},
            )
        )
    return runs


@pytest.fixture(scope="module")
def result():
    ae = get_autoencoder("identity", channels=C)
    return xhat_trajectories(
        _runs(), latent_shape=(C, S, S), num_classes=K, decode=ae.decode, num_images=2, seed=7, steps=12, columns=5
    )


def test_shown_steps_are_evenly_spaced_and_include_both_ends():
    assert shown_steps(60, 8) == [0, 8, 17, 25, 34, 42, 51, 59]
    assert shown_steps(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="total 0 and columns 8 must be >= 1"):
        shown_steps(0, 8)


def test_every_lambda_starts_from_the_same_noise_and_differs_after(result):
    assert result.steps == [0, 3, 6, 8, 11]  # 12 x_hat entries (order 1: one per step)
    first = result.first[0.0]
    assert first.shape == (2, C, S, S) and first.abs().sum() > 0
    for lam in LAMBDAS:
        assert torch.equal(result.first[lam], first)  # bit-identical: one tensor handed to every run
        assert result.images[lam].shape == (5, 2, C, S, S)
        assert result.images[lam].min() >= 0.0 and result.images[lam].max() <= 1.0
    # the two images of a run have different noise, and the three networks give different x_hat
    assert not torch.equal(first[0], first[1])
    assert not np.array_equal(result.images[0.0], result.images[1.0])


def test_csv_rows_are_per_lambda_step_and_image(result):
    df = result.frame
    assert list(df.columns) == CSV_COLUMNS == ["lambda", "step", "t", "sample", "mean", "std"]
    assert len(df) == 3 * 5 * 2
    assert sorted(set(df["lambda"])) == list(LAMBDAS) and sorted(set(df["step"])) == result.steps
    # t decreases from noise (t = 1 in internal time, within the end gap 0.001) along the run
    t0 = df[df["step"] == 0]["t"]
    assert np.allclose(t0, 0.999, atol=1e-6)
    assert df.groupby("step")["t"].first().is_monotonic_decreasing
    # mean and std are the decoded image's own statistics
    row = df[(df["lambda"] == 0.5) & (df["step"] == 6) & (df["sample"] == 1)].iloc[0]
    img = result.images[0.5][2, 1]
    assert row["mean"] == pytest.approx(float(img.mean()), rel=1e-5)  # float32 sums in two orders
    assert row["std"] == pytest.approx(float(torch.from_numpy(img).flatten().std()), rel=1e-5)


def test_write_figure_writes_png_and_csv(result, tmp_path):
    png, csv = tmp_path / "fig4.png", tmp_path / "fig4.csv"
    write_xhat_figure(result, png, csv)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(csv)
    assert list(back.columns) == CSV_COLUMNS and len(back) == len(result.frame)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_repeated_lambdas_are_refused():
    runs = _runs()
    runs[1].lam = 0.0
    with pytest.raises(ValueError, match=r"lambdas \[0.0, 0.0, 1.0\] repeat; expected one run per lambda"):
        xhat_trajectories(runs, latent_shape=(C, S, S), num_classes=K, decode=lambda x: x, steps=4)


def test_paper_scale_plans_fig4_once_on_one_gpu_after_its_models(overlay, tmp_path):  # noqa: F811
    run = snakemake(
        ["-n", "--profile", str(Path(__file__).resolve().parents[2] / "profiles" / "slurm"), "paper_scale"],
        tmp_path,
        [overlay],
    )
    assert run.returncode == 0, f"dry run of paper_scale failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    jobs = planned(run.stdout + run.stderr)
    fig4 = [j for j in jobs if j["rule"] == "paper_fig4_xhat"]
    assert len(fig4) == 1 and int(fig4[0]["resources"]["gpu"]) == 1, fig4
    trained = {j["wildcards"].get("model") for j in jobs if j["rule"] == "train"}
    assert {"tit_vavae_multistep", "fig2a_vavae_lambda050", "fig2a_vavae_lambda100"} <= trained
    # Fig. 3 at paper scale is the toy rule itself; the other toy figures stay miniature only
    fig3 = [j["wildcards"]["scale"] for j in jobs if j["rule"] == "paper_toy_fig3"]
    assert fig3 == ["paper"]
    assert not [j for j in jobs if j["rule"] == "paper_toy_fig4"]
    assert "paper_scale" in {j["rule"] for j in jobs}


def test_fig4_run_length_and_columns_are_config_keys_with_the_paper_defaults(overlay, tmp_path):  # noqa: F811
    """paper_fig4 (workflow/rules/paper_fig4.smk's params): the schema's defaults are the paper's 60 steps, 8
    shown steps, one run per lambda; an overlay changes them and a bad value is refused naming the key."""
    wf = load_with_overlay(overlay)
    assert wf.experiments[wf.main]["paper_fig4"] == {"steps": 60, "columns": 8, "images": 1}
    custom = tmp_path / "custom.yaml"
    custom.write_text(overlay.read_text() + "paper_fig4: {steps: 30, columns: 4}\n")
    wf = load_with_overlay(custom)
    assert wf.experiments[wf.main]["paper_fig4"] == {"steps": 30, "columns": 4, "images": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay.read_text() + "paper_fig4: {steps: 0}\n")
    with pytest.raises(ConfigError, match="paper_fig4"):
        load_with_overlay(bad)


def test_script_runs_from_checkpoints_and_refuses_mixed_experiments(tmp_path):
    """The paper_fig4 stage (ucgm_core.figures_paper.xhat_stage): the checkpoints' networks, normalizers and autoencoder, end to end."""
    from ucgm_core.checkpoint import save_checkpoint

    from ucgm_core.figures_paper.xhat_stage import make_xhat_figure

    paths = []
    for run in _runs():
        p = tmp_path / f"l{run.lam}.pt"
        save_checkpoint(
            p,
            architecture="TiT-Tiny/2",
            model_kwargs=dict(input_size=S, in_channels=C, num_classes=K),
            transport="Linear",
            num_classes=K,
            latent_shape=[C, S, S],
            normalizer=run.normalizer,
            autoencoder="identity",
            step=1,
            model=run.network,
            ema=run.network,
        )
        paths.append(str(p))
    opts = [
        {
            "order": 1,
            "stochasticity": 1.0,
            "extrapolation": 0.0,
            "time_warp": [1.0, 1.0, 1.0],
            "end_gaps": [0.001, 0.001],
        }
    ] * 3
    png, csv, lines = tmp_path / "f.png", tmp_path / "f.csv", []
    make_xhat_figure(paths, list(LAMBDAS), opts, {}, str(png), str(csv), steps=6, columns=3, log=lines.append)
    df = pd.read_csv(csv)
    assert list(df.columns) == CSV_COLUMNS and len(df) == 3 * 3 and sorted(set(df["step"])) == [0, 2, 5]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "shown steps [0, 2, 5]" in lines[0]
    other = tmp_path / "other.pt"
    save_checkpoint(
        other,
        architecture="TiT-Tiny/2",
        model_kwargs=dict(input_size=S, in_channels=C, num_classes=K),
        transport="Linear",
        num_classes=K + 1,
        latent_shape=[C, S, S],
        normalizer=LatentNormalizer(None, None, 1.0),
        autoencoder="identity",
        step=1,
        model=_runs()[0].network,
        ema=_runs()[0].network,
    )
    with pytest.raises(ValueError, match=r"other.pt: latent shape, classes, autoencoder .* differ from the first"):
        make_xhat_figure([paths[0], str(other)], [0.0, 1.0], opts[:2], {}, str(png), str(csv), steps=4)
