"""The paper's Tables 2, 3, 7 and its Fig. 2 at paper scale: `snakemake -n --profile profiles/slurm` of
results/table_paper<N>_<data>.csv and results/figures/paper/fig2*.png plans the paper's models, samplers, 50,000
samples per row and the GPUs of each job (as tests/paper/test_paper_plan.py does for the README tables); and the
script that writes them (workflow/scripts/paper_tables.py) on evaluation files made here.

The paper's numbers below are transcribed from ../shared/docs/paper_tables_figures.md (arXiv 2505.07447 v2).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml


ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from test_paper_plan import load_with_overlay, planned, write_imagenet_overlay  # noqa: E402

PAPER_TABLES = ["paper2_in1k256", "paper2_in1k512", "paper3_in1k256", "paper3_in1k512", "paper7_cifar10"]
FIG2 = ["fig2a_lambda_steps", "fig2b_zeta_transport", "fig2c_kappa_steps"]

# (paper NFE, paper FID) of every row of Tables 2, 3, 7 that is the paper's own result or UCGM-S applied to
# others' models: each is a row we run.
RUN_ROWS = {
    "paper2_in1k256": {
        (60, 1.41),
        (60, 1.21),
        (40, 1.21),
        (20, 1.30),  # ours: SD-, VA-, E2E-VAE
        (100, 1.27),
        (100, 1.21),
        (80, 1.06),
        (20, 2.00),
    },  # UCGM-S: DDT, LightningDiT, REPA-E
    "paper2_in1k512": {
        (40, 1.48),
        (20, 1.68),
        (40, 1.67),
        (20, 1.80),  # ours: DC-AE, SD-VAE
        (40, 2.53),
        (50, 2.04),
        (40, 1.88),
        (200, 1.25),
    },  # UCGM-S: EDM2-S/L/XXL, DDT
    "paper3_in1k256": {
        (16, 2.11),
        (8, 6.09),
        (16, 1.40),
        (8, 2.68),  # lambda = 0: VA-VAE, E2E-VAE
        (2, 1.42),
        (1, 2.19),
        (1, 2.10),
        (1, 2.29),
    },  # lambda = 1: VA-, SD-, E2E-VAE
    "paper3_in1k512": {
        (32, 1.55),
        (16, 1.81),
        (8, 3.07),
        (4, 74.0),  # lambda = 0: DC-AE
        (1, 2.42),
        (2, 1.75),
        (1, 2.63),
        (2, 2.11),
    },  # lambda = 1: DC-AE, SD-VAE
    "paper7_cifar10": {(1, 2.82), (2, 2.17)},
}
# (label, paper NFE, paper FID) of the competitors' numbers printed beside them: reference rows, never run.
REFERENCE_ROWS = {
    "paper2_in1k256": {
        ("REPA-E", 500, 1.26),
        ("LightningDiT", 500, 1.35),
        ("DDT-XL/2", 500, 1.26),
        ("REPA-XL/2", 500, 1.42),
        ("SiT-XL/2", 500, 2.06),
        ("DiT-XL/2", 500, 2.27),
    },
    "paper2_in1k512": {
        ("EDM2-S", 63, 2.56),
        ("EDM2-L", 63, 2.06),
        ("EDM2-XXL", 63, 1.91),
        ("DDT-XL/2", 500, 1.28),
        ("REPA-XL/2", 500, 2.08),
        ("SiT-XL/2", 500, 2.62),
        ("DiT-XL/2", 500, 3.04),
    },
    "paper3_in1k256": {
        ("IMM-XL/2", 2, 7.77),
        ("IMM-XL/2", 4, 5.33),
        ("IMM-XL/2", 8, 3.66),
        ("IMM-XL/2", 16, 2.77),
        ("Shortcut-XL/2", 1, 10.6),
        ("Shortcut-XL/2", 4, 7.80),
        ("Shortcut-XL/2", 128, 3.80),
    },
    "paper3_in1k512": {("sCD-XXL", 1, 2.28), ("sCD-XXL", 2, 1.88), ("sCT-XXL", 1, 4.29), ("sCT-XXL", 2, 3.76)},
    "paper7_cifar10": {
        ("PD", 2, 4.51),
        ("2-RF", 1, 4.85),
        ("DMD", 1, 3.77),
        ("CD", 2, 2.93),
        ("sCD", 2, 2.52),
        ("iCT", 1, 2.83),
        ("iCT", 2, 2.46),
        ("ECT", 1, 3.60),
        ("ECT", 2, 2.11),
        ("sCT", 1, 2.97),
        ("sCT", 2, 2.06),
        ("IMM", 1, 3.20),
        ("IMM", 2, 1.98),
    },
}


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    return write_imagenet_overlay(tmp_path_factory.mktemp("plan-figures"))


@pytest.fixture(scope="module")
def wf(overlay):
    return load_with_overlay(overlay)


def snakemake(args: list, cwd: Path, configfiles: list) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(cwd),
        *args,
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        *map(str, configfiles),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def jobs(overlay, tmp_path_factory):
    """Every job of one paper-scale plan of the five paper tables and the three Fig. 2 panels."""
    targets = [f"results/table_{t}.csv" for t in PAPER_TABLES] + [f"results/figures/paper/{f}.png" for f in FIG2]
    run = snakemake(
        ["-n", "--profile", str(ROOT / "profiles" / "slurm"), *targets],
        tmp_path_factory.mktemp("plan-figures-run"),
        [overlay],
    )
    assert run.returncode == 0, f"dry run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return planned(run.stdout + run.stderr)


def evaluated(jobs) -> set:
    return {(j["wildcards"]["sampler"], int(j["wildcards"]["steps"])) for j in jobs if j["rule"] == "evaluate"}


def test_the_plan_evaluates_exactly_the_rows_and_cells(jobs, wf):
    expected = {(s, n) for t in PAPER_TABLES + FIG2 for s in wf.tables[t] for n in wf.samplers[s]["steps"]}
    assert evaluated(jobs) == expected  # reference rows add no job
    by_rule = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j["wildcards"])
    assert sorted(f"paper{w['number']}_{w['variant']}" for w in by_rule["paper_table"]) == sorted(PAPER_TABLES)
    for rule in ("paper_fig2_data", "paper_fig2_plot"):
        assert sorted(w["panel"] for w in by_rule[rule]) == FIG2 and {w["scale"] for w in by_rule[rule]} == {"paper"}
    # 50,000 samples per row in shards, one GPU per shard and per evaluation
    for s, n in expected:
        ev = wf.of("sampler", s)["evaluation"]
        assert ev["num_samples"] == 50000, s
        shards = [
            j
            for j in jobs
            if j["rule"] == "sample" and j["wildcards"]["sampler"] == s and int(j["wildcards"]["steps"]) == n
        ]
        assert len(shards) == 50000 // ev["samples_per_shard"], (s, n)
    for j in jobs:
        if j["rule"] in ("sample", "evaluate"):
            assert int(j["resources"]["gpu"]) == 1, j


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_each_paper_row_is_a_planned_evaluation_with_the_paper_number(table, jobs, wf):
    paper = {(p["nfe"], p["fid"]): (s, p["steps"]) for s in wf.tables[table] for p in wf.samplers[s]["paper"]}
    assert set(paper) == RUN_ROWS[table]
    for key in RUN_ROWS[table]:
        assert paper[key] in evaluated(jobs), (table, key)
    # every row of the table has the paper's number beside it
    for s in wf.tables[table]:
        assert sorted(p["steps"] for p in wf.samplers[s]["paper"]) == sorted(wf.samplers[s]["steps"]), s
    refs = wf.of("table", table)["reference_rows"][table]
    assert all(r["kind"] == "reference" and r["source"].startswith("paper Table") for r in refs)
    labels = {(r["label"].split(" (")[0].split(",")[0], r["nfe"], r["fid"]) for r in refs}
    assert labels == REFERENCE_ROWS[table]


def test_models_are_trained_with_their_gpus_and_time(jobs, wf):
    trained = {}
    for j in jobs:
        if j["rule"] in ("train", "tune"):
            spec = wf.models[j["wildcards"]["model"]]["train"]
            assert int(j["resources"]["gpu"]) == spec["gpus"] >= 1, j
            assert int(j["resources"]["runtime"]) == int(60 * spec["hours"]), j
            trained[j["wildcards"]["model"]] = j["rule"]
    # every TiT-XL of Tables 2/3 and the Fig. 2 ablation models, on 8 GPUs with Table 5's batch of 1024
    tit = {m: r for m, r in trained.items() if wf.models[m]["architecture"].startswith("TiT-")}
    assert {
        "tit_repae_multistep",
        "tit_repae_fewstep",
        "tit_vavae_multistep",
        "tit_vavae_fewstep",
        "tit_sdvae256_multistep",
        "tit_sdvae256_fewstep",
        "tit_dcae_multistep",
        "tit_dcae_fewstep",
        "tit_sdvae512_multistep",
        "tit_sdvae512_fewstep",
        "fig2a_vavae_lambda025",
        "fig2a_vavae_lambda050",
        "fig2a_vavae_lambda075",
        "fig2a_vavae_lambda100",
    } <= set(tit)
    assert sum(m.startswith("fig2b_") for m in tit) == 10
    for m in tit:
        assert wf.models[m]["train"]["gpus"] == 8 and wf.models[m]["train"]["batch_size"] == 1024, m
    # Table 7: the 56M EDM U-Net (DDPM++), tuned from the released EDM network with the EDM transport, lambda = 1
    assert trained["cifar10_ucgm_fewstep"] == "tune"
    spec = wf.models["cifar10_ucgm_fewstep"]
    assert spec["architecture"] == "SongUNet-CIFAR10" and spec["init"] == "cifar10_edm"
    assert (spec["objective"]["transport"], spec["objective"]["consistency_ratio"]) == ("EDM", 1.0)


def _objective(wf, sampler):
    return wf.models[wf.samplers[sampler]["model"]]["objective"]


def test_fig2_panels_have_the_papers_settings(wf):
    """Fig. 2a/2c: TiT-XL/1 on VA-VAE at 256, lambda x steps and kappa x steps; Fig. 2b: TiT-B/2 on SD-VAE,
    five transports x zeta {0.45, 0}; kappa = 0 and lambda = 0 unless varied; UCGM-S everywhere."""

    def setting(s):
        model = wf.samplers[s]["model"]
        data = wf.of("model", model)["data"]
        return wf.models[model]["architecture"], data["autoencoder"], data["resolution"]

    a = wf.tables["fig2a_lambda_steps"]
    assert {setting(s) for s in a} == {("TiT-XL/1", "vavae_f16d32", 256)}
    assert sorted(_objective(wf, s)["consistency_ratio"] for s in a) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(wf.samplers[s]["options"]["extrapolation"] == 0.0 for s in a)
    c = wf.tables["fig2c_kappa_steps"]
    assert {setting(s) for s in c} == {("TiT-XL/1", "vavae_f16d32", 256)}
    assert sorted(wf.samplers[s]["options"]["extrapolation"] for s in c) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert {wf.samplers[s]["model"] for s in c} == {"tit_vavae_multistep"}  # the lambda = 0 model
    for s in a + c:
        assert wf.samplers[s]["steps"] == [1, 2, 4, 8, 16] and wf.samplers[s]["method"] == "ucgm", s
    b = wf.tables["fig2b_zeta_transport"]
    assert {setting(s) for s in b} == {("TiT-B/2", "sdvae_ema_f8c4", 256)}
    assert sorted((_objective(wf, s)["transport"], _objective(wf, s)["enhanced_ratio"]) for s in b) == sorted(
        (t, z) for t in ("EDM", "TrigLinear", "Linear", "Random", "TrigFlow") for z in (0.45, 0.0)
    )
    for s in b:
        assert _objective(wf, s)["consistency_ratio"] == 0.0 and wf.samplers[s]["options"]["extrapolation"] == 0.0
    # the ablation models differ from their reference only in what the figure varies
    base = {k: v for k, v in wf.models["tit_vavae_multistep"]["train"].items()}
    for s in a:
        m = wf.samplers[s]["model"]
        assert wf.models[m]["train"] | {"hours": base["hours"]} == base, m
        assert {k: v for k, v in wf.models[m]["objective"].items() if k != "consistency_ratio"} == {
            k: v for k, v in wf.models["tit_vavae_multistep"]["objective"].items() if k != "consistency_ratio"
        }, m


# --- the script, on evaluation files made here ------------------------------------------------------------


def _eval(path: Path, sampler: str, steps: int, fid: float) -> str:
    path.write_text(
        json.dumps(
            {
                "fid": fid,
                "is_mean": 10.0,
                "num_samples": 50000,
                "context": {
                    "sampler": sampler,
                    "model": "m",
                    "experiment": "e",
                    "samples": {"steps": steps, "nfe": steps, "method": "ucgm", "seed": 0},
                },
            }
        )
    )
    return str(path)


def test_paper_table_has_our_rows_then_the_reference_rows(tmp_path):
    import paper_tables

    from ucgm_core.report import COLUMNS

    evals = [_eval(tmp_path / "a.json", "few", 1, 2.5), _eval(tmp_path / "b.json", "few", 2, 2.0)]
    rows = {
        "few": {
            "label": "UCGM",
            "paper": [
                {"steps": 1, "nfe": 1, "fid": 2.82, "source": "paper Table 7"},
                {"steps": 2, "nfe": 2, "fid": 2.17, "source": "paper Table 7"},
            ],
        }
    }
    refs = [{"kind": "reference", "label": "iCT", "steps": 1, "nfe": 1, "fid": 2.83, "source": "paper Table 7"}]
    out = tmp_path / "t.csv"
    assert (
        paper_tables.main(
            [
                "table",
                "--evals",
                *evals,
                "--rows",
                json.dumps(rows),
                "--references",
                json.dumps(refs),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out)
    assert list(df.columns) == ["kind"] + COLUMNS
    assert list(df["kind"]) == ["run", "run", "reference"]
    assert list(df["fid"][:2]) == [2.5, 2.0] and list(df["paper_fid"]) == [2.82, 2.17, 2.83]
    assert df.loc[2, "label"] == "iCT" and math.isnan(df.loc[2, "fid"]) and df.loc[2, "paper_nfe"] == 1


def test_a_reference_row_without_its_number_is_refused(tmp_path):
    from ucgm_core.report import ReportError, paper_table

    with pytest.raises(ReportError, match=r"--references\[0\]: reference row lacks fid; expected"):
        paper_table([], {}, [{"kind": "reference", "label": "PD", "nfe": 2, "source": "paper Table 7"}])


def test_fig2a_csv_has_the_fixed_columns_and_the_printed_cells(tmp_path):
    from ucgm_core.report import fig2_frame, plot_fig2

    coords = {"l0": {"lambda": 0.0}, "l5": {"lambda": 0.5}}
    evals = [_eval(tmp_path / f"{s}-{n}.json", s, n, 1.0 + n) for s in coords for n in (16, 3)]
    df = fig2_frame("fig2a_lambda_steps", evals, coords)
    assert list(df.columns) == ["lambda", "steps", "metric", "value", "paper_log_fid"]
    assert list(zip(df["lambda"], df["steps"])) == [(0.0, 3), (0.0, 16), (0.5, 3), (0.5, 16)]
    assert set(df["metric"]) == {"fid"} and list(df["value"]) == [4.0, 17.0, 4.0, 17.0]
    # the paper's printed log FID where it prints a cell (lambda 0.5 and 0 at 16 steps), none at 3 steps
    assert df["paper_log_fid"].tolist()[1] == 0.24 and df["paper_log_fid"].tolist()[3] == 0.19
    assert math.isnan(df["paper_log_fid"][0]) and math.isnan(df["paper_log_fid"][2])
    csv, png = tmp_path / "fig2a.csv", tmp_path / "fig2a.png"
    df.to_csv(csv, index=False)
    plot_fig2("fig2a_lambda_steps", str(csv), str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fig2b_and_fig2c_rows(tmp_path):
    from ucgm_core.report import fig2_frame

    b = fig2_frame(
        "fig2b_zeta_transport",
        [_eval(tmp_path / "e.json", "edm", 60, 9.0), _eval(tmp_path / "f.json", "edm0", 60, 12.0)],
        {"edm": {"transport": "EDM", "zeta": 0.45}, "edm0": {"transport": "EDM", "zeta": 0.0}},
    )
    assert b.to_dict("list") == {
        "transport": ["EDM", "EDM"],
        "zeta": [0.45, 0.0],
        "metric": ["fid", "fid"],
        "value": [9.0, 12.0],
    }
    c = fig2_frame("fig2c_kappa_steps", [_eval(tmp_path / "k.json", "k", 4, 5.0)], {"k": {"kappa": 0.75}})
    assert c.to_dict("list") == {"kappa": [0.75], "steps": [4], "metric": ["fid"], "value": [5.0]}


def test_fig2_refuses_a_sampler_without_coordinates_and_a_cell_twice(tmp_path):
    from ucgm_core.report import ReportError, fig2_frame

    one = _eval(tmp_path / "a.json", "l0", 4, 3.0)
    with pytest.raises(ReportError, match=r"fig2a_lambda_steps: evaluation .*a.json \(sampler 'l0'\) has no lambda"):
        fig2_frame("fig2a_lambda_steps", [one], {"other": {"lambda": 0.0}})
    two = _eval(tmp_path / "b.json", "l0b", 4, 3.5)
    with pytest.raises(ReportError, match=r"are the same cell \(0.0, 4\); expected one evaluation per cell"):
        fig2_frame("fig2a_lambda_steps", [one, two], {"l0": {"lambda": 0.0}, "l0b": {"lambda": 0.0}})


def test_reference_rows_must_name_a_paper_table_of_their_file(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "experiment_overrides": {
                    "paper_tables": {
                        "reference_rows": {
                            "in1k256": [
                                {"kind": "reference", "label": "X", "nfe": 1, "fid": 1.0, "source": "paper Table 2"}
                            ]
                        }
                    }
                }
            }
        )
    )
    run = snakemake(["-n", "--cores", "1", "results/table_paper7_cifar10.csv"], tmp_path, [overlay])
    assert run.returncode != 0
    assert (
        "tables.yaml: reference_rows.in1k256: names no table paper<N>_<data> of this file; expected one of "
        "['paper2_in1k256', 'paper2_in1k512', 'paper3_in1k256', 'paper3_in1k512', 'paper7_cifar10']"
        in run.stdout
        + run.stderr
    )
