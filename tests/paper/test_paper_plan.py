"""The paper's tables as targets: `snakemake -n --profile profiles/slurm results/table_in1k256.csv` (and 512)
plans the full DAG at paper scale, and its rows are the rows of the paper's tables (docs: ucgm_method.md, 5).

Only ImageNet itself is swapped: the experiment files name a placeholder path, so the plan points
``data.source`` at an empty file the test makes (nothing runs; the dry run only needs it to exist).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ucgm_core.config import load_workflow

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
IMAGENET_EXPERIMENTS = [
    "in1k256_e2evavae",
    "in1k256_vavae",
    "in1k256_sdvae",
    "in1k512_sdvae",
    "in1k512_dcae",
    "in1k512_edm2",
]

# (paper NFE, paper FID) of every row of the README's three tables (ucgm_method.md 5.1-5.3), by resolution;
# acceleration rows come in pairs: the original sampler at its NFE and UCGM-S.
PAPER_ROWS = {
    "in1k256": {
        # 5.1 acceleration: REPA-E, Lightning-DiT, DDT (250x2 -> UCGM-S)
        (500, 1.26),
        (80, 1.06),
        (500, 1.35),
        (100, 1.21),
        (100, 1.27),
        # 5.2 tuning to 2 steps: Lightning-DiT, REPA, REPA-E, DDT
        (2, 2.06),
        (2, 1.95),
        (2, 1.39),
        (2, 1.90),
        # 5.3 unified training, VA-VAE: 30 steps and 2 steps
        (30, 1.21),
        (2, 1.42),
    },
    "in1k512": {
        # 5.1 acceleration: EDM2-S/L/XXL (63 NFE -> UCGM-S), DDT 512 (250x2 -> 150x2, v-old and v-new)
        (63, 2.56),
        (40, 2.53),
        (63, 2.06),
        (50, 2.04),
        (63, 1.91),
        (40, 1.88),
        (500, 1.28),
        (300, 1.24),
        (300, 1.18),
        # 5.3 unified training, DC-AE: 40 steps and 2 steps
        (40, 1.48),
        (2, 1.75),
    },
}


# The baseline of each acceleration row: the model's own sampler, named, with the original's settings (under the
# original's names), at the NFE its paper counts: (method, steps, paper NFE, settings).
BASELINE_ROWS = {
    "repae_sit_baseline": (
        "repae_sde",
        250,
        500,
        {"cfg_scale": 2.5, "guidance_low": 0.0, "guidance_high": 0.75, "path_type": "linear"},
    ),
    "lightningdit_baseline": (
        "lightningdit_euler",
        250,
        500,
        {"cfg_scale": 6.7, "cfg_interval_start": 0.125, "timestep_shift": 0.3},
    ),
    "ddt256_baseline": (
        "ddt_euler",
        250,
        500,
        {
            "guidance": 2.0,
            "guidance_interval_min": 0.3,
            "guidance_interval_max": 1.0,
            "timeshift": 1.0,
            "last_step": 0.04,
        },
    ),
    "ddt512_baseline": (
        "ddt_euler",
        250,
        500,
        {
            "guidance": 3.0,
            "guidance_interval_min": 0.3,
            "guidance_interval_max": 1.0,
            "timeshift": 1.0,
            "last_step": 0.04,
        },
    ),
    "edm2_s_baseline": ("edm2_heun", 32, 63, {"sigma_min": 0.002, "sigma_max": 80, "rho": 7, "guidance": 1}),
    "edm2_l_baseline": ("edm2_heun", 32, 63, {"sigma_min": 0.002, "sigma_max": 80, "rho": 7, "guidance": 1}),
    "edm2_xxl_baseline": ("edm2_heun", 32, 63, {"sigma_min": 0.002, "sigma_max": 80, "rho": 7, "guidance": 1}),
    "cifar10_edm_heun": ("edm_heun", 18, 35, {"sigma_min": 0.002, "sigma_max": 80, "rho": 7, "S_churn": 0}),
}


def write_imagenet_overlay(tmp: Path) -> Path:
    """A config overlay pointing the one ImageNet declaration (datasets.imagenet.source) at an empty stand-in tar
    (plans only, nothing runs)."""
    tar = tmp / "ILSVRC2012_img_train.tar"
    tar.write_bytes(b"")
    path = tmp / "overlay.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"imagenet": {"source": str(tar)}}}))
    return path


def load_with_overlay(overlay: Path):
    """The main config with ``overlay`` applied, loaded as the Snakefile does."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(yaml.safe_load(overlay.read_text()))
    return load_workflow(cfg, "config/config.yaml", base_dir=ROOT)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    return write_imagenet_overlay(tmp_path_factory.mktemp("plan"))


