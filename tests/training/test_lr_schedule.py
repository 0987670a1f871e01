"""``train.lr_schedule``: the factor's closed forms, the rate the trainer sets per step, exact resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ucgm_core.training.loop import Preempted, TrainSettings
from ucgm_core.training.lr_schedule import LRSchedule

from test_training_loop import make  # the same folder, on sys.path under pytest's default import mode


def test_constant_is_one_everywhere():
    s = LRSchedule()
    assert all(s.factor(k, 10) == 1.0 for k in range(1, 11))


def test_warmup_then_linear_decay_closed_form():
    s = LRSchedule(warmup=4, decay="linear", decay_start=0.5, final=0.1)
    total = 20
    # warm-up k/4 for k <= 4; flat up to step 10 = 0.5 * 20; then 1 - 0.9 (k - 10) / 10
    expected = [min(1.0, k / 4) * (1.0 if k <= 10 else 1.0 - 0.9 * (k - 10) / 10) for k in range(1, total + 1)]
    got = [s.factor(k, total) for k in range(1, total + 1)]
    assert got == pytest.approx(expected, abs=1e-15)
    assert got[-1] == pytest.approx(0.1) and got[3] == 1.0 and got[0] == 0.25


def test_cosine_decay_is_half_a_cosine_to_final():
    s = LRSchedule(decay="cosine", final=0.0)
    total = 8
    got = [s.factor(k, total) for k in range(1, total + 1)]
    assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * k / total)) for k in range(1, total + 1)], abs=1e-15)
    assert got[-1] == pytest.approx(0.0, abs=1e-15)


def test_the_trainer_sets_the_scheduled_rate_at_each_step(tmp_path):
    trainer = make(tmp_path, 6)
    trainer.settings.lr_schedule = {"warmup": 2, "decay": "linear", "decay_start": 0.5, "final": 0.0}
    trainer.lr_schedule = LRSchedule.from_dict(trainer.settings.lr_schedule)
    rates = []
    trainer.run(on_step=lambda t: rates.append(t.optimizer.param_groups[0]["lr"]))
    assert rates == pytest.approx([1e-3 * f for f in (0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0)], rel=1e-12)


def test_no_schedule_keeps_the_rate_constant(tmp_path):
    trainer = make(tmp_path, 3)
    rates = []
    trainer.run(on_step=lambda t: rates.append(t.optimizer.param_groups[0]["lr"]))
    assert rates == [1e-3] * 3


def _scheduled(tmp_path, name):
    t = make(tmp_path, 7, name)
    t.settings.lr_schedule = {"warmup": 2, "decay": "cosine", "decay_start": 0.3, "final": 0.05}
    t.lr_schedule = LRSchedule.from_dict(t.settings.lr_schedule)
    return t


def test_resume_with_a_schedule_is_exact(tmp_path):
    straight = _scheduled(tmp_path, "a.pt")
    straight.run()
    first = _scheduled(tmp_path, "b.pt")
    with pytest.raises(Preempted):
        first.run(should_stop=lambda: first.state.step == 3)
    resumed = _scheduled(tmp_path, "b.pt")
    assert resumed.resumed and resumed.state.step == 3
    resumed.run()
    for (n, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"warmup": -1}, "warmup=-1"),
        ({"decay": "step"}, "decay='step'"),
        ({"decay_start": 1.0}, "decay_start=1.0"),
        ({"final": 2}, "final=2"),
        ({"warm_up": 3}, "unknown keys ['warm_up']"),
    ],
)
def test_bad_schedules_are_refused_by_name(bad, words):
    with pytest.raises(ValueError, match="train.lr_schedule") as e:
        TrainSettings.from_dict({"steps": 5, "batch_size": 2, "lr_schedule": bad})
    assert words in str(e.value)
