"""Multi-process training: launcher detection, global-batch slicing, and 1 vs 2 processes (gloo, CPU).

The 2-process runs use ``torch.multiprocessing.spawn`` (and ``torchrun`` for the training script),
one thread per process. With ``TrainSettings.seeding = "step"`` every rank draws the global batch's
data order, t, z and label-drop mask from ``(seed, step)`` and takes its slice, so one process, two
processes and gradient accumulation must reach the same weights up to float summation order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import conftest

from ucgm_core import distributed as ud
from ucgm_core.data.loader import LatentArrays, LatentLoader
from ucgm_core.models import build_model
from ucgm_core.training import UCGMConfig, UCGMObjective
from ucgm_core.training.loop import Preempted, Trainer, TrainSettings, draw_step_inputs

ROOT = Path(__file__).resolve().parents[2]
N, C, S, K = 48, 1, 8, 3
GLOBAL_BATCH = 8
TOLERANCE = 1e-5  # max |w1 - w2| after the steps below (fp32 summation order only; observed ~1e-7)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread here too (the spawned workers use one each; 2 cores in all)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- launcher detection -------------------------------------------------------------------------


def test_single_process_without_launcher():
    assert ud.detect_env({}) == ud.DistEnv()
    # an sbatch script with 4 tasks that does not go through srun is one process
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "12", "SLURM_NODELIST": "n[1-2]"}
    assert not ud.detect_env(batch).distributed
    assert not ud.detect_env({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}).distributed


def test_torchrun_environment():
    env = ud.detect_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "4",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "h0",
            "MASTER_PORT": "1234",
            "SLURM_PROCID": "0",
            "SLURM_STEP_NUM_TASKS": "2",
        }
    )
    assert env == ud.DistEnv(3, 4, 1, "h0", 1234, "torchrun") and env.distributed and not env.is_main


def test_srun_environment():
    base = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "gpu[07-09,12]",
        "SLURM_JOB_NODELIST": "gpu[01-12]",
    }
    env = ud.detect_env(base, scontrol=lambda nl: ["gpu07", "gpu08", "gpu09", "gpu12"])
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (5, 8, 1, "slurm")
    assert env.master_addr == "gpu07" and env.master_port == 15000 + 4242 % 20000

    def no_scontrol(nodelist):
        raise FileNotFoundError("scontrol")

    assert ud.detect_env(base, scontrol=no_scontrol).master_addr == "gpu07"
    assert ud.detect_env({**base, "MASTER_PORT": "999", "MASTER_ADDR": "x"}, scontrol=no_scontrol).master_port == 999


@pytest.mark.parametrize(
    "nodelist,first",
    [
        ("node1", "node1"),
        ("node1,node2", "node1"),
        ("gpu[07-09,12],cpu3", "gpu07"),
        ("a[3,5]", "a3"),
        ("rack1-[2-4]-x", "rack1-2-x"),
        ("c[10-11]d[5-6]", "c10d5"),
    ],
)
def test_first_host_of_a_node_list(nodelist, first):
    assert ud.expand_first_host(nodelist) == first


def test_preemption_guard_records_signals():
    with ud.PreemptionGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert guard.requested and guard.should_stop() and guard.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


# -- global-batch slicing -------------------------------------------------------------------------


def toy_arrays(n=N, seed=0) -> LatentArrays:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, S, S, generator=g)
    return LatentArrays(x, x.flip(-1), torch.randint(0, K, (n,), generator=g))


def test_loader_ranks_take_contiguous_slices_of_the_global_batch():
    data = toy_arrays()
    one = LatentLoader(data, 8, seed=3)
    two = [LatentLoader(data, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(2 * len(one) + 1):  # across epoch boundaries
        x, y = next(one)
        parts = [next(loader) for loader in two]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
    # the state is the same on every rank and resumes with another number of processes
    state = json.loads(json.dumps(two[1].state_dict()))
    resumed = LatentLoader(data, 8, seed=3)
    resumed.load_state_dict(state)
    assert torch.equal(next(resumed)[0], next(one)[0])
    with pytest.raises(ValueError, match="global_batch_size"):
        LatentLoader(data, 4, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="drop_last"):
        LatentLoader(data, 4, seed=3, rank=0, world_size=2, drop_last=False)


def test_step_draws_do_not_depend_on_the_split():
    cfg = UCGMConfig(label_drop_ratio=0.25, time_dist=(0.8, 1.0, 1.0), num_classes=K)
    t, z, drop = draw_step_inputs(cfg, 7, 5, 8, (C, S, S), 0, 8)
    assert int(drop.sum()) == 2 and t.shape == (8,) and z.shape == (8, C, S, S)
    parts = [draw_step_inputs(cfg, 7, 5, 8, (C, S, S), lo, lo + 2) for lo in range(0, 8, 2)]
    for whole, sliced in zip((t, z, drop), zip(*parts)):
        assert torch.equal(whole, torch.cat(sliced))
    t2, _, _ = draw_step_inputs(cfg, 7, 6, 8, (C, S, S), 0, 8)
    assert not torch.equal(t, t2)


def test_objective_drop_mask_option():
    class Zero(torch.nn.Module):
        def forward(self, x, t, y):
            return torch.zeros_like(x)

    obj = UCGMObjective(UCGMConfig(label_drop_ratio=0.25, num_classes=K))
    x, y = torch.randn(4, C, S, S), torch.zeros(4, dtype=torch.long)
    drop = torch.tensor([True, False, False, False])
    assert obj(Zero(), x, y, drop=drop).labels.tolist() == [K, 0, 0, 0]
    assert obj(Zero(), x, y).labels.tolist() == [0, 0, 0, K]  # default rule unchanged
    with pytest.raises(ValueError, match="drop"):
        obj(Zero(), x, y, drop=torch.zeros(3, dtype=torch.bool))


# -- 1 vs 2 processes ---------------------------------------------------------------------------

OBJECTIVES = {
    "multistep": dict(enhanced_ratio=0.5, enhanced_style="ft-vs-fe", label_drop_ratio=0.25),
    "fewstep": dict(
        consistency_ratio=1.0,
        enhanced_ratio=1.5,
        enhanced_style="fc-vs-xz",
        teacher_decay=1.0,
        time_dist=(0.8, 1.0, 1.0),
        label_drop_ratio=0.25,
        cosine_loss=False,
    ),
}


def make_trainer(
    state_path, objective="multistep", steps=5, rank=0, world_size=1, micro_batch=None, checkpoint_every=100
):
    torch.manual_seed(0)
    model = build_model("UNet-S", input_size=S, in_channels=C, num_classes=K)
    # RAdam's first 5 steps (beta2 0.999) are momentum SGD: Adam's per-parameter normalisation would
    # turn float noise in gradients that are zero in exact arithmetic (biases before GroupNorm)
    # into +-lr updates, hiding the comparison
    settings = TrainSettings(
        steps=steps,
        batch_size=GLOBAL_BATCH,
        optimizer="RAdam",
        lr=0.05,
        betas=(0.9, 0.999),
        ema_decay=0.9,
        log_every=1,
        checkpoint_every=checkpoint_every,
        seeding="step",
        micro_batch=micro_batch,
        max_grad_norm=1.0,
    )  # at the zero-initialised output the cosine term's gradient is ~1e6
    loader = LatentLoader(toy_arrays(), GLOBAL_BATCH // world_size, seed=0, rank=rank, world_size=world_size)
    objective = UCGMObjective(UCGMConfig(**OBJECTIVES[objective], num_classes=K))
    return Trainer(model, objective, loader, settings, state_path, log=lambda s: None, rank=rank, world_size=world_size)


def weights(trainer) -> dict:
    from ucgm_core.training.ema import unwrap

    out = {f"model.{k}": v.detach().clone() for k, v in unwrap(trainer.model).state_dict().items()}
    out.update({f"ema.{k}": v.detach().clone() for k, v in trainer.ema.module.state_dict().items()})
    return out


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    # a tensor reduction: torch's max propagates NaN (Python's max() over floats would hide one not first)
    return float(torch.stack([(a[k].double() - b[k].double()).abs().max() for k in a]).max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = {
    "multistep": ("multistep", None),
    "fewstep": ("fewstep", None),
    "signalled": ("multistep", 2),
}  # rank 1 gets SIGUSR1 after step 2


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    env = ud.DistEnv(rank, world, rank, "127.0.0.1", port, "test")
    ud.init_distributed(env, device=torch.device("cpu"))
    try:
        for name, (objective, signal_at) in SCENARIOS.items():
            folder = Path(out_dir) / name
            folder.mkdir(exist_ok=True)
            trainer = make_trainer(folder / "state.pt", objective, rank=rank, world_size=world)
            assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)

            def on_step(tr):
                if signal_at is not None and rank == 1 and tr.state.step == signal_at:
                    os.kill(os.getpid(), signal.SIGUSR1)  # only rank 1 is signalled

            stopped = None
            with ud.PreemptionGuard() as guard:
                try:
                    trainer.run(on_step, should_stop=guard.should_stop)
                except Preempted as e:
                    stopped = e.step
            torch.save(
                {"weights": weights(trainer), "stopped": stopped, "losses": trainer.state.losses},
                folder / f"rank{rank}.pt",
            )
    finally:
        ud.cleanup()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Every 2-process scenario in one spawn (process start-up dominates): {name: [rank0, rank1]}."""
    root = tmp_path_factory.mktemp("two")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(root)), nprocs=2, join=True)
    return root, {
        name: [torch.load(root / name / f"rank{r}.pt", weights_only=False) for r in range(2)] for name in SCENARIOS
    }


