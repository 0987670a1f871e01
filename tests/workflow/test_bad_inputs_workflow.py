"""Bad inputs at the workflow's edges: config text in shell commands, mixed sample shards, non-finite samples.

* Shell: a config whose sampler label, paper source, compile backend and local paths (data.source,
  extractor.weights, a reference batch, pretrained weights) hold ``$(touch ...)``, backticks, quotes and
  ``;``. Snakemake prints every job's shell command in a dry run; each one is then run by bash with ``python``
  replaced by a stub that records its arguments: nothing is executed and every value arrives verbatim. Then
  the real report rules run on fake evaluation results and sample shards: the label is verbatim in the table
  and in the samples figure's log, and nothing is executed.
* Shards: the evaluation refuses shards that disagree with each other or with the sampler's settings, and an
  incomplete set, naming the shards, the keys and both values.
* NaN: a model returning NaN stops ``sample.py`` with an error naming the sampler, steps, shard and count,
  and no shard file is written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = os.path.dirname(sys.executable)
SMOKE = ROOT / "config" / "smoke.yaml"
SCRIPTS = ROOT / "workflow" / "scripts"

# shell syntax that would create one of these files if it ever reached a shell unquoted
MARKERS = ("PWNED1", "PWNED2", "PWNED3", "PWNED4")
HOSTILE = "a $(touch PWNED1) `touch PWNED2` 'q' \"dq\" ; touch PWNED3 # \\ $HOME"
HOSTILE_DIR = "d $(touch PWNED4) 'x\"y` z"


def _no_markers(*folders: Path) -> None:
    for folder in folders:
        found = [str(p) for m in MARKERS for p in folder.rglob(m)]
        assert not found, f"config text was executed by a shell: {found}"


def _snakemake(workdir: Path, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [
        os.path.join(BIN, "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "1",
        *args,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=workdir)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return run


def _hostile_config(tmp: Path) -> Path:
    """The smoke config with hostile text in every free-text field and hostile local paths (all existing)."""
    d = tmp / HOSTILE_DIR
    (d / "raw").mkdir(parents=True)
    for name in ("inception.pth", "weights.pt", "ref.npz"):
        (d / name).write_bytes(b"not used by a dry run")
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["name"] = "hostile"
    cfg["data"]["source"] = str(d / "raw")
    cfg["extractor"] = {"kind": "inception", "weights": str(d / "inception.pth")}
    cfg["evaluation"]["reference_batch"] = {"source": str(d / "ref.npz")}
    cfg["models"]["released"] = {"architecture": "UNet-S", "pretrained": {"source": str(d / "weights.pt")}}
    cfg["samplers"]["ucgm"].update(label=HOSTILE, compile=HOSTILE, paper=[{"steps": 2, "fid": 1.0, "source": HOSTILE}])
    cfg["samplers"]["released"] = {"model": "released", "method": "euler", "steps": [2], "label": HOSTILE + " r"}
    cfg["tables"] = {"hostile": ["ucgm", "released"]}
    path = tmp / "hostile.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _stub_bin(tmp: Path, record: Path) -> Path:
    """A folder with ``python`` and ``torchrun`` that only append their arguments (JSON) to ``record``."""
    stub = tmp / "stub-bin"
    stub.mkdir()
    body = (
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    for name in ("python", "torchrun"):
        (stub / name).write_text(body)
        (stub / name).chmod(0o755)
    return stub


def _shell_commands(run: subprocess.CompletedProcess) -> List[str]:
    """Every job's shell command of a dry run with -p (rules with `script:` print None: no shell)."""
    found = [
        line.split("Shell command: ", 1)[1]
        for line in (run.stdout + run.stderr).splitlines()
        if line.startswith("Shell command: ")
    ]
    return [c for c in found if c != "None"]


