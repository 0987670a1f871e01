"""The SLURM profiles: what each job would be submitted with (no cluster needed), and a real SLURM run.

1. From dry runs with ``--profile profiles/slurm`` (and with the test overlay ``profiles/slurm-local``):
   every job that goes to the cluster is submitted with the resources and threads its rule gets in the
   profile (the sbatch line is built by the SLURM plugin's own functions, tests/slurm/sbatch_plan.py), GPU
   stages ask for GPUs, and tables, figures, grids and downloads stay local.
2. With a real SLURM cluster (tests/slurm/start_cluster.sh; CI sets UCGM_SLURM_TEST=1 after starting it):
   the smoke config through the SLURM profile, with real sbatch jobs, gives the same table values,
   bit-identical sample images and byte-identical checkpoints as the suite's local run of the smoke config
   (tests/conftest.py, shared with tests/workflow/test_workflow.py), with the same thread count for every job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "smoke.yaml"
DEFAULT = ROOT / "config" / "config.yaml"
SLURM = ROOT / "profiles" / "slurm"
SLURM_LOCAL = ROOT / "profiles" / "slurm-local"
PLAN = ROOT / "tests" / "slurm" / "sbatch_plan.py"
BIN = os.path.dirname(sys.executable)

# Rules that must run on the submitting machine (workflow/rules/cluster.smk), plus `all` (no shell).
LOCAL_RULES = {
    "download",
    "fetch",
    "extractor_inception",
    "snapshot",
    "table",
    "table_figure",
    "table_samples",
    "sampler_figure",
    "sample_grid",
    "all",
}
GPU_RULES = {"latents", "extractor_classifier", "reference", "train", "tune", "sample", "evaluate", "ema_select"}
CPU_RULES = {"shards", "pretrained"}
# train / tune take their GPU count and time limit from the config (train.gpus, train.hours; the rules'
# defaults 1 GPU and 24 / 12 hours) unless a profile overrides them
RULE_RESOURCES = {"train": {"gpu": 1, "runtime": 24 * 60}, "tune": {"gpu": 1, "runtime": 12 * 60}}


def load_profiles(*dirs: Path) -> dict:
    """The profiles' settings as Snakemake combines them: a later profile replaces a key as a whole."""
    merged: dict = {}
    for d in dirs:
        merged.update(yaml.safe_load((d / "config.yaml").read_text()))
    return merged


def evaluate(value, attempt: int = 1):
    """A resource value of the profile on the given attempt ("720 * attempt" -> 720 on the first)."""
    if isinstance(value, str):
        try:
            return eval(value, {"__builtins__": {}}, {"attempt": attempt})  # our own profile's arithmetic
        except (NameError, SyntaxError):
            return value
    return value