@pytest.fixture(scope="module")
def workflow_config(overlay):
    return load_with_overlay(overlay)


def dry_run(overlay: Path, target: str, tmp: Path) -> str:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "-n",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp),
        "--profile",
        str(ROOT / "profiles" / "slurm"),
        target,
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(overlay),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout + run.stderr


def planned(text: str) -> list:
    """Every planned job as {rule, wildcards: {...}, resources: {...}} from a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        wc = re.search(r"^\s+wildcards: (.+)$", block, re.M)
        res = re.search(r"^\s+resources: (.+)$", block, re.M)
        parse = lambda s: dict(kv.split("=", 1) for kv in s.split(", ") if "=" in kv)  # noqa: E731
        jobs.append(
            {
                "rule": m.group(1),
                "wildcards": parse(wc.group(1)) if wc else {},
                "resources": parse(res.group(1)) if res else {},
            }
        )
    return jobs


@pytest.mark.parametrize("table", ["in1k256", "in1k512"])
def test_plan_holds_every_paper_row(table, overlay, workflow_config, tmp_path):
    wf = workflow_config
    jobs = planned(dry_run(overlay, f"results/table_{table}.csv", tmp_path))
    rules = {j["rule"] for j in jobs}
    # the whole chain, from data to table: ImageNet shards, latents per VAE, released weights converted,
    # TiT-XL trained and tuned, reference batch, samples, evaluations, figures
    for rule in (
        "shards",
        "latents",
        "fetch",
        "pretrained",
        "train",
        "tune",
        "reference",
        "extractor_inception",
        "sample",
        "evaluate",
        "table",
        "table_figure",
        "table_samples",
    ):
        assert rule in rules, f"{rule} not planned for {table}"

    # ImageNet prepared by data.prep_jobs jobs side by side: K shard jobs (a range of shards each) and one merge
    # writing train.json; per autoencoder, K latent jobs (on a GPU each, checked below) and one merge writing
    # train.json and stats.pt
    k_jobs = {wf.experiments[e]["data"]["prep_jobs"] for e in wf.experiments if e.startswith(f"{table}_")}
    assert k_jobs == {32}
    parts = [f"parts/{k:04d}-of-0032/" for k in range(32)]
    assert sorted(j["wildcards"]["part"] for j in jobs if j["rule"] == "shards") == parts
    assert [j["wildcards"] for j in jobs if j["rule"] == "shards_merge"] == [
        {"data": f"imagenet_{table[len('in1k') :]}", "split": "train"}
    ]
    latent_sets = sorted(j["wildcards"]["latent_data"] for j in jobs if j["rule"] == "latents_merge")
    trained = {j["wildcards"]["model"] for j in jobs if j["rule"] in ("train", "tune")}
    assert {f"{wf.of('model', m)['data']['autoencoder']}/imagenet_{table[len('in1k') :]}" for m in trained} <= set(
        latent_sets
    )
    for latent_set in latent_sets:
        ae = latent_set.split("/")[0]
        assert (
            sorted(
                j["wildcards"]["part"] for j in jobs if j["rule"] == "latents" and j["wildcards"]["autoencoder"] == ae
            )
            == parts
        )
    assert sum(j["rule"] == "latents" for j in jobs) == 32 * len(latent_sets)

    evaluated = {(j["wildcards"]["sampler"], int(j["wildcards"]["steps"])) for j in jobs if j["rule"] == "evaluate"}
    expected = {(s, n) for s in wf.tables[table] for n in wf.samplers[s]["steps"]}
    assert evaluated == expected

    # each row of the paper's tables is one planned evaluation, with the paper's number beside it
    paper = {(p["nfe"], p["fid"]): (s, p["steps"]) for s in wf.tables[table] for p in wf.samplers[s]["paper"]}
    missing = PAPER_ROWS[table] - set(paper)
    assert not missing, f"paper rows without a planned evaluation: {sorted(missing)}"
    for key in PAPER_ROWS[table]:
        assert paper[key] in evaluated

    # paper scale: 50,000 samples (50 per class) in shards, the ADM reference batch, 8-GPU training
    for s, n in evaluated:
        ev = wf.of("sampler", s)["evaluation"]
        assert ev["num_samples"] == 50000 and wf.reference(wf.of("sampler", s))[1]["source"].endswith(".npz")
        shards = [
            j
            for j in jobs
            if j["rule"] == "sample" and j["wildcards"]["sampler"] == s and int(j["wildcards"]["steps"]) == n
        ]
        assert len(shards) == 50000 // ev["samples_per_shard"]
    for j in jobs:
        if j["rule"] in ("train", "tune"):
            spec = wf.models[j["wildcards"]["model"]]["train"]
            assert int(j["resources"]["gpu"]) == spec["gpus"] >= 1
            assert int(j["resources"]["runtime"]) == int(60 * spec["hours"])
            assert spec["batch_size"] in (512, 1024, 128)
        if j["rule"] in ("sample", "evaluate", "latents", "reference"):
            assert int(j["resources"]["gpu"]) == 1
    trained = [j["wildcards"]["model"] for j in jobs if j["rule"] == "train"]
    assert trained and all(wf.models[m]["train"]["gpus"] == 8 for m in trained)


def test_every_baseline_row_names_its_original_sampler_and_nfe(workflow_config):
    """Each acceleration row's baseline runs its original's own sampler by name (ucgm_core.sampling.originals,
    reproduced against the originals by tests/sampling/test_baseline_samplers.py), with the original's settings, at the
    NFE its paper counts (63 for EDM2's 32 Heun steps, "250 x 2" = 500, 35 for CIFAR-10); no table row uses a
    generic baseline."""
    from ucgm_core.sampling import get_sampler, original_info, paper_nfe, sampler_source
    from ucgm_core.sampling.originals import merged_options

    wf = workflow_config
    for table, rows in wf.tables.items():
        for s in rows:
            assert wf.samplers[s]["method"] not in ("euler", "heun", "euler_maruyama") or table == "fmnist", (
                f"{table}: {s} uses a generic baseline sampler"
            )
    for name, (method, steps, nfe, settings) in BASELINE_ROWS.items():
        spec = wf.samplers[name]
        sampler = get_sampler(spec["method"])
        assert spec["method"] == method and spec["steps"] == [steps], name
        assert original_info(sampler) is not None and sampler.original.repo in sampler_source(method)
        options = merged_options(sampler, spec["options"])
        assert {k: options[k] for k in settings} == settings, name
        assert spec["guidance"]["scale"] == 0  # the original's own guidance is in its options
        (paper,) = spec["paper"]
        assert paper["steps"] == steps and paper["nfe"] == nfe == paper_nfe(sampler, steps, spec["options"]), name
        tables = [t for t, rows in wf.tables.items() if name in rows]
        assert tables and all(t in ("in1k256", "in1k512", "cifar10", "readme_acceleration") for t in tables)
        for t in ("in1k256", "in1k512"):
            if name in wf.tables[t]:
                assert (nfe, paper["fid"]) in PAPER_ROWS[t], name


def test_experiments_with_the_same_data_agree_on_its_prep_jobs(overlay):
    """Shards and latents are shared by the experiments with that dataset and resolution: one data.prep_jobs."""
    from ucgm_core.config import ConfigError

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(yaml.safe_load(overlay.read_text()))
    cfg["experiment_overrides"] = {"in1k256_vavae": {"data": {"prep_jobs": 8}}}
    with pytest.raises(ConfigError, match=r"in1k256_vavae.yaml: data.prep_jobs: 8, but experiment 'in1k256_e2evavae'"):
        load_workflow(cfg, "config/config.yaml", base_dir=ROOT)


def test_experiments_are_reachable_from_the_default_config():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    wf = load_workflow(cfg, "config/config.yaml", base_dir=ROOT)
    assert {"in1k256", "in1k512", "cifar10", "readme_acceleration", "readme_tuning", "readme_unified", "fmnist"} <= set(
        wf.tables
    )
    # every sampler of an experiment is in some table, and the default's `all` is the default's own
    in_tables = {s for rows in wf.tables.values() for s in rows}
    assert set(wf.samplers) == in_tables
    assert wf.main == "fmnist"


def test_cifar10_matches_the_original_debug_config():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    wf = load_workflow(cfg, "config/config.yaml", base_dir=ROOT)
    # the debug config's run (the paper's Table 7 model, cifar10_ucgm_fewstep, is that run made longer)
    tuned = [m for m, spec in wf.models.items() if wf.experiment_of[("model", m)] == "cifar10" and spec.get("init")]
    assert sorted(tuned) == ["cifar10_edm_tuned", "cifar10_ucgm_fewstep"]
    spec = wf.models["cifar10_edm_tuned"]
    obj, train = spec["objective"], spec["train"]
    assert (obj["transport"], obj["consistency_ratio"], obj["enhanced_ratio"], obj["time_dist"]) == (
        "EDM",
        1.0,
        -0.45,
        [3.5, 3.5, 1.2],
    )
    assert (train["steps"], train["batch_size"], train["optimizer"], train["ema_decay"]) == (5000, 128, "RAdam", 0.999)
    rows = [(s, p) for s in wf.tables["cifar10"] for p in wf.samplers[s]["paper"]]
    assert any(abs(p["fid"] - 6.196598243763958) < 1e-12 and p["steps"] == 1 for _, p in rows)


def test_missing_imagenet_is_named_with_its_file_and_key(tmp_path):
    """A datasets.imagenet.source that does not exist: the plan stops, naming the file and key that declare it."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    missing = tmp_path / "no-imagenet.tar"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"datasets": {"imagenet": {"source": str(missing)}}}))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "-n",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "1",
        "results/table_in1k256.csv",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(overlay),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0
    assert f"{overlay}: datasets.imagenet.source: '{missing}' does not exist" in run.stdout + run.stderr


def test_fetch_refuses_a_file_whose_sha256_differs(tmp_path):
    """A configured checksum is checked: the fetch job fails and leaves no file under results/downloads."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    weights = tmp_path / "e2evavae_f16d32.ckpt"
    weights.write_bytes(b"not the released weights")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "experiment_overrides": {
                    "in1k256_e2evavae": {
                        "autoencoders": {"e2evavae_f16d32": {"source": str(weights), "sha256": "0" * 64}}
                    }
                }
            }
        )
    )
    target = "results/downloads/autoencoders/e2evavae_f16d32/e2evavae_f16d32.ckpt"
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "1",
        target,
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(overlay),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0
    log = tmp_path / "results" / "logs" / "fetch" / "autoencoders" / "e2evavae_f16d32" / "e2evavae_f16d32.ckpt.log"
    assert "sha256" in log.read_text().lower()
    assert not (tmp_path / target).exists()
