"""Runtime benchmark: wall-clock vs MACs speed-up of the paper's schedule, per model.

Architectures with random weights (timing and MACs do not depend on them): DiT-XL/2
(CFG batch 2, 20 DPM-Solver++ steps, 1.6x), PixArt-α XL-2 (CFG batch 2, 20 steps,
1.6x, at --resolution) and PixArt-α-LCM (batch 1, 4 LCM steps, the paper's 1.12x).
Per model three configurations run side by side in one process, interleaved per
repeat (in a rotating order) so machine noise hits them alike: unpatched, the all-full
plan installed (hook overhead), and the paper's schedule.

    python benchmarks/runtime.py [--models dit-xl,pixart-alpha,pixart-lcm] [--dtype fp32] [--repeats 2]
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
from autodelta.evaluation.generation import generate
from autodelta.models.devices import parse_dtype
from autodelta.models.loading import load_profile
from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import Schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dit-xl,pixart-alpha,pixart-lcm")
    parser.add_argument("--dtype", default="fp32", help="fp32 (default here: this CPU has no native bf16), bf16, fp16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256, help="PixArt image side (DiT-XL/2: always 256)")
    parser.add_argument("--batch", type=int, default=1, help="images per generation (CFG doubles the transformer batch)")
    parser.add_argument("--compile", action="store_true",
                        help="compare eager unpatched with torch.compile'd blocks: all-full plan and the paper's")
    args = parser.parse_args()
    summary = [bench(name, args) for name in args.models.split(",")]
    print()
    print("| model | dtype | batch | steps | schedule | MACs speed-up | wall speed-up (transformer) | "
          "wall/MACs | hook overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for line in summary:
        print(line)


BUDGETS = {"pixart-lcm": "1.12x"}  # the paper's LCM setting; 1.6x elsewhere


def bench(model: str, args: argparse.Namespace) -> str:
    profile = load_profile(model)
    dtype = parse_dtype(args.dtype)
    cost = profile.cost_model()
    steps, budget = profile.steps, BUDGETS.get(profile.name, "1.6x")
    resolution = profile.check_resolution(args.resolution if profile.text_conditioned else None)
    params = paper_rule(cost, steps, parse_budget(budget))
    plan = params.plan(steps, profile.num_blocks)
    common = dict(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler, steps=steps,
                  guidance_scale=profile.guidance_scale)
    paper = Schedule(plan=plan, params=params.as_dict(), **common)
    all_full = Schedule(plan=(None,) * steps, **common)
    paper_name = f"{'compiled ' if args.compile else ''}paper {budget}"
    full_name = "compiled all-full plan" if args.compile else "all-full plan"

    print(f"building {profile.name} ({args.dtype}, {args.device}, random weights, {resolution} px) ...", flush=True)
    pipe = profile.load_pipeline(random_weights=True, dtype=dtype, device=args.device)
    labels = [profile.conditions[i % len(profile.conditions)] for i in range(args.batch)]
    generate(pipe, profile, labels, seed=0, steps=2, resolution=resolution)  # warm-up

    times: dict[str, list[tuple[float, float]]] = {"unpatched": [], full_name: [], paper_name: []}
    peak_mem: dict[str, int] = {}
    graphs: dict[str, int] = {}
    cache_bytes = 0
    names = list(times)
    for r in range(args.repeats):
        # rotate the order per repeat: on a launch-bound GPU the first configuration of a round ran up to 17%
        # slower (DiT-XL/2 fp16 on an H200), which a fixed order books against "unpatched"
        for name in names[r % len(names):] + names[: r % len(names)]:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if name == "unpatched":
                gen = generate(pipe, profile, labels, seed=r, steps=steps, resolution=resolution)
            else:
                with autodelta.apply(pipe, paper if name == paper_name else all_full, cost=cost,
                                     compile=args.compile) as handle:
                    if args.compile:  # compile (or reuse the compiled graphs) in one untimed generation
                        warm = _unique_graphs()
                        generate(pipe, profile, labels, seed=r, steps=steps, resolution=resolution)
                        print(f"  {name}: {_unique_graphs() - warm} graph(s) compiled in the untimed warm-up",
                              flush=True)
                    before = _unique_graphs()
                    gen = generate(pipe, profile, labels, seed=r, steps=steps, resolution=resolution)
                    graphs[name] = _unique_graphs() - before
                if name == paper_name:
                    cache_bytes = handle.stats.peak_cache_bytes
            times[name].append((gen.transformer_s, gen.pipeline_s))
            if args.device == "cuda":
                peak_mem[name] = torch.cuda.max_memory_allocated()
            print(f"  repeat {r + 1}/{args.repeats} {name:<14} transformer {gen.transformer_s:7.2f} s  "
                  f"pipeline {gen.pipeline_s:7.2f} s  ({time.perf_counter() - start:.0f} s)", flush=True)

    def med(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    macs_speedup = cost.speedup(plan)
    wall_tr = med("unpatched", 0) / med(paper_name, 0)
    wall_pipe = med("unpatched", 1) / med(paper_name, 1)
    overhead = med(full_name, 0) / med("unpatched", 0) - 1
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print()
    batch = profile.cfg_factor * len(labels)
    print(f"# runtime benchmark: {profile.name} at {resolution} px, {args.dtype}, {device}, "
          f"{'CFG ' if batch == 2 else ''}batch {batch}, {steps} {profile.scheduler} steps, median of {args.repeats}")
    print(f"schedule: paper rule at {budget}: N={params.interval}, N_c={params.cached_blocks}, b={params.boundary}")
    print("| configuration | transformer s | pipeline s | MACs speed-up | wall speed-up (transformer) | wall speed-up (pipeline) |")
    print("|---|---|---|---|---|---|")
    for name in times:
        macs = macs_speedup if name == paper_name else 1.0
        print(f"| {name} | {med(name, 0):.2f} | {med(name, 1):.2f} | {macs:.3f}x | "
              f"{med('unpatched', 0) / med(name, 0):.3f}x | {med('unpatched', 1) / med(name, 1):.3f}x |")
    print(f"wall/MACs ratio (transformer): {wall_tr / macs_speedup:.3f}  (target >= 0.95, goal 0.97)")
    print(f"wall/MACs ratio (pipeline):    {wall_pipe / macs_speedup:.3f}")
    print(f"{'compiled vs eager' if args.compile else 'hook overhead'} on the all-full plan: {overhead:+.2%}"
          f"{'' if args.compile else ' (target < 1%)'}")
    if args.compile:
        wall_c = med(full_name, 0) / med(paper_name, 0)
        print(f"compiled: wall speed-up of the paper's schedule over the compiled all-full plan {wall_c:.3f}x, "
              f"wall/MACs {wall_c / macs_speedup:.3f}; graphs compiled during the timed generations: "
              f"{', '.join(f'{k} {v}' for k, v in graphs.items())}")
    print(f"peak Δ-Cache held: {cache_bytes / 2**20:.2f} MiB")
    if peak_mem:
        for name, value in peak_mem.items():
            print(f"peak GPU memory {name}: {value / 2**30:.2f} GiB")
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak process RSS (so far in this run, weights included): {rss:.2f} GiB")
    sys.stdout.flush()
    del pipe
    return (f"| {profile.name} ({resolution} px) | {args.dtype} | {batch} | {steps} | {paper_name} "
            f"(N={params.interval}, N_c={params.cached_blocks}) | {macs_speedup:.3f}x | {wall_tr:.3f}x | "
            f"{wall_tr / macs_speedup:.3f} | {overhead:+.2%} |")


def _unique_graphs() -> int:
    """Graphs torch.compile has built so far in this process (a new one during a generation = a recompilation)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


if __name__ == "__main__":
    main()