@pytest.mark.parametrize("objective", ["multistep", "fewstep"])
def test_two_processes_match_one(tmp_path, objective, two_processes):
    one = make_trainer(tmp_path / "one.pt", objective)
    one.run()
    ref = weights(one)
    accumulated = make_trainer(tmp_path / "acc.pt", objective, micro_batch=2)  # 4 micro-batches per step
    accumulated.run()
    two = two_processes[1][objective]
    d_two = max_difference(ref, two[0]["weights"])
    d_ranks = max_difference(two[0]["weights"], two[1]["weights"])
    d_acc = max_difference(ref, weights(accumulated))
    print(
        f"\n[{objective}] max |w(1 proc) - w(2 procs)| = {d_two:.3g}; between ranks {d_ranks:.3g}; "
        f"1 proc vs micro-batch 2: {d_acc:.3g}"
    )
    assert d_ranks == 0.0
    assert d_two < TOLERANCE and d_acc < TOLERANCE
    # the logged loss is the global-batch mean
    assert [r[0] for r in one.state.losses] == [r[0] for r in two[0]["losses"]] == [1, 2, 3, 4, 5]
    for (_, l1, _), (_, l2, _) in zip(one.state.losses, two[0]["losses"]):
        assert abs(l1 - l2) < 1e-5


