"""Search benchmark: what the default search costs in item-generations, and what it finds, side by side.

Part 1, per model and budget: the default search (the model sampler: trajectory error
model, DP seeds, model-ranked local search) against the previous default (the local
sampler: screened greedy construction, then 60 trials of screened first-improvement moves),
each on its own fresh evaluator, scored on held-out items. Printed: held-out PSNR of each
chosen plan, item-generations of each search (one calibration item generated once; every
phase counted), and the paper's rule schedule.

Part 2, per model: the default search's item-generations at T = 20, 28 and 50 sampling
steps (the proxies run at those step counts), to show how its cost grows with T.

Part 3, per model and budget: the anytime curve. The default search under each
``--max-generations`` (40, the least it accepts at 20 calibration items: the reference and one
trial; then 50, 100, 200, 400 and no bound), each from a fresh reference cache so the bound
pays for the reference, and the held-out PSNR of the schedule it writes, beside the paper's
rule.

Targets (issue "search cost"): at 1.6x, 2x and 3x, held-out quality within 0.3 dB of the
previous default using at most 20% of its item-generations; item-generations at most
linear in T. (Issue "search trust"): the least accepted bound writes a verified schedule.

    python benchmarks/search.py [--models tiny-dit,tiny-dit-p2] [--budgets 1.6x,2x,3x] [--steps 20,28,50]
        [--bounds 40,50,100,200,400,default] [--parts quality,steps,bounds]
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

from autodelta.errors import AutodeltaError
from autodelta.evaluation.diffusion import EvaluatorFactory
from autodelta.evaluation.work import WorkMeter
from autodelta.models.loading import load_profile
from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import Step
from autodelta.search.ledger import bind_meter
from autodelta.search.results import summarize
from autodelta.search.run import SearchOutcome, completed_count, run_search
from autodelta.search.settings import SearchSettings, default_trials
from autodelta.search.spaces import load_space
from autodelta.search.study import open_study

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


def bounds_part(model: str, budgets: list[str], bounds: list[int | None], probes: int | None = None,
                trials: int | None = None, screen: int = 0, screen_items: int | None = None) -> list[str]:
    """The anytime curve: the search under each --max-generations, from a fresh reference cache (so the bound
    pays for the reference), the schedule it writes scored on held-out items. The least bound is 2 × items."""
    profile = load_profile(model)
    space = load_space("explicit", profile.steps, profile.num_blocks)
    held = EvaluatorFactory(model, heldout=True, cache_dir=tempfile.mkdtemp(prefix="autodelta-refs-"))()
    lines = [f"## {model}: held-out PSNR dB of the schedule written under --max-generations (fresh cache)", "",
             "| budget | paper rule | " + " | ".join(_bound_name(b) for b in bounds) + " |",
             "|---|---|" + "---|" * len(bounds)]
    for budget_text in budgets:
        budget = parse_budget(budget_text)
        paper = held.evaluate(paper_rule(held.cost, profile.steps, budget).plan(profile.steps, profile.num_blocks))
        cells = []
        for bound in bounds:
            out = Path(tempfile.mkdtemp(prefix="autodelta-bench-bound-"))
            settings = SearchSettings(budget=budget, space=space, trials=0, storage=f"sqlite:///{out / 'study.db'}",
                                      study_name=f"bound-{bound}", model=model, max_generations=bound,
                                      probe_items=probes, model_screen=screen, screen_items=screen_items)
            settings.trials = trials or default_trials(settings)
            factory = EvaluatorFactory(model, cache_dir=tempfile.mkdtemp(prefix="autodelta-refs-"),
                                       record=space.range_set(profile.num_blocks))
            meter = bind_meter(WorkMeter(), open_study(settings), settings.run, bound)
            evaluator = factory(meter)
            outcome = run_search(evaluator, settings, progress=False)
            try:
                result = summarize(outcome, settings, evaluator, None).budgets[0]
            except AutodeltaError as exc:
                cells.append(f"no schedule ({exc})")
                continue
            spent = sum(outcome.generations.values())
            score = held.evaluate(result.best.plan).metrics["psnr"]
            source = ", paper rule" if result.paper_chosen else ""
            cells.append(f"{score:.2f} at {result.best.speedup:.3f}x ({spent} gens, {completed_count(outcome.study)} "
                         f"trials{source})")
            print(f"{model} {budget_text} bound {_bound_name(bound)}: {cells[-1]}", flush=True)
        row = f"| {budget_text} | {paper.metrics['psnr']:.2f} at {paper.speedup:.3f}x | " + " | ".join(cells) + " |"
        lines.append(row)
        print(row, flush=True)
    return lines


def _bound_name(bound: int | None) -> str:
    return "default (no bound)" if bound is None else f"≤ {bound}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-dit,tiny-dit-p2")
    parser.add_argument("--budgets", default="1.6x,2x,3x")
    parser.add_argument("--steps", default="20,28,50", help="T values of part 2 (empty: skip it)")
    parser.add_argument("--steps-budget", default="1.6x")
    parser.add_argument("--old-trials", type=int, default=60, help="trials of the previous default (its default)")
    parser.add_argument("--bounds", default="40,50,100,200,400,default",
                        help="--max-generations of part 3, the anytime curve ('default': none; empty: skip it)")
    parser.add_argument("--parts", default="quality,steps,bounds", help="which parts to run")
    parser.add_argument("--probe-items", type=int, default=None, help="part 3: items the probes use (0: the prior)")
    parser.add_argument("--trials", type=int, default=None, help="part 3: trials (default: the search's)")
    parser.add_argument("--screen", type=int, default=0, help="part 3: candidates the model sampler screens per trial")
    parser.add_argument("--screen-items", type=int, default=None, help="part 3: items a screen uses")
    parser.add_argument("--out", default=str(RESULTS / "search.md"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    budgets = [b for b in args.budgets.split(",") if b]
    machine = (f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               f"diffusers {diffusers.__version__}")
    lines = ["# python benchmarks/search.py", "", f"Machine: {machine}.", ""]
    print(lines[2], flush=True)
    for model in args.models.split(","):
        if "quality" in parts:
            lines += quality_part(model, budgets, args.old_trials) + [""]
        if "steps" in parts and args.steps:
            lines += steps_part(model, [int(t) for t in args.steps.split(",")], args.steps_budget) + [""]
        if "bounds" in parts and args.bounds:
            bounds = [None if b == "default" else int(b) for b in args.bounds.split(",")]
            lines += bounds_part(model, budgets, bounds, args.probe_items, args.trials, args.screen,
                                 args.screen_items) + [""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
