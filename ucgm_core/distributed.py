"""Process-group set-up, collectives and preemption signals for multi-process training.

One process per GPU (or per CPU worker), launched by either

* ``torchrun`` on one node: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; or
* ``srun`` across nodes: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (the tasks of this job step),
  ``SLURM_LOCALID``; the master is the first host of ``SLURM_STEP_NODELIST`` (expanded with
  ``scontrol show hostnames``, or parsed here when ``scontrol`` is missing), the port
  ``MASTER_PORT`` or one derived from ``SLURM_JOB_ID``.

Without either the run is a single process and nothing is initialised. A batch script running
under ``sbatch --ntasks=4`` but *not* through ``srun`` sees ``SLURM_NTASKS=4`` without the
step variables and is correctly treated as one process.

Backend: NCCL when CUDA is available, gloo otherwise.

Preemption: :class:`PreemptionGuard` turns SIGTERM and SIGUSR1 (SLURM's ``--signal=USR1@<sec>``
warning) into a flag that the training loop reads between steps; a run stopped that way exits
with :data:`PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "DistEnv",
    "detect_env",
    "first_slurm_host",
    "expand_first_host",
    "slurm_port",
    "default_device",
    "init_distributed",
    "cleanup",
    "is_initialized",
    "barrier",
    "all_reduce_mean",
    "any_rank",
    "PreemptionGuard",
]

PREEMPTED_EXIT_CODE = 75
"""Exit status of a run stopped by SIGTERM/SIGUSR1 after writing its state (``EX_TEMPFAIL`` of
sysexits.h: "temporary failure, retry"). Snakemake retries the job (profile ``retries``) and the
rerun continues from the state."""

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        master_addr: host of rank 0 (``None`` for a single process).
        master_port: its rendezvous port (``None`` for a single process).
        launcher: ``"torchrun"``, ``"slurm"`` or ``"single"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    launcher: str = "single"

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files)."""
        return self.rank == 0


def expand_first_host(nodelist: str) -> str:
    """The first host of a compressed SLURM node list, without ``scontrol``.

    ``"gpu[07-09,12],cpu3"`` -> ``"gpu07"``; ``"node1,node2"`` -> ``"node1"``; ``"a-[1-2]x"`` -> ``"a-1x"``.
    """
    nodelist = nodelist.strip()
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first top-level comma ends the first host group
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            end = i
            break
    group = nodelist[:end]

    def first(m: "re.Match[str]") -> str:
        return m.group(1).split(",")[0].split("-")[0]

    return re.sub(r"\[([^\]]*)\]", first, group)


def first_slurm_host(nodelist: str, scontrol: Optional[Callable[[str], List[str]]] = None) -> str:
    """The first host of ``nodelist``: ``scontrol show hostnames`` when it works, else :func:`expand_first_host`."""
    run = scontrol or _scontrol_hostnames
    try:
        hosts = run(nodelist)
        if hosts:
            return hosts[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return expand_first_host(nodelist)


def _scontrol_hostnames(nodelist: str) -> List[str]:
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [h for h in out.split() if h]


def slurm_port(environ: Mapping[str, str]) -> int:
    """``MASTER_PORT`` if set, else a port in [15000, 35000) derived from ``SLURM_JOB_ID`` (so that
    two jobs sharing a node do not collide), else :data:`DEFAULT_PORT`."""
    if environ.get("MASTER_PORT"):
        return int(environ["MASTER_PORT"])
    job = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")
    if job and job.isdigit():
        return 15000 + int(job) % 20000
    return DEFAULT_PORT


def detect_env(
    environ: Optional[Mapping[str, str]] = None, scontrol: Optional[Callable[[str], List[str]]] = None
) -> DistEnv:
    """Read the launcher's variables (torchrun first, then srun); a single process when neither is set.

    Args:
        environ: the environment (default ``os.environ``).
        scontrol: hostname expander for tests (default: run ``scontrol show hostnames``).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1") if world > 1 else None,
            master_port=int(env.get("MASTER_PORT", DEFAULT_PORT)) if world > 1 else None,
            launcher="torchrun",
        )
    step_tasks = env.get("SLURM_STEP_NUM_TASKS")
    if "SLURM_PROCID" in env and step_tasks:
        world = int(step_tasks)
        if world > 1:
            nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
            addr = env.get("MASTER_ADDR") or (first_slurm_host(nodelist, scontrol) if nodelist else "127.0.0.1")
            return DistEnv(
                rank=int(env["SLURM_PROCID"]),
                world_size=world,
                local_rank=int(env.get("SLURM_LOCALID", 0)),
                master_addr=addr,
                master_port=slurm_port(env),
                launcher="slurm",
            )
    return DistEnv()


def default_device(env: DistEnv) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def init_distributed(
    env: Optional[DistEnv] = None,
    backend: Optional[str] = None,
    device: Optional[torch.device] = None,
    timeout_s: float = 1800.0,
) -> DistEnv:
    """Initialise the default process group for ``env`` (from :func:`detect_env` when None).

    A single process returns at once. Otherwise ``MASTER_ADDR``/``MASTER_PORT`` are exported for
    the ``env://`` rendezvous, the CUDA device is set to ``local_rank`` and the group uses
    ``backend`` (default: ``nccl`` on CUDA devices, ``gloo`` otherwise).
    """
    env = env or detect_env()
    if not env.distributed or dist.is_initialized():
        return env
    device = device or default_device(env)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ["MASTER_ADDR"] = str(env.master_addr or "127.0.0.1")
    os.environ["MASTER_PORT"] = str(env.master_port or DEFAULT_PORT)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=timeout_s),
        **kwargs,
    )
    return env


def is_initialized() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    """Destroy the default process group if there is one."""
    if is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if not is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy; ``value`` itself for a single process)."""
    if not is_initialized():
        return value
    buf = value.detach().to(_collective_device(), torch.float64).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / dist.get_world_size()).to(value.device, value.dtype)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is True on at least one rank (every rank gets the same answer)."""
    if not is_initialized():
        return bool(flag)
    buf = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item())


class PreemptionGuard:
    """Records SIGTERM / SIGUSR1 instead of dying, so that the loop can finish its step and save.

    Use as a context manager (installs the handlers, restores the previous ones on exit). Inside
    a process group :meth:`should_stop` agrees across ranks: one rank receiving the signal stops
    all of them after the same step. A second signal while the flag is set is only recorded:
    SLURM follows SIGTERM with SIGKILL after ``KillWait`` anyway.

    Example::

        with PreemptionGuard() as guard:
            trainer.run(should_stop=guard.should_stop)
    """

    SIGNALS: Sequence[int] = tuple(
        s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None
    )

    def __init__(self, signals: Optional[Sequence[int]] = None):
        self.signals = tuple(self.SIGNALS if signals is None else signals)
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signum

    @property
    def requested(self) -> bool:
        """True once this process received one of the signals."""
        return self.received is not None

    @property
    def signal_name(self) -> str:
        if self.received is None:
            return ""
        return signal.Signals(self.received).name if self.received > 0 else "signal on another rank"

    def should_stop(self) -> bool:
        """The flag, agreed over all ranks (a collective: call it at the same point on every rank)."""
        stop = any_rank(self.requested)
        if stop and self.received is None:
            self.received = -1  # another rank was signalled
        return stop

    def __enter__(self) -> "PreemptionGuard":
        for s in self.signals:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave the default behaviour
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