def env() -> dict:
    return dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def sbatch_plan(tmp: Path, config: Path, *profiles: Path) -> list[dict]:
    out = tmp / "plan.jsonl"
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    args = [
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(config),
        "--cores",
        "64",
        "--dry-run",
    ]
    for p in profiles:
        args += ["--profile", str(p)]
    run = subprocess.run(
        [sys.executable, str(PLAN), str(out), "--", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp,
        timeout=300,
    )
    assert run.returncode == 0, f"dry run failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records, "the dry run scheduled no jobs"
    return records


PROFILE_CASES = [
    pytest.param(SMOKE, (SLURM,), id="smoke-slurm"),
    pytest.param(DEFAULT, (SLURM,), id="default-slurm"),
    pytest.param(SMOKE, (SLURM, SLURM_LOCAL), id="smoke-slurm-local"),
]


@pytest.mark.parametrize("config, profiles", PROFILE_CASES)
def test_every_job_is_submitted_with_its_rules_resources(tmp_path, config, profiles):
    prof = load_profiles(*profiles)
    records = sbatch_plan(tmp_path, config, *profiles)
    set_resources, set_threads = prof["set-resources"], prof["set-threads"]
    defaults = {k: evaluate(v) for k, v in prof.get("default-resources", {}).items()}
    rules_seen = {r["rule"] for r in records}
    assert {"train", "tune", "sample", "evaluate", "table", "sample_grid"} <= rules_seen

    for r in records:
        rule, res, sbatch = r["rule"], r["resources"], r["sbatch"]
        where = f"{rule} {r['wildcards']}"
        if rule in LOCAL_RULES:
            assert r["local"] and sbatch is None, f"{where} should run locally, not be submitted"
            continue
        assert not r["local"], f"{where} would run on the submitting machine"
        assert rule in set_resources, f"{where} goes to the cluster but the profile gives it no resources"
        want = {**defaults, **RULE_RESOURCES.get(rule, {}), **{k: evaluate(v) for k, v in set_resources[rule].items()}}
        for key, value in want.items():
            assert res.get(key) == value, f"{where}: {key}={res.get(key)!r}, profile says {value!r}"
        assert r["threads"] == set_threads[rule], f"{where}: {r['threads']} threads, profile says {set_threads[rule]}"

        # The sbatch line the plugin builds from those resources.
        assert sbatch.startswith("sbatch "), sbatch
        assert f" -t {want['runtime']} " in sbatch and f" --mem {want['mem_mb']} " in sbatch, sbatch
        assert " --requeue" in sbatch, sbatch
        if rule in GPU_RULES:
            assert res["gpu"] >= 1, f"{where} is a GPU stage but asks for no GPU"
            model = want.get("gpu_model")
            gpus = f"--gpus={model}:{want['gpu']}" if model else f"--gpus={want['gpu']}"
            assert sbatch.endswith(" " + gpus), sbatch
            assert f"--cpus-per-gpu={want['cpus_per_gpu']}" in sbatch, sbatch
            assert want["cpus_per_gpu"] == set_threads[rule], f"{rule}: CPUs per GPU differ from its threads"
        else:
            assert rule in CPU_RULES, f"unexpected cluster rule {rule}"
            assert "--gpus" not in sbatch and "--gres" not in sbatch, sbatch
            assert f"--cpus-per-task={want['cpus_per_task']}" in sbatch, sbatch
        if want.get("slurm_partition"):
            assert f" -p {want['slurm_partition']}" in sbatch, sbatch


def test_profile_settings_and_rule_names():
    prof = load_profiles(SLURM)
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"  # works without slurmdbd
    assert prof["slurm-requeue"] is True and prof["retries"] >= 1 and prof["rerun-incomplete"] is True
    assert 0 < prof["slurm-init-seconds-before-status-checks"] <= 100  # MinJobAge 300 >= 3 x this
    local = load_profiles(SLURM, SLURM_LOCAL)
    assert local["slurm-init-seconds-before-status-checks"] == 2
    # Every rule named in the profiles exists (Snakemake ignores unknown names silently).
    run = subprocess.run(
        [
            os.path.join(BIN, "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--list-rules",
            "--configfile",
            str(SMOKE),
        ],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rules = set(run.stdout.split())
    for p in (prof, local):
        for key in ("set-resources", "set-threads"):
            assert set(p[key]) <= rules, (key, set(p[key]) - rules)
        assert set(p["set-resources"]) == GPU_RULES | CPU_RULES
    assert LOCAL_RULES - {"all"} <= rules
    # Every entry of profiles/slurm says why: a comment right above each top-level key.
    lines = (SLURM / "config.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z][\w-]*:", line):
            above = next((x for x in reversed(lines[:i]) if x.strip()), "")
            assert above.startswith("#"), f"profiles/slurm: no comment above {line!r}"


# ---------------------------------------------------------------------------------------------
# A real SLURM run of the smoke config
# ---------------------------------------------------------------------------------------------


def _slurm_cluster() -> tuple[bool, str]:
    """(run, reason): run when CI started the test cluster (UCGM_SLURM_TEST=1) or it answers here."""
    if os.environ.get("UCGM_SLURM_TEST") == "1":
        return True, ""
    how = "start one with `sudo bash tests/slurm/start_cluster.sh` (and set UCGM_SLURM_TEST=1)"
    if not shutil.which("sinfo"):
        return False, f"no SLURM here (sinfo not found); {how}"
    try:
        conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False, f"no SLURM cluster answers; {how}"
    if conf.returncode != 0:
        return False, f"no SLURM cluster answers (scontrol: {conf.stderr.strip()[:200]}); {how}"
    if not re.search(r"^ClusterName\s*=\s*ucgm-test\s*$", conf.stdout, re.M):
        return False, (
            "a SLURM cluster answers, but not the test cluster of tests/slurm/start_cluster.sh; "
            "set UCGM_SLURM_TEST=1 to submit the smoke jobs (GPU type 'fake') to it anyway"
        )
    return True, ""


def _run_snakemake(workdir: Path, args: list[str], timeout: float) -> tuple[str, float]:
    """Run Snakemake; on timeout stop it with SIGINT (it ignores SIGTERM while jobs run), then fail."""
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(SMOKE),
        "--cores",
        "2",
        *args,
    ]
    log = workdir.parent / f"{workdir.name}.log"
    start = time.monotonic()
    with open(log, "w") as f:
        # cwd: plain sbatch writes slurm-N.out into the current folder; keep any such file in the run's folder
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(), cwd=workdir)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs on SIGINT
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail(f"{' '.join(cmd)} did not finish in {timeout:.0f} s:\n{log.read_text()[-5000:]}")
    elapsed = time.monotonic() - start
    text = log.read_text()
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-6000:]}"
    return text, elapsed


