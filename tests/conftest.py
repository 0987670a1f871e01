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


FIXTURES = Path(__file__).resolve().parent / "fixtures"
ON_CI = os.environ.get("CI", "").lower() == "true"


def make_latent_dir(root: Path, *, size: int, channels: int, classes: int, seed: int, count: int = 40) -> Path:
    """A tiny latent folder under ``root`` (``root/img`` image shards of ``count`` random ``size`` x ``size``
    images with ``channels`` channels and labels in ``[0, classes)``, encoded by the identity autoencoder into
    ``root/lat`` with its statistics), as the training stage reads it. Same ``seed``, same bytes."""
    import numpy as np

    from ucgm_core.autoencoders import get_autoencoder
    from ucgm_core.data.datasets import ArraySource
    from ucgm_core.data.latents import compute_latent_stats, encode_split, save_latent_stats
    from ucgm_core.data.shards import write_image_shards

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, size, size, channels), dtype=np.uint8)
    write_image_shards(
        ArraySource(images, rng.integers(0, classes, size=count), classes),
        root / "img",
        "train",
        resolution=size,
        samples_per_shard=16,
        num_classes=classes,
    )
    encode_split(
        root / "img",
        root / "lat",
        "train",
        get_autoencoder("identity", channels=channels),
        batch_size=16,
        autoencoder_name="identity",
        log=lambda m: None,
    )
    save_latent_stats(root / "lat" / "stats.pt", compute_latent_stats(root / "lat", "train"))
    return root / "lat"


def require_file(path: Path, what: str = "fixture") -> Path:
    """``path`` if it is a file; otherwise the test fails naming it. The parity fixtures are part of the
    repository (tests/fixtures/README.md), so a missing one is a broken checkout, never a reason to skip."""
    if not Path(path).is_file():
        pytest.fail(f"{what} {path} is missing (tests/fixtures/README.md lists every file)", pytrace=False)
    return Path(path)


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in float32 units in the last place (0 when equal, also for +0 / -0); a NaN
    on either side gives the largest int64, so a NaN never passes an ulp bound."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        bits = x.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
        return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # monotone in the float's value

    dist = (ordered(a) - ordered(b)).abs()
    nan = torch.isnan(a) | torch.isnan(b)
    return torch.where(nan, torch.full_like(dist, torch.iinfo(torch.int64).max), dist)


def assert_ulps(actual: torch.Tensor, expected: torch.Tensor, max_ulps: int, msg: str = "") -> None:
    """``actual`` equals ``expected`` in shape and, elementwise, within ``max_ulps`` float32 ulps."""
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    dist = ulp_distance(actual, expected)
    worst = int(dist.max()) if dist.numel() else 0
    assert worst <= max_ulps, f"{msg}: {worst} ulps apart (at most {max_ulps} allowed)"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The parity fixtures made with the original implementations: tests/fixtures in this repository."""
    for sub in ("ucgm_reference", "external_models", "baseline_samplers"):
        if not (FIXTURES / sub).is_dir():
            pytest.fail(f"parity fixtures folder {FIXTURES / sub} is missing (tests/fixtures/README.md)", pytrace=False)
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    """Every test that reads tests/fixtures (the ``fixtures_dir`` fixture, directly or through another
    fixture) is a parity test: ``pytest -m parity`` selects them, e.g. to rerun them under other CPU
    kernels (``ATEN_CPU_CAPABILITY=default``, as .ci/run does)."""
    for item in items:
        if "fixtures_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.parity)
    # Tests of CUDA-only paths (marked ``cuda``) are deselected, not skipped, on a machine without CUDA: no
    # CPU machine, CI included, can have what they need, and everything they check on the CPU side is
    # tested elsewhere. ``pytest`` reports them as deselected.
    if not torch.cuda.is_available():
        cuda_only = [item for item in items if item.get_closest_marker("cuda")]
        if cuda_only:
            config.hook.pytest_deselected(items=cuda_only)
            items[:] = [item for item in items if not item.get_closest_marker("cuda")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI=true a skip is a failure: on CI every asset, dataset and service is installed by .ci/run,
    so a skip means something is missing, and the report names it. Off CI, skips stay (with -rs reasons)
    for what a user may lack (SLURM, root, the Fashion-MNIST package)."""
    outcome = yield
    report = outcome.get_result()
    if ON_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which allows no skips: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at collection (a module-level ``pytest.skip``)."""
    outcome = yield
    report = outcome.get_result()
    if ON_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true, which allows no skips: {report.longrepr}"


# ---------------------------------------------------------------------------------------------
# The smoke DAG run locally once per session: tests/workflow/test_workflow.py checks it, tests/workflow/test_slurm.py
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
    cmd = [
        os.path.join(bin_dir, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(SMOKE_CONFIG),
        "--cores",
        "2",
    ]
    start = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return SmokeRun(work, run.stdout + run.stderr, time.monotonic() - start)


def load_test_module(relpath: str):
    """The test module ``tests/<relpath>`` (another folder's helpers, e.g. ``models/test_external_integration.py``),
    imported by its path: under pytest's default import mode only the folders of collected test files are on
    ``sys.path``, so a plain import would depend on which folders a run collects."""
    import importlib
    import importlib.util

    name = Path(relpath).stem
    if name in sys.modules:  # already collected in this session: the same module object
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / relpath)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
