"""Runtime benchmark: wall-clock vs MACs speed-up of the paper's 1.6x schedule on DiT-XL/2.

DiT-XL/2 architecture (random weights: timing and MACs do not depend on them), CFG
batch 2 (one class label), 20 DPM-Solver++ steps. Three configurations run side by
side in one process, interleaved per repeat so machine noise hits them alike:
unpatched, the all-full plan installed (hook overhead), and the paper's 1.6x schedule.

    python benchmarks/runtime.py [--dtype fp32] [--repeats 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import torch

import autodelta
from autodelta.cost import paper_rule, parse_budget
from autodelta.generation import generate
from autodelta.models import load_profile, parse_dtype
from autodelta.schedule import Schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dit-xl")
    parser.add_argument("--dtype", default="fp32", help="fp32 (default here: this CPU has no native bf16), bf16, fp16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", default="1.6x")
    args = parser.parse_args()

    profile = load_profile(args.model)
    dtype = parse_dtype(args.dtype)
    cost = profile.cost_model()
    params = paper_rule(cost, args.steps, parse_budget(args.budget))
    plan = params.plan(args.steps, profile.num_blocks)
    common = dict(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler, steps=args.steps,
                  guidance_scale=profile.guidance_scale)
    paper = Schedule(plan=plan, params=params.as_dict(), **common)
    all_full = Schedule(plan=(None,) * args.steps, **common)

    print(f"building {profile.name} ({args.dtype}, {args.device}, random weights) ...", flush=True)
    pipe = profile.load_pipeline(random_weights=True, dtype=dtype).to(args.device)
    labels = [profile.conditions[0]]
    generate(pipe, profile, labels, seed=0, steps=2)  # warm-up

    times: dict[str, list[tuple[float, float]]] = {"unpatched": [], "all-full plan": [], "paper 1.6x": []}
    peak_mem: dict[str, int] = {}
    cache_bytes = 0
    for r in range(args.repeats):
        for name in times:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if name == "unpatched":
                gen = generate(pipe, profile, labels, seed=r, steps=args.steps)
            else:
                with autodelta.apply(pipe, paper if name == "paper 1.6x" else all_full, cost=cost) as handle:
                    gen = generate(pipe, profile, labels, seed=r, steps=args.steps)
                if name == "paper 1.6x":
                    cache_bytes = handle.stats.peak_cache_bytes
            times[name].append((gen.transformer_s, gen.pipeline_s))
            if args.device == "cuda":
                peak_mem[name] = torch.cuda.max_memory_allocated()
            print(f"  repeat {r + 1}/{args.repeats} {name:<14} transformer {gen.transformer_s:7.2f} s  "
                  f"pipeline {gen.pipeline_s:7.2f} s  ({time.perf_counter() - start:.0f} s)", flush=True)

    def med(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    macs_speedup = cost.speedup(plan)
    wall_tr = med("unpatched", 0) / med("paper 1.6x", 0)
    wall_pipe = med("unpatched", 1) / med("paper 1.6x", 1)
    overhead = med("all-full plan", 0) / med("unpatched", 0) - 1
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print()
    print(f"# runtime benchmark: {profile.name}, {args.dtype}, {device}, CFG batch 2, {args.steps} "
          f"{profile.scheduler} steps, median of {args.repeats}")
    print(f"schedule: paper rule at {args.budget}: N={params.interval}, N_c={params.cached_blocks}, b={params.boundary}")
    print("| configuration | transformer s | pipeline s | MACs speed-up | wall speed-up (transformer) | wall speed-up (pipeline) |")
    print("|---|---|---|---|---|---|")
    for name in times:
        macs = macs_speedup if name == "paper 1.6x" else 1.0
        print(f"| {name} | {med(name, 0):.2f} | {med(name, 1):.2f} | {macs:.3f}x | "
              f"{med('unpatched', 0) / med(name, 0):.3f}x | {med('unpatched', 1) / med(name, 1):.3f}x |")
    print(f"wall/MACs ratio (transformer): {wall_tr / macs_speedup:.3f}  (target >= 0.95, goal 0.97)")
    print(f"wall/MACs ratio (pipeline):    {wall_pipe / macs_speedup:.3f}")
    print(f"hook overhead on all-full plan: {overhead:+.2%} (target < 1%)")
    print(f"peak Δ-Cache held: {cache_bytes / 2**20:.2f} MiB")
    if peak_mem:
        for name, value in peak_mem.items():
            print(f"peak GPU memory {name}: {value / 2**30:.2f} GiB")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak process RSS (all configurations, weights included): {rss:.2f} GiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