def job_threads(log: str) -> dict:
    """{(rule, wildcards): threads} of every job a Snakemake log announces (no "threads:" line: 1)."""
    jobs = {}
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", log, re.M):
        wildcards = re.search(r"^    wildcards: (.*)$", body, re.M)
        threads = re.search(r"^    threads: (\d+)$", body, re.M)
        jobs[(rule, wildcards.group(1) if wildcards else "")] = int(threads.group(1)) if threads else 1
    return jobs


@pytest.fixture(scope="module")
def local_and_slurm(tmp_path_factory, request):
    run, reason = _slurm_cluster()
    if not run:
        pytest.skip(reason)
    if subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode != 0:
        pytest.fail("UCGM_SLURM_TEST=1 but no SLURM cluster answers sinfo (tests/slurm/start_cluster.sh)")
    # The local smoke run of the suite (tests/conftest.py: --cores 2, the rules' own threads); the SLURM run
    # gets the same threads from profiles/slurm-local (checked below): torch's CPU results can depend on them.
    local = request.getfixturevalue("smoke_local")
    slurm = tmp_path_factory.mktemp("slurm-smoke") / "work"
    slurm.mkdir()
    log, t_slurm = _run_snakemake(
        slurm, ["--profile", str(SLURM), "--profile", str(SLURM_LOCAL), "--slurm-keep-successful-logs"], timeout=1500
    )
    print(f"\nsmoke DAG: local {local.seconds:.0f} s, SLURM {t_slurm:.0f} s")
    return {
        "local": local.workdir,
        "local_log": local.log,
        "slurm": slurm,
        "log": log,
        "times": (local.seconds, t_slurm),
    }