def _value_after(argv: List[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_config_text_never_becomes_shell_syntax(tmp_path):
    config = _hostile_config(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    commands = _shell_commands(_snakemake(work, config, "-n", "-p"))
    record = tmp_path / "argv.jsonl"
    env = dict(os.environ, PATH=str(_stub_bin(tmp_path, record)) + os.pathsep + os.environ.get("PATH", ""))
    for cmd in commands:
        words = shlex.split(cmd)
        if ">" in words:  # the log's folder, as Snakemake makes it
            (work / words[words.index(">") + 1]).parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (cmd, done.stderr)
    _no_markers(tmp_path, Path.cwd())
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == len(commands)
    d = str(tmp_path / HOSTILE_DIR)
    by_script: Dict[str, List[List[str]]] = {}
    for argv in calls:
        by_script.setdefault(Path(argv[0]).name if argv[0] != "-m" else argv[1], []).append(argv)
    assert {
        "sample.py",
        "evaluate.py",
        "report.py",
        "pretrained.py",
        "extractor.py",
        "train.py",
        "shards.py",
        "latents.py",
    } <= set(by_script), sorted(by_script)
    # every value reaches its script verbatim
    rows_grid = [a for a in by_script["report.py"] if a[1] == "rows-grid"]
    labels = json.loads(_value_after(rows_grid[0], "--labels-json"))
    assert labels == [f"{HOSTILE}, 2 steps", f"{HOSTILE}, 4 steps", f"{HOSTILE} r, 2 steps"]
    table = [a for a in by_script["report.py"] if a[1] == "table"]
    rows = json.loads(_value_after(table[0], "--rows"))
    assert rows["ucgm"]["label"] == HOSTILE and rows["ucgm"]["paper"][0]["source"] == HOSTILE
    specs = [json.loads(_value_after(a, "--spec")) for a in by_script["sample.py"]]
    assert HOSTILE in [s.get("compile") for s in specs]
    assert {_value_after(a, "--raw-dir") for a in by_script["shards.py"]} == {f"{d}/raw"}
    assert _value_after(by_script["pretrained.py"][0], "--weights") == f"{d}/weights.pt"
    inception = [a for a in by_script["extractor.py"] if a[1] == "inception"]
    assert _value_after(inception[0], "--weights") == f"{d}/inception.pth"
    assert {_value_after(a, "--reference-batch") for a in by_script["evaluate.py"]} == {f"{d}/ref.npz"}


def _fake_shard(path: Path, n: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    np.savez(
        path,
        images=images,
        labels=np.arange(n) % 10,
        indices=np.arange(n),
        seeds=np.arange(n),
        meta=np.asarray(json.dumps({"method": "ucgm", "steps": 2})),
    )


def _fake_evaluation(path: Path, sampler: str, steps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "fid": 10.0 + steps,
                "num_samples": 120,
                "context": {
                    "sampler": sampler,
                    "model": "multistep",
                    "samples": {"steps": steps, "nfe": steps, "method": "ucgm"},
                },
            }
        )
    )


def test_report_rules_keep_a_hostile_label_verbatim(tmp_path):
    """The real table and figure rules on fake evaluations and shards: the label is data, never shell."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["samplers"]["ucgm"]["label"] = HOSTILE
    cfg["samplers"]["ucgm"]["paper"] = [{"steps": 2, "fid": 1.5, "source": HOSTILE}]
    config = tmp_path / "label.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    for s in cfg["tables"]["smoke"]:
        for n in cfg["samplers"][s]["steps"]:
            _fake_evaluation(work / "results" / "eval" / s / f"steps{n}.json", s, n)
            _fake_shard(work / "results" / "samples" / s / f"steps{n}" / "shard-0000.npz")
    _snakemake(work, config, "results/table_smoke.csv", "--allowed-rules", "table", "table_figure", "table_samples")
    _no_markers(tmp_path, Path.cwd())
    table = pd.read_csv(work / "results" / "table_smoke.csv")
    ucgm = table[table["sampler"] == "ucgm"]
    assert ucgm["label"].tolist() == [HOSTILE, HOSTILE]
    assert ucgm.loc[ucgm["steps"] == 2, "paper_source"].tolist() == [HOSTILE]
    log = (work / "results" / "logs" / "figures" / "smoke_samples.log").read_text()
    assert f"row {HOSTILE}, 2 steps <- results/samples/ucgm/steps2/shard-0000.npz" in log
    assert (work / "results" / "figures" / "smoke_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- sample shards of one evaluation ---------------------------------------------------------------------


def _shard(path: Path, first: int, count: int, **meta_changes) -> str:
    meta = {
        "checkpoint": "/x/checkpoint.pt",
        "checkpoint_sha256": "a" * 64,
        "method": "ucgm",
        "steps": 4,
        "options": {"extrapolation": 0.5},
        "guidance": {"scale": 0.0, "interval": [0.0, 1.0]},
        "weights": "ema",
        "quantize": "round",
        "seed": 0,
        "num_samples": 8,
        "samples_per_shard": 4,
        "precision": "fp32",
        "seed_scheme": "noise per_image_seed(seed, i), label i mod num_classes",
        "num_classes": 10,
        "shard": first // 4,
        "first_index": first,
        "count": count,
        "seconds": 1.0,
    }
    meta.update(meta_changes)
    idx = np.arange(first, first + count)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        images=np.zeros((count, 1, 4, 4), np.uint8),
        labels=idx % 10,
        indices=idx,
        seeds=idx,
        meta=np.asarray(json.dumps(meta)),
    )
    return str(path)


EXPECT = {
    "method": "ucgm",
    "steps": 4,
    "options": {"extrapolation": 0.5},
    "seed": 0,
    "num_samples": 8,
    "samples_per_shard": 4,
    "quantize": "round",
    "weights": "ema",
    "precision": "fp32",
    "guidance": {"scale": 0.0, "interval": [0.0, 1.0]},
}


def test_shards_of_another_checkpoint_or_sampler_are_refused_naming_both(tmp_path):
    from ucgm_core.metrics.sample_shards import open_sample_shards

    a = _shard(tmp_path / "shard-0000.npz", 0, 4)
    for key, value in (
        ("checkpoint_sha256", "b" * 64),
        ("method", "euler"),
        ("options", {"extrapolation": 0.3}),
        ("seed_scheme", "another scheme"),
    ):
        b = _shard(tmp_path / key / "shard-0001.npz", 4, 4, **{key: value})
        with pytest.raises(ValueError) as e:
            open_sample_shards([a, b], EXPECT)
        msg = str(e.value)
        assert b in msg and a in msg and f"differs from the first shard in {key}" in msg, msg
        assert repr(value) in msg, msg


def test_shards_not_made_with_the_configured_sampler_are_refused(tmp_path):
    from ucgm_core.metrics.sample_shards import open_sample_shards

    a = _shard(tmp_path / "x" / "shard-0000.npz", 0, 4, steps=8)
    b = _shard(tmp_path / "x" / "shard-0001.npz", 4, 4, steps=8)
    with pytest.raises(ValueError) as e:
        open_sample_shards([a, b], EXPECT, "the config")
    assert f"sample shard {a} was not made with the config: steps is 8, expected 4" in str(e.value)
    ok = [_shard(tmp_path / "y" / "shard-0000.npz", 0, 4), _shard(tmp_path / "y" / "shard-0001.npz", 4, 4)]
    assert len(open_sample_shards(ok, EXPECT)) == 8
    with pytest.raises(ValueError, match=r"hold 4 images, expected images 0\.\.7: 4 missing \(e\.g\. \[4, 5, 6\]\)"):
        open_sample_shards(ok[:1], EXPECT)


def test_evaluate_script_refuses_a_mixed_set_before_any_work(tmp_path):
    """evaluate.py samples: refused from the metadata alone (the extractor weights do not even exist)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import evaluate as evaluate_script
    finally:
        sys.path.remove(str(SCRIPTS))
    a = _shard(tmp_path / "shard-0000.npz", 0, 4, weights="online")  # consistent, but not what the config says
    b = _shard(tmp_path / "shard-0001.npz", 4, 4, weights="online")
    args = [
        "samples",
        "--shards",
        a,
        b,
        "--images",
        str(tmp_path / "nowhere"),
        "--weights",
        str(tmp_path / "none.pt"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--expect",
        json.dumps(EXPECT),
        "--out",
        str(tmp_path / "e.json"),
    ]
    with pytest.raises(
        ValueError,
        match=r"shard-0000\.npz was not made with the sampler's settings in the config "
        r"\(--expect\): weights is 'online', expected 'ema'",
    ):
        evaluate_script.main(args)
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "cache").exists()


# --- non-finite samples -------------------------------------------------------------------------------------


class _NaNNet(torch.nn.Module):
    """A class-conditional network that returns NaN for the images of odd label (so some of a batch)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        bad = (y % 2 == 1).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(bad, torch.full_like(x, float("nan")), x * self.w)


def test_generate_images_refuses_non_finite_samples():
    from ucgm_core.data.loader import LatentNormalizer
    from ucgm_core.sampling.generate import NonFiniteSamplesError, generate_images

    with pytest.raises(NonFiniteSamplesError) as e:
        generate_images(
            _NaNNet(),
            range(6),
            seed=0,
            method="euler",
            steps=3,
            transport="Linear",
            latent_shape=[1, 4, 4],
            num_classes=10,
            normalizer=LatentNormalizer(None, None, 1.0),
            decode=lambda z: (z + 1) / 2,
            batch_size=6,
        )
    msg = str(e.value)
    assert "sampler 'euler' at 3 steps gave 3 of 6 images with NaN or infinite values" in msg, msg
    assert "before decoding" in msg and "images 1, 3, 5" in msg, msg
    assert (e.value.bad, e.value.total, e.value.indices) == (3, 6, [1, 3, 5])
    # a decoder that makes infinities out of finite latents is caught after decoding
    with pytest.raises(NonFiniteSamplesError, match=r"gave 4 of 4 images with NaN or infinite values after decoding"):
        generate_images(
            _FiniteNet(),
            range(4),
            seed=0,
            method="euler",
            steps=2,
            transport="Linear",
            latent_shape=[1, 4, 4],
            num_classes=10,
            normalizer=LatentNormalizer(None, None, 1.0),
            decode=lambda z: z / 0.0,
            batch_size=4,
        )


class _FiniteNet(torch.nn.Module):
    def forward(self, x, t, y):
        return torch.zeros_like(x)


def test_sample_script_writes_no_shard_of_nan_images(tmp_path, monkeypatch):
    """sample.py with a checkpoint whose network returns NaN: an error naming the output, shard, sampler,
    steps and count; no shard file (and no temporary) is left."""
    import signal

    sys.path.insert(0, str(SCRIPTS))
    try:
        import sample as sample_script
    finally:
        sys.path.remove(str(SCRIPTS))
    from ucgm_core.data.loader import LatentNormalizer

    ckpt = {"latent_shape": [1, 4, 4], "num_classes": 10, "transport": "Linear", "autoencoder": "identity", "step": 3}
    from ucgm_core.sampling import shard_writer  # the script's one library call loads the checkpoint there

    monkeypatch.setattr(shard_writer, "load_checkpoint", lambda path: dict(ckpt))
    monkeypatch.setattr(shard_writer, "build_network", lambda c, weights: _NaNNet())
    monkeypatch.setattr(shard_writer, "checkpoint_normalizer", lambda c: LatentNormalizer(None, None, 1.0))
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"stand-in: only hashed")
    out = tmp_path / "samples" / "shard-0001.npz"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        with pytest.raises(SystemExit) as e:
            sample_script.main(
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--spec",
                    '{"method": "euler"}',
                    "--steps",
                    "3",
                    "--shard",
                    "1",
                    "--samples-per-shard",
                    "4",
                    "--num-samples",
                    "8",
                    "--batch-size",
                    "4",
                    "--device",
                    "cpu",
                    "--out",
                    str(out),
                ]
            )
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    msg = str(e.value.code)
    assert msg.startswith(f"{out}: shard 1 (images 4..7) of checkpoint {checkpoint}: "), msg
    assert "sampler 'euler' at 3 steps gave 2 of 4 images with NaN or infinite values" in msg, msg
    assert msg.endswith("nothing written"), msg
    assert not out.exists()
    assert not (out.parent.exists() and list(out.parent.iterdir())), "a temporary or partial shard was left"
