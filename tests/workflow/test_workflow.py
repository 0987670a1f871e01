"""The whole DAG on the smoke config (config/smoke.yaml): outputs, contract, reruns, report, split invariance.

Runs Snakemake for real in a temporary folder (about 3 minutes on 2 cores). Needs the Fashion-MNIST files
of Debian's ``dataset-fashion-mnist`` (the download rule's first mirror); skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "smoke.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
BIN = os.path.dirname(sys.executable)

pytestmark = pytest.mark.skipif(
    not (FMNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


def snakemake(
    workdir: Path, *args: str, config: Path = SMOKE, snakefile: Path = ROOT / "Snakefile", timeout: int = 1200
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run


def planned_jobs(run: subprocess.CompletedProcess) -> dict:
    """{rule: count} from a dry run's "Job stats" table."""
    text = run.stdout + run.stderr
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def planned_outputs(run: subprocess.CompletedProcess) -> list:
    return re.findall(r"output: ([^\n]+)", run.stdout + run.stderr)


@pytest.fixture(scope="module")
def smoke(smoke_local):
    """The local smoke run shared with tests/workflow/test_slurm.py (tests/conftest.py)."""
    return smoke_local.workdir


def edited_config(tmp: Path, edit) -> Path:
    with open(SMOKE) as f:
        cfg = yaml.safe_load(f)
    edit(cfg)
    path = tmp / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_outputs_and_contract(smoke):
    cfg = yaml.safe_load(SMOKE.read_text())
    table = pd.read_csv(smoke / "results" / "table_smoke.csv")
    expected = {(s, n) for s in cfg["tables"]["smoke"] for n in cfg["samplers"][s]["steps"]}
    assert set(zip(table["sampler"], table["steps"])) == expected
    assert (table["num_samples"] == cfg["evaluation"]["num_samples"]).all()
    for col in ("fid", "is", "kid", "precision", "recall"):
        assert np.isfinite(table[col]).all(), col
    assert (table["fid"] > 0).all()
    assert table.loc[table["sampler"] == "fewstep", "nfe"].tolist() == [1]
    assert table["extractor"].unique().tolist() == ["ucgm-classifier"]
    assert table["extractor_weights_sha256"].str.len().eq(64).all()
    assert table["checkpoint_sha256"].str.len().eq(64).all()
    assert table["reference"].unique().tolist() == ["fashion_mnist_28-test"]
    # the contract in every evaluation file
    res = json.loads((smoke / "results" / "eval" / "ucgm" / "steps4.json").read_text())
    ctx = res["context"]
    assert ctx["sampler"] == "ucgm" and ctx["model"] == "multistep"
    assert ctx["samples"]["options"]["extrapolation"] == 0.5 and ctx["samples"]["seed"] == 0
    assert ctx["seed_range"] == [0, cfg["evaluation"]["num_samples"] - 1]
    assert res["num_reference"] == 10000
    # figures, grids, loss logs and curves
    figs = [smoke / "results" / "figures" / "smoke_fid_vs_nfe.png"]
    figs += [smoke / "results" / "figures" / "fid_vs_nfe" / f"{s}.png" for s in cfg["samplers"]]
    figs += [smoke / "results" / "figures" / "grids" / f"{s}_steps{n}.png" for s, n in expected]
    figs += [smoke / "results" / "models" / m / f for m in cfg["models"] for f in ("loss.png", "grid.png")]
    for f in figs:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    loss = pd.read_csv(smoke / "results" / "models" / "multistep" / "loss.csv")
    assert loss["step"].tolist() == [4, 8, 12] and np.isfinite(loss["loss"]).all()
    log = (smoke / "results" / "logs" / "train" / "multistep.log").read_text()
    assert re.search(r"step 12/12 loss [\d.]+ [\d.]+ img/s eta", log)
    # training state kept outside the outputs, benchmarks on every job
    assert list((smoke / "results" / "state" / "multistep").glob("*/state.pt"))
    assert (smoke / "results" / "benchmarks" / "train" / "multistep.tsv").exists()


def test_nothing_to_do_after_full_run(smoke):
    assert planned_jobs(snakemake(smoke, "-n")) == {}