def _smoke_counts() -> dict:
    """Jobs the smoke config makes: (sampler, steps) evaluations, sample shards, models trained from scratch."""
    cfg = yaml.safe_load(SMOKE.read_text())
    evals = sum(len(s["steps"]) for s in cfg["samplers"].values())
    ev = cfg["evaluation"]
    shards = evals * -(-ev["num_samples"] // ev["samples_per_shard"])
    trained = sum(1 for m in cfg["models"].values() if "init" not in m)
    return {"evaluate": evals, "sample": shards, "train": trained}


def test_slurm_run_submits_the_cluster_rules(local_and_slurm):
    log = local_and_slurm["log"]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", log)
    rules = {r for _, r in submitted}
    # The smoke DAG imports no released weights (pretrained); ema_select runs only for models that ask for it.
    smoke_models = yaml.safe_load(SMOKE.read_text())["models"].values()
    opt_in = set() if any(m.get("ema_select") for m in smoke_models) else {"ema_select"}
    assert rules == (GPU_RULES | CPU_RULES) - {"pretrained"} - opt_in, rules
    assert not rules & LOCAL_RULES
    counts = {r: sum(1 for _, x in submitted if x == r) for r in rules}
    expected = _smoke_counts()  # 14 sample, 7 evaluate, 2 train jobs
    assert {r: counts[r] for r in expected} == expected, counts
    # Each job's SLURM log is kept (--slurm-keep-successful-logs): the job really ran under SLURM.
    logs = list((local_and_slurm["slurm"] / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"))
    assert len(logs) == len(submitted), (len(logs), len(submitted))
    # Jobs that slurmctld still remembers (MinJobAge) got the fake GPU they asked for.
    for jobid, rule in submitted:
        show = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True, timeout=10)
        if show.returncode == 0 and "JobId=" in show.stdout:
            assert "JobState=COMPLETED" in show.stdout, show.stdout
            if rule in GPU_RULES:
                assert "gpu:fake:1" in show.stdout, show.stdout


def test_slurm_run_uses_the_local_runs_threads(local_and_slurm):
    local, slurm = job_threads(local_and_slurm["local_log"]), job_threads(local_and_slurm["log"])
    assert len(local) == 51 and set(local) == set(slurm), (sorted(local), sorted(slurm))
    differ = {job: (local[job], slurm[job]) for job in local if local[job] != slurm[job]}
    assert not differ, f"threads (local, SLURM) differ; update set-threads in profiles/slurm-local: {differ}"


def _without_paths_and_timings(value, root: Path):
    """A JSON value with timings dropped and absolute paths made relative to the run's folder."""
    if isinstance(value, dict):
        return {k: _without_paths_and_timings(v, root) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_paths_and_timings(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(root) + os.sep):
        return os.path.relpath(value, root)
    return value


def test_slurm_outputs_equal_local_outputs(local_and_slurm):
    local, slurm = local_and_slurm["local"], local_and_slurm["slurm"]
    # Table: every column, exactly (FID, IS, KID, precision, recall, hashes of the checkpoints and weights);
    # the checkpoint column holds absolute paths, equal once taken relative to each run's folder.
    a = pd.read_csv(local / "results" / "table_smoke.csv")
    b = pd.read_csv(slurm / "results" / "table_smoke.csv")
    for table, root in ((a, local), (b, slurm)):
        table["checkpoint"] = [os.path.relpath(p, root) for p in table["checkpoint"]]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # The evaluations behind it at full precision (the table keeps 6 digits), all but paths and timings.
    evals = sorted(p.relative_to(local) for p in (local / "results" / "eval").rglob("*.json"))
    assert len(evals) == _smoke_counts()["evaluate"]
    for rel in evals:
        ea, eb = (_without_paths_and_timings(json.loads((root / rel).read_text()), root) for root in (local, slurm))
        assert ea == eb, rel
    # Sample shards: images, labels, indices and seeds bit for bit. Not the .npz files themselves: zip entries
    # carry the time they were written, and the metadata the checkpoint's absolute path and the seconds
    # sampling took (compared without those two).
    shards = sorted(p.relative_to(local) for p in (local / "results" / "samples").rglob("shard-*.npz"))
    assert len(shards) == _smoke_counts()["sample"]
    for rel in shards:
        with np.load(local / rel) as za, np.load(slurm / rel) as zb:
            assert sorted(za.files) == sorted(zb.files), rel
            for key in za.files:
                x, y = za[key], zb[key]
                if key == "meta":
                    ma, mb = json.loads(str(x)), json.loads(str(y))
                    assert os.path.relpath(ma.pop("checkpoint"), local) == os.path.relpath(mb.pop("checkpoint"), slurm)
                    ma.pop("seconds", None), mb.pop("seconds", None)
                    assert ma == mb, (rel, ma, mb)
                    continue
                assert x.dtype == y.dtype and x.shape == y.shape, (rel, key)
                assert x.tobytes() == y.tobytes(), f"{rel}:{key} differs between the local and the SLURM run"
    # The models themselves, byte for byte.
    for model in ("multistep", "fewstep"):
        rel = Path("results") / "models" / model / "checkpoint.pt"
        assert (local / rel).read_bytes() == (slurm / rel).read_bytes(), rel
