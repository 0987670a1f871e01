"""Killed and preempted jobs: training and sampling resume to exactly what an uninterrupted job produces.

Training (``workflow/scripts/train.py``, one CPU process): SIGKILL at a seeded random step after a
checkpoint (seed ``UCGM_TEST_SEED``, default fixed, printed by every test that uses it), and SIGTERM (SLURM's preemption / time-limit signal), then the same command again; the
final checkpoint must be bitwise equal to an uninterrupted run's. Sampling
(``workflow/scripts/sample.py``): a killed or terminated job leaves nothing under the output name,
the rerun equals an uninterrupted run, and ``--skip-existing`` keeps only a complete, matching file.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import conftest

from ucgm_core.distributed import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "workflow" / "scripts" / "train.py")
SAMPLE = str(ROOT / "workflow" / "scripts" / "sample.py")
S, C, K, STEPS = 8, 1, 3, 10
SPEC = {
    "architecture": "UNet-S",
    "data": {"dataset": "toy"},
    "objective": {
        "transport": "Linear",
        "enhanced_ratio": 0.47,
        "enhanced_style": "ft-vs-fe",
        "label_drop_ratio": 0.25,
    },
    "train": {
        "steps": STEPS,
        "batch_size": 8,
        "lr": 0.001,
        "ema_decay": 0.9,
        "log_every": 1,
        "checkpoint_every": 2,
        "grid_every": 0,
    },
}
SAMPLER = json.dumps({"method": "ucgm", "options": {"extrapolation": 0.5}, "weights": "ema"})
# The kill step is drawn from this seed: fixed by default so a failure reproduces; set UCGM_TEST_SEED to
# explore other steps (every message names the seed and the step).
SEED = int(os.environ.get("UCGM_TEST_SEED", "20261203"))


def clean_env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def make_latent_dir(root: Path) -> Path:
    return conftest.make_latent_dir(root, size=S, channels=C, classes=K, seed=1)


def train_cmd(latents: Path, out: Path, state: Path) -> list:
    return [
        sys.executable,
        TRAIN,
        "--latents",
        str(latents),
        "--spec",
        json.dumps(SPEC),
        "--out-dir",
        str(out),
        "--state-dir",
        str(state),
        "--threads",
        "1",
    ]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The latents and an uninterrupted training run."""
    root = tmp_path_factory.mktemp("pre")
    latents = make_latent_dir(root)
    run = subprocess.run(train_cmd(latents, root / "a", root / "sa"), capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stdout + run.stderr
    return latents, root / "a" / "checkpoint.pt"


def assert_bitwise_equal(a_path: Path, b_path: Path) -> None:
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def run_until_step(cmd: list, step: int, sig: int) -> tuple:
    """Start ``cmd``, send ``sig`` as soon as it logs ``step <step>/``; returns (returncode, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    lines = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if re.search(rf"\bstep {step}/{STEPS}\b", line):
                assert proc.poll() is None
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + (rest or "")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_training_resumes_bitwise(straight, tmp_path, sig):
    latents, reference = straight
    kill_at = random.Random(f"{SEED}-{sig}").randint(3, STEPS - 2)  # after the step-2 checkpoint
    where = f"UCGM_TEST_SEED={SEED}: {signal.Signals(sig).name} at step {kill_at}"
    print(f"\n{where}")
    cmd = train_cmd(latents, tmp_path / "b", tmp_path / "sb")
    code, out = run_until_step(cmd, kill_at, sig)
    assert not (tmp_path / "b" / "checkpoint.pt").exists(), f"{where}\n{out}"
    state = next((tmp_path / "sb").glob("*/state.pt"))
    saved = torch.load(state, weights_only=False)["train"]["step"]
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, where
        assert 2 <= saved <= kill_at and saved % 2 == 0, (where, saved)  # the last periodic checkpoint
    else:  # the current step finishes, the state is written, distinct exit status
        assert code == PREEMPTED_EXIT_CODE, f"{where}\n{out}"
        assert saved in (kill_at, kill_at + 1), (where, saved)
        assert f"state written at step {saved}/{STEPS}" in out, f"{where}\n{out}"
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    assert resumed.returncode == 0, f"{where}\n{resumed.stdout}{resumed.stderr}"
    assert f"resumed from {state} at step {saved}/{STEPS}" in resumed.stdout, where
    print(f"\n{signal.Signals(sig).name} after step {kill_at}: resumed from step {saved}, weights bitwise equal")
    assert_bitwise_equal(reference, tmp_path / "b" / "checkpoint.pt")


# -- sampling ------------------------------------------------------------------------------------


def sample_cmd(ckpt: Path, out: Path, num: int = 64, steps: int = 4, seed: int = 0, *extra: str) -> list:
    return [
        sys.executable,
        SAMPLE,
        "--checkpoint",
        str(ckpt),
        "--spec",
        SAMPLER,
        "--steps",
        str(steps),
        "--shard",
        "0",
        "--samples-per-shard",
        str(num),
        "--num-samples",
        str(num),
        "--seed",
        str(seed),
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def images(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return z["images"]


def test_killed_sampling_leaves_nothing_and_reruns_identically(straight, tmp_path):
    _, ckpt = straight
    ref, out = tmp_path / "ref.npz", tmp_path / "out" / "shard-0000.npz"
    done = subprocess.run(sample_cmd(ckpt, ref), capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, done.stderr

    # SIGKILL while generating (a long request: 4 batches of 16 at 200 steps), then SIGTERM: nothing under
    # the output name. The event is the job's own progress line after its first batch: the job is then
    # inside generation with three batches to go, and writes nothing before the last one.
    for sig, expected in ((signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, PREEMPTED_EXIT_CODE)):
        proc = subprocess.Popen(
            sample_cmd(ckpt, out, 64, 200), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env()
        )
        seen = []
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "generated 16/64 images" in line:
                break
        assert seen and "generated 16/64 images" in seen[-1], "".join(seen)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == expected, "".join(seen) + rest
        assert not out.exists() and "generated 64/64" not in rest
    # a temporary file as a job killed while writing leaves it (its process is gone)
    stale = out.with_name(f".{out.name}.tmp{proc.pid}")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"PK\x03\x04partial")

    rerun = subprocess.run(
        sample_cmd(ckpt, out, 64, 4, 0, "--skip-existing"), capture_output=True, text=True, env=clean_env()
    )
    assert rerun.returncode == 0, rerun.stderr
    assert np.array_equal(images(ref), images(out)) and not stale.exists()

    # complete and matching: kept; another seed: recomputed; a truncated file: recomputed
    mtime = out.stat().st_mtime_ns
    kept = subprocess.run(
        sample_cmd(ckpt, out, 64, 4, 0, "--skip-existing"), capture_output=True, text=True, env=clean_env()
    )
    assert "skipped (--skip-existing)" in kept.stdout and out.stat().st_mtime_ns == mtime
    other = subprocess.run(
        sample_cmd(ckpt, out, 64, 4, 1, "--skip-existing"), capture_output=True, text=True, env=clean_env()
    )
    assert "recomputing" in other.stdout and not np.array_equal(images(ref), images(out))
    out.write_bytes(ref.read_bytes()[: ref.stat().st_size // 2])
    fixed = subprocess.run(
        sample_cmd(ckpt, out, 64, 4, 0, "--skip-existing"), capture_output=True, text=True, env=clean_env()
    )
    assert "recomputing" in fixed.stdout and np.array_equal(images(ref), images(out))
