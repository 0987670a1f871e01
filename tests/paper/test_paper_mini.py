"""A miniature of every paper table, run for real: the paper's experiment files and rules, with sizes swapped
by an overlay (`experiment_overrides`) that this test writes.

What the overlay swaps, and nothing else: ImageNet (a 4-class ILSVRC-format tar for the 256 experiments
and an ImageFolder for the 512 ones, made by tests/paper/paper_assets.py, cropped to 64 and 128 pixels), CIFAR-10 (a tiny tarball in the real format), the released weights
(tiny networks in their released formats: the UCGM repo's ``{model, ema}`` .pt, EDM's pickle), the VAE weights
(tiny, in their original formats), the ADM reference batches (tiny, in guided-diffusion's format), the
Inception weights (random, torch-fidelity's layout), the model sizes, the training and tuning lengths
(2 steps) and the sample count (10 per row). Every sampler keeps its method, steps, knobs and guidance, so
`results/table_in1k256.csv` has every row and column of the real table (about 8 minutes on 2 cores).

The paper's own Tables 2, 3 and 7 (`results/table_paper<N>_<data>.csv`, rule `paper_table`) are built by a
second Snakemake run in the same folder, so that their extra cost is timed apart (printed with `-s`): they add
the samplers the README tables lack (fewer steps of the same models, Table 7's tuned CIFAR-10 U-Net) and the
competitors' reference rows: 53 more jobs, 11 min against the README tables' 48 min when measured on a loaded
machine (load 6-8 on 2 cores, 2026-12-03), so about 2 more minutes where the README tables take 8.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ucgm_core.data.download import file_digest
from ucgm_core.config import load_workflow, split_model_ref

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_assets import MINI_RESOLUTION, make_paper_assets  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
TABLES = ["in1k256", "in1k512", "cifar10", "readme_acceleration", "readme_tuning", "readme_unified"]
PAPER_TABLES = ["paper2_in1k256", "paper2_in1k512", "paper3_in1k256", "paper3_in1k512", "paper7_cifar10"]
TIT_TINY = {"depth": 1, "hidden_size": 32, "num_heads": 2}
TINY_TRAIN = {
    "steps": 2,
    "checkpoint_every": 1,
    "log_every": 1,
    "grid_every": 0,
    "precision": "fp32",
    "gpus": 1,
    "hours": 1,
}


def _network_for(assets, architecture: str, latent_size: int):
    for net in assets.networks.values():
        if net.architecture == architecture and net.latent_shape[1] == latent_size:
            return net
    raise KeyError(f"no tiny {architecture} at latent size {latent_size}")


def overlay_for(assets) -> dict:
    """`experiment_overrides` that shrink every paper experiment (see the module docstring)."""
    main = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    overrides = {}
    for rel in main["experiments"]:
        exp = yaml.safe_load((ROOT / rel).read_text())
        if "data" not in exp:
            continue
        data, over = exp["data"], {}
        resolution = data["resolution"]
        if data["dataset"] == "imagenet":
            src = assets.imagenet_train_tar if resolution == 256 else assets.imagenet_folder
            resolution = MINI_RESOLUTION[resolution]
            # two parts, not the paper's 32: the parallel prep and its merges run for real, without ~200 part jobs
            over["data"] = {
                "source": str(src),
                "num_classes": assets.num_classes,
                "resolution": resolution,
                "prep_jobs": 2,
            }
        else:
            over["data"] = {"source": str(assets.cifar10_tarball)}
        ae = data["autoencoder"]
        if ae != "identity":
            tiny = assets.autoencoders[ae]
            # one weights file with its sha256: it goes through the fetch rule (a verified copy)
            digest = file_digest(tiny.path) if ae == "e2evavae_f16d32" else None
            over["autoencoders"] = {ae: {"source": str(tiny.path), "sha256": digest, "kwargs": tiny.kwargs}}
            latent_size = resolution // tiny.stride
        else:
            latent_size = resolution
        over["extractor"] = {"weights": str(assets.inception_weights)}
        ev = {"num_samples": 10, "samples_per_shard": 10, "batch_size": 10, "grid_size": 3}
        if exp["evaluation"].get("reference_batch"):
            ref = assets.ref_batch_256 if data["resolution"] == 256 else assets.ref_batch_512
            ev["reference_batch"] = {"source": str(ref), "sha256": None}
        over["evaluation"] = ev
        models = {}
        for name, spec in exp["models"].items():
            if spec.get("pretrained"):
                net = _network_for(assets, spec["architecture"], latent_size)
                models[name] = {
                    "pretrained": {"source": str(net.path)},
                    "architecture_overrides": {**net.overrides, **spec.get("architecture_overrides", {})},
                }
                continue
            m = {"train": {**TINY_TRAIN, "batch_size": 4}}
            if spec["train"].get("snapshots"):
                m["train"]["snapshots"] = [1]
            for role in ("init", "teacher"):
                if spec.get(role):
                    ref, step = split_model_ref(spec[role])
                    m[role] = ref if step is None else f"{ref}@1"
            if spec["architecture"].startswith("TiT"):
                m["architecture_overrides"] = dict(TIT_TINY)
            else:  # tuning a released network: the same tiny size as its source
                source = exp["models"][split_model_ref(spec["init"])[0]]
                net = _network_for(assets, source["architecture"], latent_size)
                m["architecture_overrides"] = {**net.overrides, **spec.get("architecture_overrides", {})}
            models[name] = m
        over["models"] = models
        overrides[exp["name"]] = over
    return json.loads(json.dumps({"experiment_overrides": overrides}))  # plain data: no YAML aliases


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """Every paper table of the miniature, built by one `snakemake --cores 2` run."""
    assets = make_paper_assets(tmp_path_factory.mktemp("paper-assets"))
    work = tmp_path_factory.mktemp("paper-mini")
    overlay = work / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(overlay_for(assets)))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    logs = []
    for part, tables in (("README tables", TABLES), ("paper Tables 2, 3, 7", PAPER_TABLES)):
        cmd = [
            os.path.join(BIN, "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(work),
            "--cores",
            "2",
            *[f"results/table_{t}.csv" for t in tables],
            "--configfile",
            str(ROOT / "config" / "config.yaml"),
            str(overlay),
        ]
        start = time.monotonic()
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
        if run.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
            )
        print(f"\npaper miniature, {part}: {time.monotonic() - start:.0f} s")
        logs.append(run.stdout + run.stderr)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(yaml.safe_load(overlay.read_text()))
    wf = load_workflow(copy.deepcopy(cfg), "config/config.yaml", base_dir=ROOT)
    full = load_workflow(
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), "config/config.yaml", base_dir=ROOT
    )
    return {"work": work, "wf": wf, "full": full, "assets": assets, "log": "\n".join(logs)}


@pytest.mark.parametrize("table", TABLES)
def test_every_row_and_column_of_the_real_table(mini, table):
    work, full = mini["work"], mini["full"]
    df = pd.read_csv(work / "results" / f"table_{table}.csv")
    # the rows of the paper-scale table (same samplers and step counts: only sizes were swapped)
    expected = [(s, n) for s in full.tables[table] for n in full.samplers[s]["steps"]]
    assert list(zip(df["sampler"], df["steps"])) == expected
    from ucgm_core.report import COLUMNS

    assert list(df.columns) == COLUMNS
    # measured numbers, the paper's number beside each row that has one, and the evaluation contract
    assert np.isfinite(df["fid"]).all() and (df["fid"] >= 0).all()
    assert np.isfinite(df["is"]).all() and (df["is"] >= 1).all()
    assert df["precision"].between(0, 1).all() and df["recall"].between(0, 1).all()
    for _, r in df.iterrows():
        paper = [p for p in full.samplers[r["sampler"]]["paper"] if p["steps"] == r["steps"]]
        if paper:
            assert r["paper_fid"] == pytest.approx(paper[0]["fid"]) and r["paper_source"]
        else:
            assert np.isnan(r["paper_fid"])
        assert r["num_samples"] == 10 and r["quantize"] == "round" and r["label"]
        assert r["method"] == full.samplers[r["sampler"]]["method"] and r["nfe"] >= r["steps"]
    for fig in (f"{table}_fid_vs_nfe.png", f"{table}_samples.png"):
        assert (work / "results" / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("table", PAPER_TABLES)
def test_every_row_of_the_paper_tables_with_the_paper_number_beside_ours(mini, table):
    """Each row the paper prints as its own result (or UCGM-S on others' models) is run, with our number and the
    paper's NFE and FID beside it (the rows of tests/paper/test_paper_plan_figures.py); the competitors' numbers
    follow as reference rows, not run."""
    from test_paper_plan_figures import REFERENCE_ROWS, RUN_ROWS

    from ucgm_core.report.paper import TABLE_COLUMNS

    work, full = mini["work"], mini["full"]
    df = pd.read_csv(work / "results" / f"table_{table}.csv")
    assert list(df.columns) == TABLE_COLUMNS and set(df["kind"]) <= {"run", "reference"}
    run, refs = df[df["kind"] == "run"], df[df["kind"] == "reference"]
    assert list(zip(run["sampler"], run["steps"])) == [
        (s, n) for s in full.tables[table] for n in full.samplers[s]["steps"]
    ]
    assert np.isfinite(run["fid"]).all() and (run["fid"] >= 0).all() and (run["nfe"] >= run["steps"]).all()
    assert (run["num_samples"] == 10).all()
    assert set(zip(run["paper_nfe"], run["paper_fid"])) == RUN_ROWS[table]
    for _, r in run.iterrows():
        (paper,) = [p for p in full.samplers[r["sampler"]]["paper"] if p["steps"] == r["steps"]]
        assert (r["paper_nfe"], r["paper_fid"]) == (paper["nfe"], pytest.approx(paper["fid"])) and r["paper_source"]
    # reference rows: the paper's printed numbers only, after our rows
    assert list(df["kind"]) == ["run"] * len(run) + ["reference"] * len(refs)
    assert {(r["label"].split(" (")[0].split(",")[0], r["paper_nfe"], r["paper_fid"]) for _, r in refs.iterrows()} == (
        REFERENCE_ROWS.get(table, set())
    )
    assert refs["fid"].isna().all() and refs["paper_source"].str.startswith("paper Table").all()
    assert (work / "results" / "figures" / f"{table}_fid_vs_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_chain_ran_through_each_stage(mini):
    work, wf = mini["work"], mini["wf"]
    res = work / "results"
    # ImageNet from the ILSVRC tar ("256") and the ImageFolder ("512"), ADM centre crop to each resolution
    from ucgm_core.data.shards import load_images

    for size in MINI_RESOLUTION.values():
        images, labels = load_images(res / "shards" / f"imagenet_{size}", "train")
        assert images.shape[1:] == (size, size, 3) and set(labels.tolist()) == set(range(4))
    # a weights file with a configured sha256 was copied and verified by the fetch rule
    tiny = mini["assets"].autoencoders["e2evavae_f16d32"]
    assert file_digest(res / "downloads" / "autoencoders" / "e2evavae_f16d32" / tiny.path.name) == file_digest(
        tiny.path
    )
    # latents of every VAE, statistics beside them
    for ae in ("e2evavae_f16d32", "vavae_f16d32", "sdvae_ema_f8c4", "dcae_f32c32"):
        assert list((res / "latents" / ae).glob("imagenet_*/stats.pt")), ae
    # released weights imported (with their own transport), then tuned; TiT trained, few-step from a snapshot
    from ucgm_core.checkpoint import load_checkpoint

    # the models the miniature's tables need (their samplers' models and those models' init and teacher, Table
    # 7's tuned U-Net among them); the paper-scale-only Fig. 2 ablation models are planned by
    # tests/paper/test_paper_plan_figures.py
    needed = {wf.samplers[s]["model"] for t in TABLES + PAPER_TABLES for s in wf.tables[t]}
    while True:
        more = {split_model_ref(wf.models[m][r])[0] for m in needed for r in ("init", "teacher") if wf.models[m].get(r)}
        if more <= needed:
            break
        needed |= more
    for name, spec in wf.models.items():
        if wf.experiment_of[("model", name)] == "fmnist" or name not in needed:
            continue
        ckpt = load_checkpoint(res / "models" / name / "checkpoint.pt")
        assert ckpt["architecture"] == spec["architecture"]
        if spec.get("pretrained"):
            from ucgm_core.models import MODELS

            assert ckpt["step"] == 0 and ckpt["transport"] == MODELS[spec["architecture"]].transport
        else:
            assert ckpt["step"] == 2 and ckpt["transport"] == spec["objective"]["transport"]
    assert (res / "models" / "tit_repae_multistep" / "snapshots" / "step-0000001.pt").exists()
    # FID against the reference batch's mu/sigma, precision/recall against its images
    ev = json.loads((res / "eval" / "repae_sit_ucgm" / "steps40.json").read_text())
    assert ev["reference_id"].startswith("VIRTUAL_imagenet256_labeled") and ev["num_reference"] == 12
    assert ev["context"]["samples"]["guidance"]["scale"] == 2.5
    assert ev["context"]["contract"]["quantize"] == "round"
