"""Convergence: UCGM-T trains a small MLP onto a 2-D Gaussian mixture, and UCGM-S samples it at few steps.

The real pieces: :class:`UCGMObjective` (lambda = 0, then lambda = 1 tuned from the multi-step EMA, as the
paper's few-step recipe starts the student from the multi-step model), the :class:`Trainer` loop (the
project's AdamW, evaluation EMA) and :func:`ucgm_sample`. Unconditional (num_classes = 1, no label dropout),
transport Linear, data laid out as [B, 2, 1, 1] (two channels, one pixel).

Objective settings, and why: the per-sample loss is an RMSE over a sample's values; over 2 values that is a
vector norm, whose minimiser is the conditional *median* of the target, not the mean the flow needs (on
images it averages thousands of values and behaves like the MSE). A pseudo-Huber c = 20 (``huber_c``), far
above the errors' size, makes it quadratic (sqrt(m + c^2) - c ~ m / 2c), so the minimiser is the mean; Adam
is invariant to the 1/2c scale. The channel-cosine term is off for the same reason (over 2 channels it
pulls directions, not values). Observed with the RMSE and cosine term: mean errors 0.3-0.7.

Statistics of N = 8192 samples against the mixture: mean (norm of the difference), covariance (Frobenius)
and mode weights (total variation; each sample assigned to its most likely component). Error budget per
statistic: bound = 4 * (root-mean-square sampling error of N i.i.d. exact samples, computed below from the
mixture's moments) + a model allowance (the network's and the sampler's discretisation error). Four times
the RMS keeps the chance that sampling noise alone crosses the bound below 1/16 by Chebyshev, and far below
for these near-Gaussian errors. Allowances (worst of seeds 0-2 in brackets, measured while writing this):

* lambda = 0, 16 steps, evaluation EMA: mean 0.10 [0.073], covariance 0.20 [0.081], modes 0.05 [0.030];
* lambda = 1, 2 steps (stochasticity 1), evaluation EMA: mean 0.35 [0.28], covariance 0.60 [0.29],
  modes 0.09 [0.067]. (One step: covariance 0.5-1.3, not tested.)

Each test also checks that the same bounds reject what training should have changed: the untrained network
(samples ~ its input noise: mean 0.69, covariance 2.2, modes 0.14 off) and, for lambda = 1, the multi-step
model it starts from sampled at the same 2 steps (covariance 1.47-1.56 off: it needs lambda = 1).

Time (measured on 2 cores while other jobs loaded the machine, load average ~13): training lambda = 0 (400
steps of 256) 3.9 s of CPU, lambda = 1 (400 steps, 3 forwards each) 3.2 s; under that load the whole file
took 28 s of wall time (15 s and 10 s training, ~1 s sampling, the rest imports). Observed with seed 0:
lambda = 0 errors 0.039 / 0.041 / 0.014 (mean / cov / modes), lambda = 1 0.115 / 0.340 / 0.032. One torch
thread: the MLP is too small for two to help, and on a busy machine two spin-wait (measured 10x slower).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from ucgm_core.sampling import ucgm_sample
from ucgm_core.sampling.guidance import guided
from ucgm_core.training import UCGMConfig, UCGMObjective
from ucgm_core.training.loop import Trainer, TrainSettings

F64 = torch.float64
MU = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=F64)
STD = torch.tensor([0.3, 0.3, 0.3], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
N = 8192
BATCH, STEPS = 256, 400

ALLOWANCE = {
    "multistep": {"mean": 0.10, "cov": 0.20, "modes": 0.05},
    "fewstep": {"mean": 0.35, "cov": 0.60, "modes": 0.09},
}


def mixture_samples(n: int, gen: torch.Generator) -> Tensor:
    """[n, 2] float64 i.i.d. samples of the mixture."""
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=gen)
    return MU[k] + STD[k, None] * torch.randn(n, 2, generator=gen, dtype=F64)


def statistics(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean [2], covariance [2, 2], mode weights [K]) of samples [n, 2, ...]."""
    x = x.reshape(len(x), 2).to(F64)
    log_p = torch.log(WEIGHTS) - 2 * torch.log(STD) - ((x[:, None] - MU[None]) ** 2).sum(-1) / (2 * STD**2)
    modes = torch.bincount(log_p.argmax(-1), minlength=len(WEIGHTS)).to(F64) / len(x)
    return x.mean(0), torch.cov(x.T), modes


def population() -> dict[str, object]:
    """The mixture's statistics and the RMS sampling error of each for N i.i.d. samples, estimated from
    400k exact samples (a fixed seed; the estimate's own relative error is ~0.5%)."""
    x = mixture_samples(400_000, torch.Generator().manual_seed(0))
    mean, cov, modes = statistics(x)
    c = x - mean
    products = torch.stack([c[:, 0] * c[:, 0], c[:, 0] * c[:, 1], c[:, 1] * c[:, 0], c[:, 1] * c[:, 1]], 1)
    rms = {
        "mean": math.sqrt(float(torch.trace(cov)) / N),  # E|mean_N - mean|^2 = tr(cov) / N
        "cov": math.sqrt(float(products.var(0).sum()) / N),  # sum of the entries' variances
        "modes": 0.5 * float(torch.sqrt(modes * (1 - modes) / N).sum()),  # sum of the weights' RMS, halved
    }
    return {"truth": (mean, cov, modes), "rms": rms}


