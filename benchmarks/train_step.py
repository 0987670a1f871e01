"""Time one UCGM-T training step on the CPU (our code only; nothing here is compared with figures
measured elsewhere).

Model: TiT(input_size=16, patch_size=2, in_channels=4, hidden_size=256, depth=4, num_heads=4,
num_classes=1000), batch 32, 2 threads. Timed step = objective + zero_grad + backward
(+ grad clip 0.1 for few-step) + NaN/Inf scrub + optimizer step + evaluation-EMA update, with the
optimizer built by the project's ``build_optimizer`` under the paper configs' names (``AdamW``, the
original's, for multi-step; ``RAdam`` for few-step; ``--optimizer`` overrides both).
3 warm-up steps, then the median of 10; --repeat reports the best repetition's median.

Variants are interleaved step by step so that load from other processes hits them alike:
``fused`` (the no-grad extra forwards share one batched call, ``UCGMObjective(fuse_forwards=True)``)
and ``separate`` (one call per extra forward, as the original and the trainer's default).

    python benchmarks/train_step.py [--repeat 3] [--steps 10] [--optimizer NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ucgm_core.models.tit import TiT
from ucgm_core.training import EMA, UCGMConfig, UCGMObjective
from ucgm_core.training.optim import build_optimizer, clip_gradients_, scrub_nonfinite_grads_

CONFIGS = {
    "a_multistep": dict(
        objective=UCGMConfig(
            transport="Linear",
            consistency_ratio=0.0,
            enhanced_ratio=0.47,
            enhanced_style="ft-vs-fe",
            huber_c=0.0,
            teacher_decay=0.999,
            time_dist=(1.0, 1.0, 1.0),
            weighting="Cosine",
            cosine_loss=True,
            num_classes=1000,
        ),
        optimizer=dict(name="AdamW", lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0),
        max_grad_norm=None,
    ),
    "b_fewstep": dict(
        objective=UCGMConfig(
            transport="Linear",
            consistency_ratio=1.0,
            enhanced_ratio=2.0,
            enhanced_style="fc-vs-xz",
            huber_c=5.0,
            teacher_decay=1.0,
            time_dist=(0.8, 1.0, 1.0),
            weighting="Cosine",
            cosine_loss=False,
            num_classes=1000,
        ),
        optimizer=dict(name="RAdam", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0),
        max_grad_norm=0.1,
    ),
}


def make_runner(name: str, fuse: bool, optimizer=None):
    spec = CONFIGS[name]
    torch.manual_seed(0)
    model = TiT(input_size=16, patch_size=2, in_channels=4, hidden_size=256, depth=4, num_heads=4, num_classes=1000)
    objective = UCGMObjective(spec["objective"], fuse_forwards=fuse)
    params = [p for p in model.parameters() if p.requires_grad]
    o = dict(spec["optimizer"], **({"name": optimizer} if optimizer else {}))
    opt = build_optimizer(params, o["name"], o["lr"], o["betas"], o["weight_decay"])
    ema = EMA(model, 0.9999)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, 16, 16, generator=g)
    y = torch.randint(0, 1000, (32,), generator=g)

    def step():
        out = objective(model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        clip_gradients_(params, spec["max_grad_norm"])
        scrub_nonfinite_grads_(params)
        opt.step()
        ema.update(model)
        return out.loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default=None, help="train.optimizer name for both configs (default: the paper's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    results = {}
    for name in CONFIGS:
        variants = {
            "fused": make_runner(name, True, args.optimizer),
            "separate": make_runner(name, False, args.optimizer),
        }
        best = {}
        for rep in range(args.repeat):
            times = {v: [] for v in variants}
            for _ in range(args.warmup):
                for run in variants.values():
                    run()
            for _ in range(args.steps):
                for v, run in variants.items():  # interleaved: both see the same machine load
                    t0 = time.perf_counter()
                    run()
                    times[v].append(time.perf_counter() - t0)
            for v, ts in times.items():
                med = statistics.median(ts)
                if v not in best or med < best[v]["median_s"]:
                    best[v] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "all_s": ts}
        results[name] = best
        f, s = best["fused"]["median_s"], best["separate"]["median_s"]
        print(f"{name}: fused {f:.3f} s  separate {s:.3f} s  fused/separate {f / s:.2f}")
    if args.json:
        optimizers = {n: args.optimizer or c["optimizer"]["name"] for n, c in CONFIGS.items()}
        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
            "machine": platform.machine(),
            "optimizers": optimizers,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
