"""The ema_select rule for real on a tiny overlay of the smoke config (config/smoke.yaml): multistep trained
with post-hoc EMA snapshots, three candidate lengths scored by FID on 60 images, then the ucgm sampler reads
checkpoint_ema.pt and a tuned model's teacher does too (its init stays checkpoint.pt). About 150 s of CPU
(7 min of wall time on 2 loaded cores). Needs the Fashion-MNIST files of Debian's ``dataset-fashion-mnist``
(as test_workflow.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ucgm_core.checkpoint import load_checkpoint
from ucgm_core.io import sha256_file

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "smoke.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
BIN = os.path.dirname(sys.executable)
SIGMA_RELS = [0.05, 0.1, 0.2]

pytestmark = pytest.mark.skipif(
    not (FMNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


def overlay(tmp: Path) -> Path:
    """The smoke config with post-hoc EMA and ema_select on multistep, one ucgm row at 2 steps."""
    cfg = yaml.safe_load(SMOKE.read_text())
    ms = cfg["models"]["multistep"]
    ms["train"]["posthoc_ema"] = {"snapshot_every": 4}
    ms["ema_select"] = {"sigma_rels": SIGMA_RELS, "sampler": "ucgm", "steps": 2, "num_samples": 60}
    cfg["samplers"] = {"ucgm": {**cfg["samplers"]["ucgm"], "steps": [2]}, "fewstep": cfg["samplers"]["fewstep"]}
    cfg["tables"] = {"smoke": ["ucgm", "fewstep"]}
    cfg["extractor"]["train_steps"] = 20
    path = tmp / "ema_select.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, config: Path, *args: str) -> str:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1")
    cmd = [os.path.join(BIN, "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(config), "--cores", "2", "-p", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run.stdout + run.stderr


def test_ema_select_rule_and_sampling_reads_its_checkpoint(tmp_path):
    config = overlay(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    shard = "results/samples/ucgm/steps2/shard-0000.npz"
    snakemake(work, config, shard, "results/figures/multistep_fid_vs_ema.png")
    models = work / "results" / "models" / "multistep"

    table = pd.read_csv(models / "ema_select.csv")
    assert table["sigma_rel"].tolist() == SIGMA_RELS
    assert np.isfinite(table["fid"]).all() and table["fid"].nunique() == len(SIGMA_RELS)
    best = int(table["fid"].idxmin())
    assert table["chosen"].tolist() == [int(i == best) for i in range(len(SIGMA_RELS))]
    fig = work / "results" / "figures" / "multistep_fid_vs_ema.png"
    assert fig.read_bytes()[:4] == b"\x89PNG" and fig.stat().st_size > 5000
    summary = json.loads((models / "ema_select.json").read_text())
    assert summary["chosen_sigma_rel"] == SIGMA_RELS[best] and np.isfinite(summary["baseline_fid"])
    assert summary["settings"]["num_samples"] == 60 and summary["settings"]["seed"] == 1  # evaluation.seed + 1
    chosen = load_checkpoint(models / "checkpoint_ema.pt")
    assert chosen["info"]["posthoc_ema"]["sigma_rel"] == SIGMA_RELS[best]
    assert chosen["step"] == load_checkpoint(models / "checkpoint.pt")["step"] == 12
    assert (work / "results" / "benchmarks" / "ema_select" / "multistep.tsv").exists()
    assert "chose sigma_rel" in (work / "results" / "logs" / "ema_select" / "multistep.log").read_text()

    # the sampler of the model read the chosen checkpoint, not checkpoint.pt
    with np.load(work / shard) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["checkpoint_sha256"] == sha256_file(models / "checkpoint_ema.pt")
    assert meta["checkpoint_sha256"] != sha256_file(models / "checkpoint.pt")

    # a tuned model: its teacher is the chosen EMA, its init the training's checkpoint
    plan = snakemake(work, config, "-n", "results/models/fewstep/checkpoint.pt")
    assert "--init results/models/multistep/checkpoint.pt" in plan
    assert "--teacher results/models/multistep/checkpoint_ema.pt" in plan
    assert "rule ema_select" not in plan and "rule train:" not in plan  # done: nothing upstream reruns