def test_signal_on_one_rank_stops_all_and_resumes_with_one_process(tmp_path, two_processes):
    root, runs = two_processes
    ranks = runs["signalled"]
    # signalled in the step-2 callback, which runs before that step's stop check: both ranks stop after step 2
    assert ranks[0]["stopped"] == ranks[1]["stopped"] == 2
    resumed = make_trainer(root / "signalled" / "state.pt")  # the state rank 0 wrote; now one process
    assert resumed.resumed and resumed.state.step == 2
    resumed.run()
    straight = make_trainer(tmp_path / "straight.pt")
    straight.run()
    d = max_difference(weights(straight), weights(resumed))
    print(f"\nmax |w(straight) - w(2 procs to step 2, then 1 proc)| = {d:.3g}")
    assert d < TOLERANCE


# -- the training script under torchrun ---------------------------------------------------------


def make_latent_dir(root: Path) -> Path:
    return conftest.make_latent_dir(root, size=S, channels=C, classes=K, seed=0)


SPEC = {
    "architecture": "UNet-S",
    "data": {"dataset": "toy"},
    "objective": {"transport": "Linear", "enhanced_ratio": 0.47, "enhanced_style": "ft-vs-fe"},
    "train": {
        "steps": 4,
        "batch_size": 8,
        "optimizer": "RAdam",
        "lr": 0.05,
        "betas": [0.9, 0.999],
        "max_grad_norm": 1.0,
        "ema_decay": 0.9,
        "log_every": 2,
        "checkpoint_every": 2,
        "grid_every": 0,
    },
}


def test_train_script_under_torchrun_matches_one_process(tmp_path):
    latents = make_latent_dir(tmp_path)
    script = str(ROOT / "workflow" / "scripts" / "train.py")
    args = ["--latents", str(latents), "--spec", json.dumps(SPEC), "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run(
        [sys.executable, script, *args, "--out-dir", str(tmp_path / "a"), "--state-dir", str(tmp_path / "sa")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert single.returncode == 0, single.stdout + single.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            script,
            *args,
            "--out-dir",
            str(tmp_path / "b"),
            "--state-dir",
            str(tmp_path / "sb"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "rank 1/2" in two.stdout and "2 processes x 4" in two.stdout
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    d = max_difference(
        {f"{p}.{k}": v for p in ("model", "ema") for k, v in a[p].items()},
        {f"{p}.{k}": v for p in ("model", "ema") for k, v in b[p].items()},
    )
    print(f"\ntrain.py: max |w(1 proc) - w(torchrun 2 procs)| = {d:.3g}")
    assert d < TOLERANCE