POP = population()


def bounds(kind: str) -> dict[str, float]:
    return {k: 4 * POP["rms"][k] + ALLOWANCE[kind][k] for k in ALLOWANCE[kind]}


def errors(samples: Tensor) -> dict[str, float]:
    mean, cov, modes = statistics(samples)
    t_mean, t_cov, t_modes = POP["truth"]
    return {
        "mean": float((mean - t_mean).norm()),
        "cov": float((cov - t_cov).norm()),
        "modes": 0.5 * float((modes - t_modes).abs().sum()),
    }


def within(err: dict[str, float], bound: dict[str, float]) -> bool:
    return all(err[k] <= bound[k] for k in bound)


class MixtureLoader:
    """Fresh mixture samples each step, drawn from (seed, step): resumable by its step count."""

    def __init__(self, batch: int, seed: int):
        self.batch, self.seed, self.k = batch, seed, 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(1_000_003 * self.seed + self.k)
        self.k += 1
        x = mixture_samples(self.batch, gen).to(torch.float32).reshape(self.batch, 2, 1, 1)
        return x, torch.zeros(self.batch, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.k = int(state["k"])


class MLP(nn.Module):
    """F(x_t, t, y) for [B, 2, 1, 1] inputs: sinusoidal time features, a label embedding (the null label
    included), three SiLU layers of 128."""

    def __init__(self, width: int = 128, num_classes: int = 1, freqs: int = 6):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(freqs, dtype=torch.float32) / 2)
        self.inp = nn.Linear(2 + 2 * freqs, width)
        self.label = nn.Embedding(num_classes + 1, width)
        self.body = nn.Sequential(
            nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        b = x.shape[0]
        a = t.reshape(b, 1).float() * self.freqs
        h = self.inp(torch.cat([x.reshape(b, 2), a.sin(), a.cos()], 1)) + self.label(y)
        return self.body(h).reshape(x.shape)


def objective(consistency_ratio: float) -> UCGMObjective:
    few = consistency_ratio > 0
    return UCGMObjective(
        UCGMConfig(
            transport="Linear",
            consistency_ratio=consistency_ratio,
            enhanced_ratio=0.0,
            label_drop_ratio=0.0,
            huber_c=20.0,
            cosine_loss=False,
            time_dist=(0.8, 1.0, 1.0) if few else (1.0, 1.0, 1.0),
            num_classes=1,
        )
    )


def train(tmp: Path, consistency_ratio: float, lr: float, init: dict[str, Tensor] | None = None) -> Trainer:
    torch.manual_seed(0)
    model = MLP()
    if init is not None:
        model.load_state_dict(init)
    settings = TrainSettings(
        steps=STEPS,
        batch_size=BATCH,
        lr=lr,
        betas=(0.9, 0.99),
        ema_decay=0.99,
        seed=0,
        log_every=STEPS,
        checkpoint_every=STEPS,
    )
    trainer = Trainer(
        model,
        objective(consistency_ratio),
        MixtureLoader(BATCH, seed=1),
        settings,
        tmp / f"state-{consistency_ratio:g}.pt",
        log=lambda s: None,
    )
    trainer.run()
    return trainer


def sample(net: nn.Module, steps: int, stochasticity: float = 0.0) -> Tensor:
    z = torch.randn(N, 2, 1, 1, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(11)  # the stochastic steps' noise
    network = guided(net.eval(), torch.zeros(N, dtype=torch.long), null_label=1)
    out = ucgm_sample(network, z, "Linear", steps=steps, stochasticity=stochasticity).sample
    assert torch.isfinite(out).all()
    return out


@pytest.fixture(scope="module")
def multistep(tmp_path_factory) -> Trainer:
    torch.set_num_threads(1)  # conftest's autouse fixture restores the count for every test
    return train(tmp_path_factory.mktemp("conv"), 0.0, lr=3e-3)


def test_multistep_lambda0_lands_on_the_data(multistep):
    torch.set_num_threads(1)
    bound = bounds("multistep")
    err = errors(sample(multistep.ema.module, steps=16))
    assert within(err, bound), f"lambda=0, 16 steps: errors {err} exceed bounds {bound}"
    untrained = errors(sample(MLP(), steps=16))
    assert not within(untrained, bound), f"an untrained MLP meets the bounds {bound}: {untrained}"
    assert untrained["cov"] > 3 * bound["cov"]


def test_fewstep_lambda1_lands_on_the_data(multistep, tmp_path):
    torch.set_num_threads(1)
    init = {k: v.clone() for k, v in multistep.ema.module.state_dict().items()}
    fewstep = train(tmp_path, 1.0, lr=3e-4, init=init)
    bound = bounds("fewstep")
    err = errors(sample(fewstep.ema.module, steps=2, stochasticity=1.0))
    assert within(err, bound), f"lambda=1, 2 steps: errors {err} exceed bounds {bound}"
    before = errors(sample(multistep.ema.module, steps=2, stochasticity=1.0))
    assert before["cov"] > bound["cov"], f"the multi-step model already meets the 2-step bounds {bound}: {before}"
    untrained = errors(sample(MLP(), steps=2, stochasticity=1.0))
    assert not within(untrained, bound), f"an untrained MLP meets the bounds {bound}: {untrained}"
