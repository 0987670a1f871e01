"""Choose a model's EMA length after training by FID on a small sample (issue 13, item 4; EDM2 Sec. 3).

A model trained with ``train.posthoc_ema`` keeps snapshots of power-function EMAs
(:mod:`ucgm_core.training.posthoc_ema`), from which an EMA of any relative length ``sigma_rel`` is
reconstructed afterwards. :func:`select_ema_length` (the ``ema_select`` rule, config key
``models.<name>.ema_select``) reconstructs each candidate length, samples the same ``num_samples`` images
from each (image ``i`` gets seed ``per_image_seed(seed, i)`` and label ``i mod num_classes`` whatever the
candidate: common random numbers, so the FID *differences* between candidates carry much less noise than
each FID), scores them with the model's own extractor and reference (:func:`evaluate_shards`), and writes

* a CSV ``sigma_rel,fid,chosen`` (one row per candidate, in the configured order; ``chosen`` is 1 on the
  argmin, the first one on a tie),
* the figure FID versus EMA length, the choice marked and, when ``baseline`` is on, the training's own
  fixed-decay EMA (``train.ema_decay``, the model's ``checkpoint.pt``) as a horizontal line,
* the chosen reconstruction as an ordinary checkpoint (what ``sample`` then reads), and
* a JSON summary (every FID, the baseline, reconstruction residuals, settings, seconds).

The candidates' checkpoints and samples live in a temporary folder beside the chosen checkpoint and are
removed at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..checkpoint import load_checkpoint
from ..figures import atomic_savefig, pyplot
from ..io import atomic_write
from ..metrics.evaluation import ReferenceSource, evaluate_shards
from ..metrics.specs import FeatureExtractorSpec
from ..sampling.shard_writer import SamplerSpec, ShardRequest, write_shard
from .posthoc_ema import reconstruct_checkpoint

__all__ = ["Candidate", "EmaSelection", "choose", "plot_fid_vs_ema", "select_ema_length", "write_table"]

Log = Callable[[str], None]


@dataclass
class Candidate:
    """One EMA length tried: its FID and the reconstruction's relative profile residual."""

    sigma_rel: float
    fid: float
    residual: float


@dataclass
class EmaSelection:
    """What :func:`select_ema_length` found; ``chosen`` indexes ``candidates``."""

    candidates: list[Candidate]
    chosen: int
    baseline_fid: Optional[float] = None
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sigma_rel(self) -> float:
        return self.candidates[self.chosen].sigma_rel


def choose(fids: Sequence[float]) -> int:
    """Index of the smallest finite FID (the first on a tie); ``ValueError`` when none is finite."""
    finite = [(f, i) for i, f in enumerate(fids) if f is not None and math.isfinite(f)]
    if not finite:
        raise ValueError(f"ema_select: no candidate EMA length has a finite FID (got {list(fids)})")
    return min(finite)[1]


def write_table(path: os.PathLike | str, candidates: Sequence[Candidate], chosen: int) -> Path:
    """The CSV ``sigma_rel,fid,chosen`` (atomically), one row per candidate in the given order."""
    lines = ["sigma_rel,fid,chosen"]
    lines += [f"{c.sigma_rel!r},{c.fid!r},{int(i == chosen)}" for i, c in enumerate(candidates)]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return Path(path)


def plot_fid_vs_ema(
    path: os.PathLike | str,
    candidates: Sequence[Candidate],
    chosen: int,
    baseline: Optional[float] = None,
    baseline_label: str = "training's fixed-decay EMA",
    title: str = "",
) -> Path:
    """FID versus EMA length ``sigma_rel`` (PNG, atomically): the candidates as a line, the chosen one
    circled, the fixed-decay EMA's FID (``baseline``) as a dashed horizontal line when given."""
    plt = pyplot()
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].sigma_rel)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([candidates[i].sigma_rel for i in order], [candidates[i].fid for i in order], "o-", label="post-hoc EMA")
    c = candidates[chosen]
    ax.plot([c.sigma_rel], [c.fid], "o", ms=14, mfc="none", mec="C3", mew=2, label=f"chosen: {c.sigma_rel:g}")
    if baseline is not None and math.isfinite(baseline):
        ax.axhline(baseline, ls="--", color="0.4", label=f"{baseline_label} ({baseline:.1f})")
    ax.set_xlabel("EMA length sigma_rel")
    ax.set_ylabel("FID")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_savefig(fig, path)


