"""Trained-toy miniatures of the paper's Fig. 2a, 2b, 2c, 3 and 4: train the models, sample, measure.

Every model is a :class:`~ucgm_core.figures_paper.toy_model.ToyMLP` trained from scratch on 2-D toy data
(``toy_data``) with the project's real UCGM-T objective (``UCGMObjective``) and sampled with the real UCGM-S
(``ucgm_sample``). A model is named by a key ``<dataset>-<transport>-l<lambda>-z<zeta>``, e.g.
``gmix-Linear-l0.5-z0``, and cached as one ``.pt`` file, shared by the figures that use it.

Objective of every toy model (the paper's multi-step settings where they apply, Table 5):
time t ~ U[0, 1], label dropout 0.1, cosine time weight, enhancement range (0, 0.75), teacher EMA 0.999,
style ``ft-vs-fe`` when zeta != 0, lambda as named (``consistency_ratio``). Two deliberate deviations, both
because the points have only 2 dimensions: the per-sample loss is the pseudo-Huber with c = 5 (close to L2;
the paper's multi-step c = 0 is a per-sample RMSE, which in 2-D regresses a conditional geometric median
rather than the mean), and there is no channel-cosine term (a cosine between two 2-vectors measures only
their direction). The lambda > 0 models of Fig. 2a and Fig. 4 are trained from scratch, as the paper's Fig. 2a
ablation compares models trained with each lambda (Fig. 4's rows are lambdas of that ablation; no shipped
config tunes to an intermediate lambda).

Fig. 3's few-step model (key suffix ``-tuned``, e.g. ``moons-Linear-l1-z1-tuned``) is instead tuned from the
lambda = 0 model of the same data, as the paper makes its few-step models (config ``fewstep``): the online
and EMA weights start from the lambda = 0 EMA, the teacher is a frozen copy of it (teacher_decay 1), the
objective is lambda = 1 with the enhanced style ``fc-vs-xz`` (the teacher's conditional prediction against
the ground truth), time_dist (0.8, 1, 1), RAdam at ``tune_lr`` for ``tune_steps`` steps, EMA ``tune_ema_decay``.
Deviation: zeta = 1 (the paper's few-step configs use 1.5, which distils guidance into the few-step model;
zeta = 1 replaces the target by the teacher's own prediction inside the enhancement range, so the tuned model
follows the unguided lambda = 0 flow that Fig. 3 compares it with).

Sampling (UCGM-S, order 1, identity time warp, end gaps (0.001, 0): N steps evaluate t = 1 - 0.999 k / N,
k = 0 .. N-1, and return x_hat of the last). The paper pairs the stochasticity rho with lambda (Table 5,
"rho = lambda best"), so Fig. 2a samples each row with rho = lambda and Fig. 3 its lambda = 1 model with rho = 1; Fig. 2b, 2c, 4
and Fig. 3's lambda = 0 model use rho = 0.
Quirk: the paper's kappa (Table 5's column, 0.5 for the VA-VAE multi-step model) is the *extrapolation*
ratio of UCGM-S (``extrapolation``), not its stochasticity; Fig. 2c varies it. UCGM-S extrapolates from the
third step on, so kappa changes nothing at 1 and 2 steps.

Metric: ``toy_data.sliced_w2`` (sliced Wasserstein-2 against as many fresh data points; its floor, two
independent data draws of 4000 points, is about 0.03), mean over ``eval_seeds`` noise and data seeds.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import pandas as pd
import torch
from torch import Tensor, nn

from ..io import atomic_torch_save
from ..sampling import ucgm_sample
from ..training.ema import EMA
from ..training.objective import UCGMConfig, UCGMObjective
from ..transports import TRANSPORTS
from .plots import COLUMNS, PAPER_FIG2A_LOG_FID
from .toy_data import DATASETS, METRIC_NAME, NUM_CLASSES, sample_dataset, sliced_w2
from .toy_model import ToyMLP

LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FIG2A_STEPS = (1, 2, 4, 8, 16)
FIG2B_TRANSPORTS = ("EDM", "TrigLinear", "Linear", "Random", "TrigFlow")
FIG2B_ZETAS = (0.45, 0.0)
FIG2B_STEPS = 32
KAPPAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FIG2C_STEPS = (1, 2, 4, 8, 16, 32)
FIG3_DATASETS = ("moons", "scurve", "swissroll")
# lambda -> (UCGM-S steps, stochasticity rho): the multi-step model walks 32 deterministic steps, the few-step
# model takes the paper's few-step sampler (2 steps, rho = lambda = 1; Table 5)
FIG3_SAMPLERS = {0.0: (32, 0.0), 1.0: (2, 1.0)}
FIG3_TUNED_ZETA = 1.0  # the fc-vs-xz enhancement ratio of Fig. 3's tuned lambda = 1 model (module docstring)
# the few-step samplers whose end points Fig. 3's log compares with the lambda = 0 end points: (steps, rho)
FIG3_GAP_SAMPLERS = ((1, 0.0), (2, 0.0), (2, 1.0))
FIG4_LAMBDAS = (0.0, 0.5, 1.0)
FIG2_DATASET = "gmix"
END_GAPS = (0.001, 0.0)
HUBER_C = 5.0
FIGURES = ("fig2a", "fig2b", "fig2c", "fig3", "fig4")
FIGURE_FILES = {
    "fig2a": "fig2a_lambda_steps",
    "fig2b": "fig2b_zeta_transport",
    "fig2c": "fig2c_kappa_steps",
    "fig3": "fig3_toy2d",
    "fig4": "fig4_xhat_per_lambda",
}
MODEL_KEY = re.compile(
    r"^(?P<dataset>[a-z]+)-(?P<transport>[A-Za-z]+)-l(?P<lam>[0-9.]+)-z(?P<zeta>[0-9.]+)(?P<tuned>-tuned)?$"
)
MODEL_KEY_PATTERN = r"[a-z]+-[A-Za-z]+-l[0-9.]+-z[0-9.]+(-tuned)?"  # for the Snakemake wildcard


@dataclass(frozen=True)
class ModelSpec:
    """What a toy model is: its data, transport, lambda (consistency ratio) and zeta (enhanced ratio), and
    whether it is tuned from the lambda = 0 model (:attr:`parent`) rather than trained from scratch."""

    dataset: str
    transport: str
    lam: float
    zeta: float
    tuned: bool = False

    @property
    def key(self) -> str:
        return f"{self.dataset}-{self.transport}-l{self.lam:g}-z{self.zeta:g}" + ("-tuned" if self.tuned else "")

    @property
    def parent(self) -> Optional["ModelSpec"]:
        """The model a tuned model starts from and keeps as its frozen teacher (lambda = 0, zeta = 0, same
        data and transport); None for a model trained from scratch."""
        return ModelSpec(self.dataset, self.transport, 0.0, 0.0) if self.tuned else None

    def objective(self) -> UCGMConfig:
        """The UCGM-T settings of this model (module docstring)."""
        style, teacher_decay, time_dist = (
            ("fc-vs-xz", 1.0, (0.8, 1.0, 1.0)) if self.tuned else ("ft-vs-fe", 0.999, (1.0, 1.0, 1.0))
        )
        return UCGMConfig(
            transport=self.transport,
            consistency_ratio=self.lam,
            enhanced_ratio=self.zeta,
            enhanced_style=style if self.zeta else None,
            enhanced_range=(0.0, 0.75),
            label_drop_ratio=0.1,
            huber_c=HUBER_C,
            teacher_decay=teacher_decay,
            time_dist=time_dist,
            weighting="Cosine",
            cosine_loss=False,
            num_classes=NUM_CLASSES[self.dataset],
        )


def parse_model_key(key: str) -> ModelSpec:
    """The :class:`ModelSpec` of a key such as ``gmix-Linear-l0.5-z0``; raises naming what is wrong."""
    m = MODEL_KEY.match(key)
    if not m:
        raise ValueError(
            f"toy model key {key!r} is malformed; expected <dataset>-<transport>-l<lambda>-z<zeta>, "
            f"e.g. 'gmix-Linear-l0.5-z0'"
        )
    spec = ModelSpec(m["dataset"], m["transport"], float(m["lam"]), float(m["zeta"]), bool(m["tuned"]))
    if spec.dataset not in DATASETS:
        raise ValueError(
            f"toy model key {key!r}: dataset {spec.dataset!r} is unknown; expected one of {sorted(DATASETS)}"
        )
    if spec.transport not in TRANSPORTS:
        raise ValueError(
            f"toy model key {key!r}: transport {spec.transport!r} is unknown; expected one of {sorted(TRANSPORTS)}"
        )
    if not 0.0 <= spec.lam <= 1.0:
        raise ValueError(f"toy model key {key!r}: lambda {spec.lam} is out of range; expected a value in [0, 1]")
    if spec.tuned and spec.lam == 0.0:
        raise ValueError(
            f"toy model key {key!r}: a tuned model needs lambda > 0 (it is tuned from the lambda = 0 model); "
            f"expected e.g. {ModelSpec(spec.dataset, spec.transport, 1.0, spec.zeta, True).key!r}"
        )
    if spec.key != key:
        raise ValueError(f"toy model key {key!r} is not canonical; expected {spec.key!r}")
    return spec


@dataclass(frozen=True)
class TrainSettings:
    """Training budget of every toy model (config ``paper_toy``)."""

    train_steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    width: int = 128
    depth: int = 3
    ema_decay: float = 0.995
    seed: int = 0
    tune_steps: int = 1000
    tune_lr: float = 1e-4
    tune_ema_decay: float = 0.99


@dataclass(frozen=True)
class EvalSettings:
    """Sampling and measuring budget of the figures (config ``paper_toy``)."""

    eval_samples: int = 4000
    eval_seeds: int = 3
    fig3_trajectories: int = 48
    fig4_points: int = 400
    fig4_steps: int = 60
    seed: int = 0


def split_settings(config: dict) -> Tuple[TrainSettings, EvalSettings]:
    """The two settings objects from the ``paper_toy`` config mapping; unknown keys are refused."""
    train_keys = set(TrainSettings.__dataclass_fields__)
    eval_keys = set(EvalSettings.__dataclass_fields__)
    unknown = sorted(set(config) - train_keys - eval_keys)
    if unknown:
        raise ValueError(
            f"paper_toy settings: unknown keys {unknown}; expected some of {sorted(train_keys | eval_keys)}"
        )
    return (
        TrainSettings(**{k: v for k, v in config.items() if k in train_keys}),
        EvalSettings(**{k: v for k, v in config.items() if k in eval_keys}),
    )


def fig3_spec(dataset: str, lam: float) -> ModelSpec:
    """Fig. 3's model of ``dataset``: the lambda = 0 model, or the lambda = 1 model tuned from it."""
    if lam == 0.0:
        return ModelSpec(dataset, "Linear", 0.0, 0.0)
    return ModelSpec(dataset, "Linear", lam, FIG3_TUNED_ZETA, tuned=True)


