"""EMA length selection (models.<name>.ema_select, ucgm_core.training.ema_select): the choice is the CSV's
argmin, the chosen checkpoint is the post-hoc reconstruction of that length, and bad configs are refused by
key. The whole rule on a tiny workflow runs in tests/workflow/test_ema_select_workflow.py."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ucgm_core.checkpoint import build_network, load_checkpoint
from ucgm_core.config import ConfigError, validate_config
from ucgm_core.io import sha256_file
from ucgm_core.metrics.evaluation import EXTRACTORS, ReferenceSource
from ucgm_core.metrics.result import EvaluationResult
from ucgm_core.metrics.specs import FeatureExtractorSpec
from ucgm_core.sampling.shard_writer import SamplerSpec
from ucgm_core.training import ema_select
from ucgm_core.training.ema_select import Candidate, choose, plot_fid_vs_ema, select_ema_length, write_table
from ucgm_core.training.posthoc_ema import reconstruct_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "smoke.yaml"
SIGMA_RELS = [0.04, 0.09, 0.16, 0.25]


# -- the choice ---------------------------------------------------------------------------------------------------
def test_choose_is_the_argmin_of_finite_fids_first_on_ties():
    assert choose([3.0, 1.5, 2.0]) == 1
    assert choose([2.0, 1.0, 1.0]) == 1  # a tie goes to the first
    assert choose([math.nan, 5.0, math.inf, 4.0]) == 3
    with pytest.raises(ValueError, match="no candidate EMA length has a finite FID"):
        choose([math.nan, math.inf])


def test_table_and_figure(tmp_path):
    cands = [Candidate(0.05, 12.5, 1e-3), Candidate(0.1, 10.25, 2e-3), Candidate(0.15, 11.0, 1e-3)]
    write_table(tmp_path / "t.csv", cands, 1)
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns) == ["sigma_rel", "fid", "chosen"]
    assert table["sigma_rel"].tolist() == [0.05, 0.1, 0.15] and table["fid"].tolist() == [12.5, 10.25, 11.0]
    assert table["chosen"].tolist() == [0, 1, 0]
    png = plot_fid_vs_ema(tmp_path / "f.png", cands, 1, baseline=14.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


# -- config checks --------------------------------------------------------------------------------------------------
def _smoke(**ema_select) -> dict:
    with open(SMOKE) as f:
        cfg = yaml.safe_load(f)
    cfg["models"]["multistep"]["train"]["posthoc_ema"] = {"snapshot_every": 4}
    cfg["models"]["multistep"]["ema_select"] = {"sigma_rels": [0.05, 0.1], "sampler": "ucgm", "steps": 2, **ema_select}
    return cfg


def _problems(cfg: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "bad.yaml")
    return "\n".join(e.value.problems)


def test_good_config_gets_defaults():
    out = validate_config(_smoke(), "ok.yaml")
    sel = out["models"]["multistep"]["ema_select"]
    assert sel["num_samples"] == 500 and sel["seed"] is None and sel["baseline"] is True


def test_ema_select_without_posthoc_ema_is_refused_by_name():
    cfg = _smoke()
    del cfg["models"]["multistep"]["train"]["posthoc_ema"]
    msg = _problems(cfg)
    assert "models.multistep.ema_select: needs models.multistep.train.posthoc_ema" in msg


@pytest.mark.parametrize(
    "edit, expected",
    [
        (dict(sampler="nope"), "models.multistep.ema_select.sampler: names unknown sampler 'nope'"),
        (dict(sampler="fewstep"), "sampler 'fewstep' samples model 'fewstep'; expected a sampler of 'multistep'"),
        (dict(sigma_rels=[0.05, 0.5]), "0.5"),
        (dict(sigma_rels=[]), "sigma_rels"),
        (dict(steps=0), "steps"),
        (dict(num_samples=1), "num_samples"),
        (dict(colour="red"), "colour"),
    ],
)
def test_bad_ema_select_is_refused_by_key(edit, expected):
    msg = _problems(_smoke(**edit))
    assert expected in msg and "ema_select" in msg, msg


def test_pretrained_model_with_ema_select_is_refused():
    cfg = _smoke()
    m = cfg["models"]["multistep"]
    cfg["models"]["imported"] = {
        "architecture": m["architecture"],
        "pretrained": {"source": "weights.pt"},
        "ema_select": copy.deepcopy(m["ema_select"]),
    }
    assert "models.imported.pretrained: a pretrained model is imported, not trained; remove ema_select" in _problems(
        cfg
    )


# -- a real run: reconstruct, sample, choose --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """train.py (TiT, 8x8x1 latents, 6 steps) with post-hoc EMA snapshots every 2 steps; its checkpoint."""
    from test_preemption import TRAIN, clean_env, make_latent_dir

    tmp = tmp_path_factory.mktemp("ema_select")
    spec = {
        "architecture": "TiT-Tiny/2",
        "architecture_overrides": {"depth": 1, "hidden_size": 32},
        "data": {"dataset": "toy"},
        "objective": {"transport": "Linear", "enhanced_ratio": 0.0},
        "train": {
            "steps": 6,
            "batch_size": 8,
            "lr": 0.02,
            "ema_decay": 0.9,
            "log_every": 1,
            "checkpoint_every": 3,
            "posthoc_ema": {"sigma_rels": [0.05, 0.10], "snapshot_every": 2},
        },
    }
    args = ["--latents", str(make_latent_dir(tmp)), "--spec", json.dumps(spec), "--threads", "1"]
    args += ["--out-dir", str(tmp / "out"), "--state-dir", str(tmp / "state")]
    run = subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stdout + run.stderr
    return tmp / "out" / "checkpoint.pt"


def _fake_evaluate(calls: list):
    """Stands in for evaluate_shards: a deterministic "FID" of the shard's images (their mean brightness), so
    that the candidates differ and the argmin is known from the CSV; the sampling itself is real."""

    def evaluate(shards, source, extractor, *, metrics, cache_dir, out, context, log):
        with np.load(shards[0]) as z:
            images, meta = z["images"], json.loads(str(z["meta"]))
        calls.append({"meta": meta, "n": len(images), "metrics": list(metrics)})
        return EvaluationResult(fid=float(images.astype(np.float64).mean()))

    return evaluate


def test_selection_writes_the_argmin_reconstruction(trained, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(ema_select, "evaluate_shards", _fake_evaluate(calls))
    out = {k: tmp_path / f"sel.{ext}" for k, ext in [("table", "csv"), ("figure", "png"), ("summary", "json")]}
    sel = select_ema_length(
        trained,
        SIGMA_RELS,
        SamplerSpec(method="euler"),
        steps=2,
        num_samples=24,
        seed=7,
        source=ReferenceSource(images="unused"),
        extractor=FeatureExtractorSpec(EXTRACTORS["classifier"], "unused"),
        cache_dir=str(tmp_path / "cache"),
        out_checkpoint=tmp_path / "checkpoint_ema.pt",
        out_table=out["table"],
        out_figure=out["figure"],
        out_summary=out["summary"],
        batch_size=8,
        log=lambda s: None,
    )
    # one shard per candidate plus the fixed-decay baseline, each the same 24 seeded images
    assert len(calls) == len(SIGMA_RELS) + 1
    assert {(c["n"], c["meta"]["seed"], c["meta"]["steps"], c["meta"]["num_samples"]) for c in calls} == {
        (24, 7, 2, 24)
    }
    assert all(c["metrics"] == ["fid"] for c in calls)
    assert len({c["meta"]["checkpoint_sha256"] for c in calls}) == len(calls)

    table = pd.read_csv(out["table"])
    assert table["sigma_rel"].tolist() == SIGMA_RELS
    assert table["fid"].nunique() == len(SIGMA_RELS)  # the lengths give different samples: a real choice
    best = int(table["fid"].idxmin())
    assert table["chosen"].tolist() == [int(i == best) for i in range(len(SIGMA_RELS))]
    assert sel.sigma_rel == SIGMA_RELS[best]
    summary = json.loads(out["summary"].read_text())
    assert summary["chosen_sigma_rel"] == SIGMA_RELS[best]
    assert calls[-1]["meta"]["checkpoint_sha256"] == sha256_file(trained)  # the baseline: the fixed-decay EMA
    assert isinstance(summary["baseline_fid"], float) and sel.baseline_fid == summary["baseline_fid"]
    assert out["figure"].read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".ema_select-*"))  # the candidates' folder is removed

    # the chosen checkpoint is an ordinary checkpoint holding the reconstruction at that length
    chosen = load_checkpoint(tmp_path / "checkpoint_ema.pt")
    assert chosen["info"]["posthoc_ema"]["sigma_rel"] == SIGMA_RELS[best]
    ref = load_checkpoint(reconstruct_checkpoint(trained, SIGMA_RELS[best], tmp_path / "ref.pt", template=trained))
    got, want = build_network(chosen).state_dict(), build_network(ref).state_dict()
    assert got.keys() == want.keys()
    for name in want:  # the same float64 sum of the same snapshots: equal up to one float32 rounding
        torch.testing.assert_close(got[name], want[name], rtol=2 * torch.finfo(torch.float32).eps, atol=0)
    other = load_checkpoint(reconstruct_checkpoint(trained, SIGMA_RELS[best - 1], tmp_path / "o.pt", template=trained))
    assert any(not torch.equal(v, build_network(other).state_dict()[k]) for k, v in got.items())
