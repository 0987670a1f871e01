"""The outer loop: exact resume from the state file, gradient hygiene, EMA."""

from __future__ import annotations

import torch

from ucgm_core.models import build_model
from ucgm_core.training import UCGMConfig, UCGMObjective
from ucgm_core.training.loop import Trainer, TrainSettings
from ucgm_core.training.optim import scrub_nonfinite_grads_


class TensorLoader:
    """Seeded shuffling over an in-memory tensor, resumable (a stand-in for the latent loader)."""

    def __init__(self, x, y, batch, seed):
        self.x, self.y, self.batch, self.seed = x, y, batch, seed
        self.epoch, self.pos = 0, 0

    def _perm(self):
        return torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def next_batch(self):
        if self.pos + self.batch > len(self.x):
            self.epoch, self.pos = self.epoch + 1, 0
        idx = self._perm()[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.x[idx], self.y[idx]

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s):
        self.epoch, self.pos = s["epoch"], s["pos"]


def make(tmp_path, steps, name="state.pt"):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(123)
    model = build_model("TiT-Tiny/2", input_size=8, in_channels=1, num_classes=3)
    cfg = UCGMConfig(enhanced_ratio=0.5, enhanced_style="ft-vs-fe", num_classes=3)
    settings = TrainSettings(steps=steps, batch_size=8, lr=1e-3, ema_decay=0.9, log_every=2, checkpoint_every=3)
    return Trainer(
        model, UCGMObjective(cfg), TensorLoader(x, y, 8, seed=5), settings, tmp_path / name, log=lambda s: None
    )


def test_resume_is_exact(tmp_path):
    straight = make(tmp_path, 7, "a.pt")
    straight.run()
    first = make(tmp_path, 3, "b.pt")
    first.run()  # writes b.pt at step 3, as a killed job would have left it
    resumed = make(tmp_path, 7, "b.pt")
    assert resumed.resumed and resumed.state.step == 3
    resumed.run()
    for (n, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), n
    for a, b in zip(straight.ema.module.parameters(), resumed.ema.module.parameters()):
        assert torch.equal(a, b)
    assert straight.objective.teacher.current_decay == resumed.objective.teacher.current_decay
    assert [r[0] for r in resumed.state.losses][-1] == 7


def test_scrub_nonfinite_grads():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, float("nan"), float("inf")])
    assert scrub_nonfinite_grads_([p])
    assert torch.equal(p.grad, torch.tensor([1.0, 0.0, 0.0]))
    p.grad = torch.ones(3)
    assert not scrub_nonfinite_grads_([p])