def figure_models(figure: str) -> List[str]:
    """The model keys a figure needs (its Snakemake inputs)."""
    if figure == "fig2a":
        specs = [ModelSpec(FIG2_DATASET, "Linear", lam, 0.0) for lam in LAMBDAS]
    elif figure == "fig2b":
        specs = [ModelSpec(FIG2_DATASET, tr, 0.0, z) for tr in FIG2B_TRANSPORTS for z in FIG2B_ZETAS]
    elif figure == "fig2c":
        specs = [ModelSpec(FIG2_DATASET, "Linear", 0.0, 0.0)]
    elif figure == "fig3":
        specs = [fig3_spec(ds, lam) for ds in FIG3_DATASETS for lam in FIG3_SAMPLERS]
    elif figure == "fig4":
        specs = [ModelSpec(FIG2_DATASET, "Linear", lam, 0.0) for lam in FIG4_LAMBDAS]
    else:
        raise ValueError(f"toy figure {figure!r} is unknown; expected one of {FIGURES}")
    return [s.key for s in specs]


# --- training ------------------------------------------------------------------------------------------


def _batches(dataset: str, batch: int, seed: int) -> Callable[[], Tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    draw = DATASETS[dataset]

    def next_batch() -> Tuple[Tensor, Tensor]:
        points, labels = draw(batch, generator)
        return points[:, :, None, None], labels

    return next_batch


def _start_from_parent(spec: ModelSpec, settings: TrainSettings, model: nn.Module, parent: Optional[dict]) -> None:
    """Load a tuned model's starting weights (the parent's EMA) into ``model``; refuses a missing or wrong parent."""
    expected = spec.parent.key
    if parent is None:
        raise ValueError(f"toy model {spec.key}: a tuned model needs its parent checkpoint {expected!r}; got none")
    if parent.get("key") != expected:
        raise ValueError(f"toy model {spec.key}: parent checkpoint holds {parent.get('key')!r}; expected {expected!r}")
    shape = {k: int(parent["settings"][k]) for k in ("width", "depth")}
    if shape != {"width": settings.width, "depth": settings.depth}:
        raise ValueError(
            f"toy model {spec.key}: parent {expected} has width/depth {shape}; expected the settings' "
            f"width={settings.width}, depth={settings.depth}"
        )
    model.load_state_dict(parent["state_dict"])


def train_model(
    spec: ModelSpec, settings: TrainSettings, log: Callable[[str], None] = print, parent: Optional[dict] = None
) -> dict:
    """Train one toy model with UCGM-T; returns the checkpoint dict (EMA weights, spec, settings, losses).

    A tuned model (``spec.tuned``) starts from ``parent`` (the checkpoint dict of ``spec.parent``), keeps it as
    its frozen teacher and runs ``tune_steps`` RAdam steps at ``tune_lr`` (module docstring); any other model
    trains ``train_steps`` Adam steps at ``lr`` from a seeded initialisation.
    Seeded: the weights, t, z and the teacher from ``settings.seed``, the data stream from ``seed + 1``."""
    torch.manual_seed(settings.seed)
    model = ToyMLP(NUM_CLASSES[spec.dataset], settings.width, settings.depth)
    objective = UCGMObjective(spec.objective(), fuse_forwards="auto")
    if spec.tuned:
        _start_from_parent(spec, settings, model, parent)
        objective.teacher.preset(model)  # frozen: teacher_decay = 1
        optimizer: torch.optim.Optimizer = torch.optim.RAdam(model.parameters(), lr=settings.tune_lr)
        steps, ema = settings.tune_steps, EMA(model, settings.tune_ema_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        steps, ema = settings.train_steps, EMA(model, settings.ema_decay)
    next_batch = _batches(spec.dataset, settings.batch_size, settings.seed + 1)
    losses: List[Tuple[int, float]] = []
    window: List[float] = []
    every = max(1, steps // 10)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        x, y = next_batch()
        out = objective(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        ema.update(model)
        window.append(float(out.loss.detach()))
        if step % every == 0 or step == steps:
            losses.append((step, sum(window) / len(window)))
            window = []
            log(f"{spec.key}: step {step}/{steps} loss {losses[-1][1]:.5f}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if not all(math.isfinite(v) for _, v in losses):
        raise RuntimeError(f"toy model {spec.key}: the training loss became non-finite ({losses[-3:]})")
    return {
        "key": spec.key,
        "spec": asdict(spec),
        "settings": asdict(settings),
        "steps": steps,
        "parent": None if spec.parent is None else spec.parent.key,
        "losses": losses,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "state_dict": ema.module.state_dict(),
    }


def save_model(checkpoint: dict, path: str | Path) -> None:
    atomic_torch_save(checkpoint, path)


def load_model(path: str | Path, key: Optional[str] = None) -> Tuple[ModelSpec, nn.Module]:
    """The spec and EMA network of a cached toy model; ``key``: the model the caller expects there."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    spec = ModelSpec(**ckpt["spec"])
    if key is not None and spec.key != key:
        raise ValueError(f"toy model file {path} holds model {spec.key!r}; expected {key!r}")
    s = ckpt["settings"]
    model = ToyMLP(NUM_CLASSES[spec.dataset], int(s["width"]), int(s["depth"]))
    model.load_state_dict(ckpt["state_dict"])
    return spec, model.eval()


# --- sampling ------------------------------------------------------------------------------------------


class _Recorder(nn.Module):
    """Wraps a network and keeps every input state (x_i, t_i) UCGM-S feeds it (Fig. 3's trajectories)."""

    def __init__(self, network: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.network = network
        self.states: List[Tuple[Tensor, float]] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.states.append((x.detach().clone(), float(t.reshape(-1)[0])))
        return self.network(x, t)


def _seeded_noise(seed: int) -> Callable[[int, Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return lambda step, like: torch.randn(like.shape, generator=generator, dtype=like.dtype)


def sample(
    model: nn.Module,
    spec: ModelSpec,
    n: int,
    seed: int,
    steps: int,
    stochasticity: float = 0.0,
    extrapolation: float = 0.0,
    trajectory: bool = False,
    record: bool = False,
):
    """UCGM-S samples of ``model`` from seeded noise, labels ``arange(n) mod K`` (the data's proportions).

    Returns ``(samples [n, 2], x_hat trajectory [M + 1, n, 2] or None, states or None, t grid)``; the
    trajectory starts with the noise (``ucgm_sample``'s ``return_trajectory``), ``states`` lists the
    sampler states (x_i, t_i) the network was evaluated at."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, 1, 1, generator=generator)
    labels = torch.arange(n, dtype=torch.int64) % NUM_CLASSES[spec.dataset]
    network = lambda x, t: model(x, t, y=labels)  # noqa: E731
    recorder = _Recorder(network) if record else None
    result = ucgm_sample(
        recorder if recorder is not None else network,
        noise,
        spec.transport,
        steps=steps,
        order=1,
        stochasticity=stochasticity,
        extrapolation=extrapolation,
        time_warp=(1.0, 1.0, 1.0),
        end_gaps=END_GAPS,
        noise_source=_seeded_noise(seed + 7919),
        return_trajectory=trajectory,
    )
    traj = result.trajectory.reshape(result.trajectory.shape[0], n, 2) if trajectory else None
    states = [(x.reshape(n, 2), t) for x, t in recorder.states] if recorder is not None else None
    return result.sample.reshape(n, 2), traj, states, result.t_grid


def distance(
    model: nn.Module,
    spec: ModelSpec,
    ev: EvalSettings,
    steps: int,
    stochasticity: float = 0.0,
    extrapolation: float = 0.0,
) -> float:
    """Mean sliced W2 between samples and fresh data over ``ev.eval_seeds`` seeds."""
    values = []
    for k in range(ev.eval_seeds):
        seed = ev.seed * 1000 + k
        points, _, _, _ = sample(model, spec, ev.eval_samples, seed, steps, stochasticity, extrapolation)
        data, _ = sample_dataset(spec.dataset, ev.eval_samples, 10_000 + seed)
        values.append(sliced_w2(points, data))
    return sum(values) / len(values)


# --- the figures' data ---------------------------------------------------------------------------------

Models = Dict[str, Tuple[ModelSpec, nn.Module]]


def fig2a_rows(models: Models, ev: EvalSettings) -> pd.DataFrame:
    """lambda x steps: sliced W2 of each lambda's model at each step count (rho = lambda)."""
    rows = []
    for lam in LAMBDAS:
        spec, model = models[ModelSpec(FIG2_DATASET, "Linear", lam, 0.0).key]
        for steps in FIG2A_STEPS:
            rows.append(
                {
                    "lambda": lam,
                    "steps": steps,
                    "metric": METRIC_NAME,
                    "value": distance(model, spec, ev, steps, stochasticity=lam),
                    "paper_log_fid": PAPER_FIG2A_LOG_FID.get((lam, steps)),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS["fig2a"])


def fig2b_rows(models: Models, ev: EvalSettings) -> pd.DataFrame:
    """Transport x zeta: sliced W2 of each lambda = 0 model at ``FIG2B_STEPS`` steps."""
    rows = []
    for transport in FIG2B_TRANSPORTS:
        for zeta in FIG2B_ZETAS:
            spec, model = models[ModelSpec(FIG2_DATASET, transport, 0.0, zeta).key]
            rows.append(
                {
                    "transport": transport,
                    "zeta": zeta,
                    "metric": METRIC_NAME,
                    "value": distance(model, spec, ev, FIG2B_STEPS),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS["fig2b"])


def fig2c_rows(models: Models, ev: EvalSettings) -> pd.DataFrame:
    """kappa (extrapolation) x steps on the lambda = 0 model, rho = 0."""
    spec, model = models[ModelSpec(FIG2_DATASET, "Linear", 0.0, 0.0).key]
    rows = [
        {
            "kappa": kappa,
            "steps": steps,
            "metric": METRIC_NAME,
            "value": distance(model, spec, ev, steps, extrapolation=kappa),
        }
        for kappa in KAPPAS
        for steps in FIG2C_STEPS
    ]
    return pd.DataFrame(rows, columns=COLUMNS["fig2c"])


def fig3_rows(models: Models, ev: EvalSettings) -> Tuple[pd.DataFrame, List[str]]:
    """Sampler trajectories of the lambda = 0 model (32 steps, rho = 0) and of the lambda = 1 model tuned from
    it (2 steps, rho = 1) from the same noise.

    Per trajectory: step 0 .. M-1 are the states the network saw (step 0 is the noise), step M the
    returned sample (t = 0). Also returns summary lines: each model's sliced W2 at its step count, and
    :func:`fig3_gap_notes`."""
    rows, notes = [], []
    for ds in FIG3_DATASETS:
        for lam, (steps, rho) in FIG3_SAMPLERS.items():
            spec, model = models[fig3_spec(ds, lam).key]
            final, _, states, _ = sample(model, spec, ev.fig3_trajectories, ev.seed, steps, rho, record=True)
            path = [(x, t) for x, t in states] + [(final, 0.0)]
            for step, (x, t) in enumerate(path):
                for j in range(ev.fig3_trajectories):
                    rows.append(
                        {
                            "dataset": ds,
                            "lambda": lam,
                            "trajectory": j,
                            "step": step,
                            "t": t,
                            "x": float(x[j, 0]),
                            "y": float(x[j, 1]),
                        }
                    )
            notes.append(
                f"fig3 {ds} lambda={lam:g} {spec.key} ({steps} steps, rho={rho:g}): {METRIC_NAME} "
                f"{distance(model, spec, ev, steps, stochasticity=rho):.4f}"
            )
        notes += fig3_gap_notes(ds, models, ev)
    return pd.DataFrame(rows, columns=COLUMNS["fig3"]), notes


def fig3_gap_notes(dataset: str, models: Models, ev: EvalSettings) -> List[str]:
    """The paper's claim "both end at nearly the same points", measured: the mean distance between the
    lambda = 0 end points (32 steps, rho = 0) and the lambda = 1 end points from the same ``eval_samples``
    noise points, for each few-step sampler of ``FIG3_GAP_SAMPLERS`` (with its sliced W2). With rho = 1 the
    second step draws fresh noise, so its end points are not a function of the starting noise alone."""
    spec0, model0 = models[fig3_spec(dataset, 0.0).key]
    steps0, rho0 = FIG3_SAMPLERS[0.0]
    ends0, _, _, _ = sample(model0, spec0, ev.eval_samples, ev.seed, steps0, rho0)
    spec1, model1 = models[fig3_spec(dataset, 1.0).key]
    notes = []
    for steps, rho in FIG3_GAP_SAMPLERS:
        ends1, _, _, _ = sample(model1, spec1, ev.eval_samples, ev.seed, steps, rho)
        gap = float((ends0 - ends1).norm(dim=1).mean())
        w2 = distance(model1, spec1, ev, steps, stochasticity=rho)
        notes.append(
            f"fig3 {dataset}: mean end-point distance lambda=0 ({steps0} steps) vs {spec1.key} ({steps} step(s), "
            f"rho={rho:g}) from the same noise {gap:.4f} ({METRIC_NAME} {w2:.4f})"
        )
    return notes


def fig4_rows(models: Models, ev: EvalSettings) -> Tuple[pd.DataFrame, List[str]]:
    """x_hat at every step of one ``fig4_steps``-step UCGM-S run (rho = 0) per lambda, same noise.

    The CSV keeps the first ``fig4_points`` points; the summary lines give the sliced W2 of x_hat against
    fresh data at a few steps, on ``eval_samples`` points."""
    rows, notes = [], []
    data, _ = sample_dataset(FIG2_DATASET, ev.eval_samples, 10_000 + ev.seed)
    for lam in FIG4_LAMBDAS:
        spec, model = models[ModelSpec(FIG2_DATASET, "Linear", lam, 0.0).key]
        _, traj, _, grid = sample(model, spec, ev.eval_samples, ev.seed, ev.fig4_steps, trajectory=True)
        x_hats = traj[1:]  # drop the initial noise; x_hats[i] is predicted at grid t_i
        keep = min(ev.fig4_points, ev.eval_samples)
        for step in range(x_hats.shape[0]):
            t = float(grid[step])
            for j in range(keep):
                rows.append(
                    {
                        "lambda": lam,
                        "step": step,
                        "t": t,
                        "sample": j,
                        "x": float(x_hats[step, j, 0]),
                        "y": float(x_hats[step, j, 1]),
                    }
                )
        marks = sorted({0, len(x_hats) // 6, len(x_hats) // 3, len(x_hats) // 2, len(x_hats) - 1})
        notes.append(
            f"fig4 lambda={lam:g}: {METRIC_NAME} of x_hat at step "
            + ", ".join(f"{s} (t={float(grid[s]):.3f}): {sliced_w2(x_hats[s], data):.4f}" for s in marks)
        )
    return pd.DataFrame(rows, columns=COLUMNS["fig4"]), notes


def figure_rows(figure: str, models: Models, ev: EvalSettings) -> Tuple[pd.DataFrame, List[str]]:
    """The CSV table of one figure and summary lines for its log."""
    if figure == "fig2a":
        df = fig2a_rows(models, ev)
        return df, [f"fig2a lambda={r['lambda']:g} steps={r['steps']}: {r['value']:.4f}" for _, r in df.iterrows()]
    if figure == "fig2b":
        df = fig2b_rows(models, ev)
        return df, [f"fig2b {r['transport']} zeta={r['zeta']:g}: {r['value']:.4f}" for _, r in df.iterrows()]
    if figure == "fig2c":
        df = fig2c_rows(models, ev)
        return df, [f"fig2c kappa={r['kappa']:g} steps={r['steps']}: {r['value']:.4f}" for _, r in df.iterrows()]
    if figure == "fig3":
        return fig3_rows(models, ev)
    if figure == "fig4":
        return fig4_rows(models, ev)
    raise ValueError(f"toy figure {figure!r} is unknown; expected one of {FIGURES}")


def load_models(paths: Iterable[str | Path]) -> Models:
    """Cached models by key, each checked against its file name (``<key>.pt``)."""
    models: Models = {}
    for path in paths:
        key = Path(path).name[: -len(".pt")] if str(path).endswith(".pt") else None
        spec, model = load_model(path, key)
        models[spec.key] = (spec, model)
    return models


def data_floor(dataset: str, ev: EvalSettings) -> float:
    """Sliced W2 between two independent data draws of ``eval_samples`` points (the metric's floor)."""
    a, _ = sample_dataset(dataset, ev.eval_samples, 20_000 + ev.seed)
    b, _ = sample_dataset(dataset, ev.eval_samples, 30_000 + ev.seed)
    return sliced_w2(a, b)


__all__ = [
    "ModelSpec",
    "TrainSettings",
    "EvalSettings",
    "parse_model_key",
    "split_settings",
    "figure_models",
    "fig3_spec",
    "train_model",
    "save_model",
    "load_model",
    "load_models",
    "sample",
    "distance",
    "figure_rows",
    "data_floor",
    "FIGURES",
    "FIGURE_FILES",
    "MODEL_KEY_PATTERN",
]