def test_moved_checkout_reruns_nothing(smoke, tmp_path):
    """The same workflow from a copy of the checkout at another path (a clone elsewhere, another mount on a
    cluster) finds every output up to date: no rule's params hold the checkout's path."""
    moved = tmp_path / "moved checkout"
    moved.mkdir()
    shutil.copy2(ROOT / "Snakefile", moved / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(ROOT / folder, moved / folder, ignore=shutil.ignore_patterns("__pycache__"))
    run = snakemake(smoke, "-n", config=moved / "config" / "smoke.yaml", snakefile=moved / "Snakefile")
    assert planned_jobs(run) == {}, (run.stdout + run.stderr)[-3000:]


def test_sampler_knob_reruns_only_that_sampler(smoke, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["samplers"]["ucgm"]["options"].update(extrapolation=0.3))
    run = snakemake(smoke, "-n", config=cfg)
    jobs = planned_jobs(run)
    assert jobs == {
        "sample": 4,
        "evaluate": 2,
        "sample_grid": 2,
        "sampler_figure": 1,
        "table": 1,
        "table_figure": 1,
        "table_samples": 1,
        "all": 1,
    }, jobs
    outs = " ".join(planned_outputs(run))
    assert "samples/euler" not in outs and "samples/fewstep" not in outs and "samples/ucgm" in outs


def test_training_value_reruns_training_and_downstream_only(smoke, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["models"]["multistep"]["train"].update(lr=0.002))
    jobs = planned_jobs(snakemake(smoke, "-n", config=cfg))
    assert jobs == {
        "train": 1,
        "tune": 1,
        "sample": 8,
        "evaluate": 4,
        "sample_grid": 4,
        "sampler_figure": 3,
        "table": 1,
        "table_figure": 1,
        "table_samples": 1,
        "all": 1,
    }, jobs


def test_tuning_value_leaves_multistep_alone(smoke, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["models"]["fewstep"]["objective"].update(enhanced_ratio=1.0))
    jobs = planned_jobs(snakemake(smoke, "-n", config=cfg))
    assert jobs == {
        "tune": 1,
        "sample": 2,
        "evaluate": 1,
        "sample_grid": 1,
        "sampler_figure": 1,
        "table": 1,
        "table_figure": 1,
        "table_samples": 1,
        "all": 1,
    }, jobs


def test_hflip_retrains_every_model_and_keeps_the_data(smoke, tmp_path):
    """data.hflip reaches every training spec (smoke has it false): switching it on retrains and retunes
    every model, and leaves the data (shards, latents), the extractor and the reference alone."""
    cfg = edited_config(tmp_path, lambda c: c["data"].update(hflip=True))
    jobs = planned_jobs(snakemake(smoke, "-n", config=cfg))
    assert jobs["train"] == 2 and jobs["tune"] == 2, jobs
    assert not {
        "download",
        "shards",
        "shards_merge",
        "latents",
        "latents_merge",
        "extractor_classifier",
        "reference",
    } & set(jobs)


def test_html_report(smoke):
    snakemake(smoke, "--report", "report.html")
    html = (smoke / "report.html").read_bytes()
    assert len(html) > 50_000 and b"table_smoke.csv" in html and b"fid_vs_nfe" in html


def test_samples_do_not_depend_on_the_split(smoke, tmp_path):
    """Resample the ucgm/steps4 images as one shard with another batch size: identical to the 2 shards."""
    cfg = yaml.safe_load(SMOKE.read_text())
    s = cfg["samplers"]["ucgm"]
    n = cfg["evaluation"]["num_samples"]
    spec = json.dumps({"method": s["method"], "options": s["options"], "guidance": {"scale": 0.0}, "weights": "ema"})
    out = tmp_path / "one.npz"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "workflow" / "scripts" / "sample.py"),
            "--checkpoint",
            str(smoke / "results" / "models" / "multistep" / "checkpoint.pt"),
            "--spec",
            spec,
            "--steps",
            "4",
            "--shard",
            "0",
            "--samples-per-shard",
            str(n),
            "--num-samples",
            str(n),
            "--seed",
            "0",
            "--batch-size",
            "17",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    with np.load(out) as z:
        one = z["images"]
    parts = []
    for k in range(2):
        with np.load(smoke / "results" / "samples" / "ucgm" / "steps4" / f"shard-{k:04d}.npz") as z:
            parts.append(z["images"])
    assert np.array_equal(one, np.concatenate(parts))


def test_train_script_resumes_exactly(smoke, tmp_path):
    """A training job stopped mid-way and rerun ends with the same weights as an uninterrupted one."""
    cfg = yaml.safe_load(SMOKE.read_text())
    spec = dict(cfg["models"]["multistep"], data={"dataset": "fashion_mnist"})
    spec["train"] = dict(spec["train"], steps=6, checkpoint_every=2)
    latents = smoke / "results" / "latents" / "identity" / "fashion_mnist_28"
    script = str(ROOT / "workflow" / "scripts" / "train.py")

    def train(out, state, *extra, check=True):
        return subprocess.run(
            [
                sys.executable,
                script,
                "--latents",
                str(latents),
                "--spec",
                json.dumps(spec),
                "--out-dir",
                str(out),
                "--state-dir",
                str(state),
                "--threads",
                "2",
                *extra,
            ],
            capture_output=True,
            text=True,
            check=check,
        )

    train(tmp_path / "a", tmp_path / "sa")
    stopped = train(tmp_path / "b", tmp_path / "sb", "--stop-after", "3", check=False)
    assert stopped.returncode != 0 and not (tmp_path / "b" / "checkpoint.pt").exists()
    resumed = train(tmp_path / "b", tmp_path / "sb")
    assert "resumed from" in resumed.stdout
    import torch

    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
