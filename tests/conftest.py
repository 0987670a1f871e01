"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

TEST_THREADS = min(2, os.cpu_count() or 1)
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with the same thread count (float reductions, hence the fixtures' tolerances,
    depend on it), whatever an earlier test set."""
    torch.set_num_threads(TEST_THREADS)
    yield


def _fixtures_root() -> Path:
    env = os.environ.get("UCGM_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The reference fixtures (../shared/fixtures next to the checkout, or $UCGM_FIXTURES)."""
    root = _fixtures_root()
    if not (root / "ucgm_reference").is_dir():
        pytest.skip(f"reference fixtures not found at {root} (set UCGM_FIXTURES)")
    return root


# ---------------------------------------------------------------------------------------------
# The smoke DAG run locally once per session: tests/test_workflow.py checks it, tests/test_slurm.py
# compares a real SLURM run of the same config with it (so the suite pays for one local run, not two).
# ---------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = ROOT / "config" / "smoke.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class SmokeRun:
    workdir: Path  # the run's --directory (results/ inside)
    log: str  # Snakemake's output
    seconds: float  # wall time of the run


@pytest.fixture(scope="session")
def smoke_local(tmp_path_factory) -> SmokeRun:
    """``snakemake --configfile config/smoke.yaml --cores 2`` in a temporary folder (about 3 minutes)."""
    if not (FMNIST / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Debian dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    work = tmp_path_factory.mktemp("smoke")
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    cmd = [os.path.join(bin_dir, "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(SMOKE_CONFIG), "--cores", "2"]
    start = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return SmokeRun(work, run.stdout + run.stderr, time.monotonic() - start)
