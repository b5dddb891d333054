"""Search benchmark: tiny-dit at 1.6x, 60 trials per search space, side by side.

For each space: wall time, trials until the final best, the prefix-reuse ratio (block
evaluations naive / computed, and evaluation time of the same plans replayed without
reuse / with it), and the chosen schedule vs the paper's rule schedule in PSNR on the
calibration seeds and on held-out seeds.

    python benchmarks/search.py [--trials 60] [--budget 1.6x] [--spaces paper,delta-dit,stagewise,free-steps]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autodelta.cost import paper_rule, parse_budget
from autodelta.evaluation import EvaluatorFactory
from autodelta.models import load_profile
from autodelta.search import SearchSettings, run_search
from autodelta.search_outputs import write_outputs
from autodelta.spaces import load_space

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-dit")
    parser.add_argument("--budget", default="1.6x")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--spaces", default="paper,delta-dit,stagewise,free-steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    profile = load_profile(args.model)
    budget = parse_budget(args.budget)
    cache = tempfile.mkdtemp(prefix="autodelta-bench-")
    calib = EvaluatorFactory(profile.name, cache_dir=cache)()
    heldout = EvaluatorFactory(profile.name, heldout=True, cache_dir=cache)()
    rule_plan = paper_rule(calib.cost, profile.steps, budget).plan(profile.steps, profile.num_blocks)
    paper_cal = calib.evaluate(rule_plan).metrics["psnr"]
    paper_held = heldout.evaluate(rule_plan).metrics["psnr"]
    print(f"# search benchmark: {profile.name}, budget {budget}, {args.trials} trials per space, "
          f"{len(calib.calibration)} calibration / {len(heldout.calibration)} held-out items")
    print(f"paper rule schedule ({calib.cost.speedup(rule_plan):.3f}x): PSNR calibration {paper_cal:.2f} dB, "
          f"held-out {paper_held:.2f} dB")
    rows = []
    for name in args.spaces.split(","):
        space = load_space(name, profile.steps, profile.num_blocks)
        evaluator = EvaluatorFactory(profile.name, cache_dir=cache)()
        out = Path(tempfile.mkdtemp(prefix=f"autodelta-{name}-"))
        settings = SearchSettings(budget=budget, space=space, trials=args.trials, storage=f"sqlite:///{out / 'study.db'}",
                                  study_name=name, seed=args.seed, model=profile.name)
        start = time.perf_counter()
        outcome = run_search(evaluator, settings, progress=False)
        search_s = time.perf_counter() - start
        figures = write_outputs(outcome, settings, evaluator, lambda: heldout, profile, out)
        plain = EvaluatorFactory(profile.name, cache_dir=cache, prefix_reuse=False)()
        plans = [r.plan for r in sorted(outcome.records, key=lambda r: r.number)]
        distinct = list(dict.fromkeys(plans))
        t0 = time.perf_counter()
        for plan in distinct:
            plain.evaluate(plan)
        plain_s = time.perf_counter() - t0
        replay = EvaluatorFactory(profile.name, cache_dir=cache)()
        t0 = time.perf_counter()
        for plan in distinct:
            replay.evaluate(plan)
        reuse_s = time.perf_counter() - t0
        best = outcome.best
        rows.append((name, best.speedup, figures["best"], figures["best_heldout"], figures["found_at"], search_s,
                     evaluator.reuse_ratio, plain_s / reuse_s, best))
        (RESULTS / f"search-{name}.md").write_text((out / "report.md").read_text())
        print(f"  {name}: done in {search_s:.0f} s", flush=True)
    print()
    print("| space | speed-up | PSNR calib (dB) | PSNR held-out (dB) | vs paper held-out | trials to best | "
          "search s | reuse (blocks) | reuse (time) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, speed, cal, held, found, secs, ratio, time_ratio, _ in rows:
        print(f"| {name} | {speed:.3f}x | {cal:.2f} | {held:.2f} | {held - paper_held:+.2f} | {found} | {secs:.0f} | "
              f"{ratio:.2f}x | {time_ratio:.2f}x |")
    winner = max(rows, key=lambda r: r[3])
    print(f"\nbest space on held-out seeds: {winner[0]} ({winner[3]:.2f} dB, {winner[3] - paper_held:+.2f} dB over the "
          f"paper's schedule)")
    from autodelta.report import plan_map_text
    from autodelta.schedule import Schedule

    chosen = Schedule(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
                      steps=profile.steps, plan=winner[8].plan)
    print(plan_map_text(chosen))


if __name__ == "__main__":
    main()