def _fid_of(
    checkpoint: Path,
    work: Path,
    tag: str,
    request: Mapping[str, Any],
    source: ReferenceSource,
    extractor: FeatureExtractorSpec,
    log: Log,
) -> float:
    """Sample ``request``'s images from ``checkpoint`` into one shard and return their FID."""
    req = ShardRequest(checkpoint=str(checkpoint), **request["shard"])
    shard = work / f"samples-{tag}.npz"
    write_shard(req, shard, **request["write"], log=log)
    res = evaluate_shards(
        [str(shard)],
        source,
        extractor,
        metrics=["fid"],
        cache_dir=request["cache_dir"],
        out=work / f"eval-{tag}.json",
        context={"ema_select": tag},
        log=log,
    )
    return float("nan") if res.fid is None else float(res.fid)


def select_ema_length(
    checkpoint: os.PathLike | str,
    sigma_rels: Sequence[float],
    spec: SamplerSpec,
    *,
    steps: int,
    num_samples: int,
    seed: int,
    source: ReferenceSource,
    extractor: FeatureExtractorSpec,
    cache_dir: str,
    out_checkpoint: os.PathLike | str,
    out_table: os.PathLike | str,
    out_figure: os.PathLike | str,
    out_summary: os.PathLike | str,
    baseline: bool = True,
    ae_kwargs: Optional[Mapping[str, Any]] = None,
    batch_size: int = 250,
    device: str = "cpu",
    title: str = "",
    log: Log = print,
) -> EmaSelection:
    """Reconstruct each ``sigma_rels`` length from the post-hoc EMA snapshots of the run that made
    ``checkpoint`` (its ``info.state``), sample ``num_samples`` images (seed ``seed``, ``steps`` steps, sampler
    ``spec``) from each, compute their FID, and write the chosen (lowest-FID) reconstruction to
    ``out_checkpoint`` with the table, figure and summary (module docstring)."""
    if len(set(float(s) for s in sigma_rels)) != len(sigma_rels) or not sigma_rels:
        raise ValueError(
            f"ema_select.sigma_rels: expected a non-empty list of distinct lengths, got {list(sigma_rels)}"
        )
    t0 = time.time()
    out_checkpoint = Path(out_checkpoint)
    out_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    request = {
        "shard": dict(
            spec=spec,
            steps=int(steps),
            samples_per_shard=int(num_samples),
            num_samples=int(num_samples),
            shard=0,
            seed=int(seed),
        ),
        "write": dict(ae_kwargs=ae_kwargs or {}, batch_size=int(batch_size), device=device),
        "cache_dir": cache_dir,
    }
    work = Path(tempfile.mkdtemp(prefix=".ema_select-", dir=out_checkpoint.parent))
    try:
        candidates = []
        for s in sigma_rels:
            ckpt = reconstruct_checkpoint(checkpoint, float(s), work / f"ema-{float(s)!r}.pt", template=checkpoint)
            residual = float(load_checkpoint(ckpt)["info"]["posthoc_ema"]["relative_residual"])
            fid = _fid_of(ckpt, work, f"sigma_rel-{float(s)!r}", request, source, extractor, log)
            candidates.append(Candidate(float(s), fid, residual))
            log(f"ema_select: sigma_rel {float(s):g}: FID {fid:.3f} (profile residual {residual:.2e})")
        base = _fid_of(Path(checkpoint), work, "fixed", request, source, extractor, log) if baseline else None
        if base is not None:
            log(f"ema_select: the training's fixed-decay EMA ({checkpoint}): FID {base:.3f}")
        chosen = choose([c.fid for c in candidates])
        sel = EmaSelection(candidates, chosen, base, _settings(spec, steps, num_samples, seed, checkpoint))
        os.replace(work / f"ema-{sel.sigma_rel!r}.pt", out_checkpoint)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(out_table, candidates, chosen)
    plot_fid_vs_ema(out_figure, candidates, chosen, base, title=title)
    sel.seconds = time.time() - t0
    summary = {**asdict(sel), "chosen_sigma_rel": sel.sigma_rel}
    atomic_write(out_summary, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    log(f"ema_select: chose sigma_rel {sel.sigma_rel:g} (FID {candidates[chosen].fid:.3f}) in {sel.seconds:.1f}s")
    return sel


def _settings(spec: SamplerSpec, steps: int, num_samples: int, seed: int, checkpoint: os.PathLike | str) -> dict:
    """What the selection was made with, for the summary JSON."""
    return {
        "sampler": asdict(spec),
        "steps": int(steps),
        "num_samples": int(num_samples),
        "seed": int(seed),
        "checkpoint": str(checkpoint),
    }
