"""Time the samplers' own overhead beyond the network calls, on the CPU.

Model (benchmark spec): TiT(input_size=16, patch_size=2, in_channels=4, hidden_size=256, depth=4,
num_heads=4, num_classes=1000), official init with seed 0, batch 32 of 16x16x4 latents, 2 threads.
For every configuration the network is wrapped in a timer; overhead = (total sampling time - time
inside the network) / total. Configurations are interleaved run by run so that load from other
processes hits them alike; the statistic is the median over the timed runs (after one warm-up).
The target is an overhead below 2 %.

    python benchmarks/sampler_overhead.py [--runs 5] [--steps 16] [--write-readme]

``--write-readme`` replaces (or appends) the "## Sampler overhead" section of benchmarks/README.md,
leaving every other section alone.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

from ucgm_core.models.tit import TiT
from ucgm_core.sampling import PerImageNoise, get_sampler, guided, per_image_seeds

BATCH = 32
SHAPE = (4, 16, 16)
README = Path(__file__).resolve().parent / "README.md"
SECTION = "## Sampler overhead"

# name -> (sampler, knobs, cfg scale, per-image noise)
CONFIGS: Dict[str, Tuple[str, dict, float, bool]] = {
    "ucgm o1, k=0.5": (
        "ucgm",
        dict(order=1, extrapolation=0.5, time_warp=(1.17, 0.8, 1.1), end_gaps=(0.001, 0.001)),
        0.0,
        False,
    ),
    "ucgm o2, k=0.5": (
        "ucgm",
        dict(order=2, extrapolation=0.5, time_warp=(1.17, 0.8, 1.1), end_gaps=(0.001, 0.001)),
        0.0,
        False,
    ),
    "ucgm o1, k=0.5, s=0.5": ("ucgm", dict(order=1, extrapolation=0.5, stochasticity=0.5), 0.0, False),
    "ucgm o1, k=0.5, s=SDE, per-image noise": (
        "ucgm",
        dict(order=1, extrapolation=0.5, stochasticity="SDE"),
        0.0,
        True,
    ),
    "ucgm o2, k=0.5, s=0.5, per-image noise": (
        "ucgm",
        dict(order=2, extrapolation=0.5, stochasticity=0.5, end_gaps=(0.001, 0.001)),
        0.0,
        True,
    ),
    "ucgm o1, k=0.5, cfg 1.5": (
        "ucgm",
        dict(order=1, extrapolation=0.5, time_warp=(1.17, 0.8, 1.1), end_gaps=(0.001, 0.001)),
        1.5,
        False,
    ),
    "euler": ("euler", {}, 0.0, False),
    "heun": ("heun", {}, 0.0, False),
    "euler_maruyama": ("euler_maruyama", {}, 0.0, False),
}


class TimedNetwork:
    """Wraps a sampler network and accumulates the wall time spent inside it."""

    def __init__(self, network: Callable):
        self.network = network
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x, t):
        start = time.perf_counter()
        out = self.network(x, t)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run_once(model: TiT, name: str, steps: int, seed: int) -> Tuple[float, float, int]:
    """One sampling run: (total s, network s, NFE)."""
    sampler, knobs, cfg, per_image = CONFIGS[name]
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 1000, (BATCH,), generator=gen)
    if per_image:
        source = PerImageNoise(per_image_seeds(seed, range(BATCH)), SHAPE)
        noise, kwargs = source.initial(), dict(noise_source=source)
    else:
        noise, kwargs = torch.randn((BATCH, *SHAPE), generator=gen), {}
    net = TimedNetwork(guided(model, labels, 1000, cfg, (0.0, 0.75)))
    start = time.perf_counter()
    res = get_sampler(sampler)(net, noise, "Linear", steps=steps, **knobs, **kwargs)
    total = time.perf_counter() - start
    assert net.calls == res.nfe
    return total, net.seconds, res.nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per configuration")
    parser.add_argument("--steps", type=int, default=16, help="sampling steps N")
    parser.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = TiT(
        input_size=16, patch_size=2, in_channels=4, hidden_size=256, depth=4, num_heads=4, num_classes=1000
    ).eval()

    results: Dict[str, List[Tuple[float, float, int]]] = {name: [] for name in CONFIGS}
    for name in CONFIGS:  # warm-up
        run_once(model, name, args.steps, seed=0)
    for r in range(args.runs):  # interleaved
        for name in CONFIGS:
            results[name].append(run_once(model, name, args.steps, seed=r + 1))

    header = "| sampler | NFE | total (s) | in network (s) | overhead (ms) | overhead % |"
    lines = [header, "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        inside = statistics.median(r[1] for r in runs)
        over = statistics.median(r[0] - r[1] for r in runs)
        pct = statistics.median(100 * (r[0] - r[1]) / r[0] for r in runs)
        lines.append(f"| {name} | {runs[0][2]} | {total:.3f} | {inside:.3f} | {1000 * over:.1f} | {pct:.2f} |")
    table = "\n".join(lines)
    print(table)

    if args.write_readme:
        body = (
            f"{SECTION}\n\n"
            "`python benchmarks/sampler_overhead.py --write-readme` "
            f"(N = {args.steps} steps, median of {args.runs} interleaved runs after a warm-up).\n\n"
            "TiT depth 4, hidden 256, 4 heads, patch 2, 16x16x4 latents, batch 32, Linear transport, "
            "`torch.set_num_threads(2)`, "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}, shared 2-core CPU. "
            "Overhead = total sampling time minus the time spent inside the network call "
            "(the CFG wrapper's batch doubling counts as network time); target < 2 %.\n\n"
            f"{table}\n"
        )
        text = README.read_text() if README.exists() else "# Benchmarks\n"
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _: body + "\n", text).rstrip("\n") + "\n"
        else:
            text = text.rstrip("\n") + "\n\n" + body
        README.write_text(text)
        print(f"wrote the '{SECTION}' section of {README}")


if __name__ == "__main__":
    main()
