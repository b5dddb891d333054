"""Search benchmark: what the default search costs in item-generations, and what it finds, side by side.

Part 1, per model and budget: the default search (the model sampler: trajectory error
model, DP seeds, model-ranked local search) against the previous default (the local
sampler: screened greedy construction, then 60 trials of screened first-improvement moves),
each on its own fresh evaluator, scored on held-out items. Printed: held-out PSNR of each
chosen plan, item-generations of each search (one calibration item generated once; every
phase counted), and the paper's rule schedule.

Part 2, per model: the default search's item-generations at T = 20, 28 and 50 sampling
steps (the proxies run at those step counts), to show how its cost grows with T.

Targets (issue "search cost"): at 1.6x, 2x and 3x, held-out quality within 0.3 dB of the
previous default using at most 20% of its item-generations; item-generations at most
linear in T.

    python benchmarks/search.py [--models tiny-dit,tiny-dit-p2] [--budgets 1.6x,2x,3x] [--steps 20,28,50]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch

from autodelta.evaluation.diffusion import EvaluatorFactory
from autodelta.models.loading import load_profile
from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import Step
from autodelta.search.run import SearchOutcome, run_search
from autodelta.search.settings import SearchSettings, default_trials
from autodelta.search.spaces import load_space

RESULTS = Path(__file__).resolve().parent / "results"


def letters(plan: tuple[Step, ...]) -> str:
    """F full; d / r a Δ replay from block 0 / a later block; D / R the same forecast."""
    def letter(step: Step) -> str:
        if step is None:
            return "F"
        code = "d" if step.start == 0 else "r"
        return code.upper() if step.forecast else code
    return "".join(letter(s) for s in plan)


@dataclass
class Run:
    sampler: str
    trials: int
    outcome: SearchOutcome
    heldout: float
    seconds: float

    @property
    def generations(self) -> int:
        return sum(self.outcome.generations.values())


def search(model: str, budget_text: str, sampler: str, trials: int | None, steps: int | None, cache: str) -> Run:
    """One search from a fresh evaluator (its reference counted unless already cached) and its held-out score."""
    profile = load_profile(model)
    steps = steps or profile.steps
    space = load_space("explicit", steps, profile.num_blocks)
    out = Path(tempfile.mkdtemp(prefix=f"autodelta-bench-{sampler}-"))
    settings = SearchSettings(budget=parse_budget(budget_text), space=space, trials=0, sampler=sampler,
                              storage=f"sqlite:///{out / 'study.db'}", study_name=f"{sampler}-{budget_text}",
                              model=model)
    settings.trials = trials or default_trials(settings)
    record = space.range_set(profile.num_blocks) if sampler == "model" else ()
    start = time.perf_counter()
    evaluator = EvaluatorFactory(model, cache_dir=cache, record=record, steps=steps)()
    outcome = run_search(evaluator, settings, progress=False)
    seconds = time.perf_counter() - start
    assert outcome.best is not None
    held = EvaluatorFactory(model, heldout=True, cache_dir=cache, steps=steps)()
    return Run(sampler, settings.trials, outcome, held.evaluate(outcome.best.plan).metrics["psnr"], seconds)


def quality_part(model: str, budgets: list[str], old_trials: int) -> list[str]:
    lines = [f"## {model}: the default search against the previous one (held-out PSNR dB to full compute)", "",
             "| budget | paper rule | previous default (local, screened) | its item-gens | default (model) | "
             "its item-gens | Δ dB | share of gens | previous plan | default plan |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    profile = load_profile(model)
    for budget_text in budgets:
        cache = tempfile.mkdtemp(prefix="autodelta-refs-")  # fresh: each search pays for its own reference
        old = search(model, budget_text, "local", old_trials, None, cache)
        cache = tempfile.mkdtemp(prefix="autodelta-refs-")
        new = search(model, budget_text, "model", None, None, cache)
        held = EvaluatorFactory(model, heldout=True, cache_dir=cache)()
        cost = held.cost
        paper = held.evaluate(paper_rule(cost, profile.steps, parse_budget(budget_text)).plan(
            profile.steps, profile.num_blocks)).metrics["psnr"]
        assert old.outcome.best is not None and new.outcome.best is not None
        row = (f"| {budget_text} | {paper:.2f} | {old.heldout:.2f} at {old.outcome.best.speedup:.3f}x "
               f"({old.trials} trials, {old.seconds:.0f} s) | {old.generations} | {new.heldout:.2f} at "
               f"{new.outcome.best.speedup:.3f}x ({new.trials} trials, {new.seconds:.0f} s) | {new.generations} | "
               f"{new.heldout - old.heldout:+.2f} | {new.generations / old.generations:.1%} | "
               f"`{letters(old.outcome.best.plan)}` | `{letters(new.outcome.best.plan)}` |")
        lines.append(row)
        phases = ", ".join(f"{k} {v}" for k, v in new.outcome.generations.items())
        corr = new.outcome.model_correlation
        print(row, flush=True)
        print(f"    default's phases: {phases}; error model's Spearman with real trials "
              f"{'—' if corr is None else f'{corr[0]:.2f} over {corr[1]}'}", flush=True)
    return lines


def steps_part(model: str, steps: list[int], budget: str) -> list[str]:
    lines = [f"## {model}: the default search's item-generations against T (budget {budget})", "",
             "| T | item-generations | reference | model probes | trials | per step T | held-out PSNR dB |",
             "|---|---|---|---|---|---|---|"]
    for t in steps:
        run = search(model, budget, "model", None, t, tempfile.mkdtemp(prefix="autodelta-refs-"))
        g = run.outcome.generations
        row = (f"| {t} | {run.generations} | {g.get('reference', 0)} | {g.get('model', 0)} | {g.get('trials', 0)} | "
               f"{run.generations / t:.1f} | {run.heldout:.2f} |")
        lines.append(row)
        print(row, flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-dit,tiny-dit-p2")
    parser.add_argument("--budgets", default="1.6x,2x,3x")
    parser.add_argument("--steps", default="20,28,50", help="T values of part 2 (empty: skip it)")
    parser.add_argument("--steps-budget", default="1.6x")
    parser.add_argument("--old-trials", type=int, default=60, help="trials of the previous default (its default)")
    parser.add_argument("--out", default=str(RESULTS / "search.md"))
    args = parser.parse_args()
    machine = (f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               f"diffusers {diffusers.__version__}")
    lines = ["# python benchmarks/search.py", "", f"Machine: {machine}.", ""]
    print(lines[2], flush=True)
    for model in args.models.split(","):
        lines += quality_part(model, [b for b in args.budgets.split(",") if b], args.old_trials) + [""]
        if args.steps:
            lines += steps_part(model, [int(t) for t in args.steps.split(",")], args.steps_budget) + [""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
