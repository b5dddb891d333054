"""Quality benchmark: autodelta's searched schedule vs the paper's and every caching baseline, per model.

Budgets 1.3x, 1.6x, 2x, 2.5x and 3x on a digit DiT (tiny-dit, tiny-dit-p2), held-out items.
Every method runs in one harness (real DiTPipeline calls, item by item, batch 1 doubled by
CFG) that counts what really ran, blocks and the attention and feed-forward modules inside
them: the MACs speed-up of every row is measured, not claimed.

Fairness rules, the same for every row:
- the same held-out items (conditions × held-out seeds), scheduler, steps and guidance;
- every speed-up is measured by the harness on those items (≥ budget − 0.5% to count as
  meeting the budget; a method that cannot reach a budget gets a note with its maximum);
- every knob is chosen on the calibration items, never on the scored ones: the search and
  the greedy baseline choose plans there, run-time methods (FirstBlockCache, TaylorSeer,
  MagCache with its calibration run, SeaCache, PAB, DBCache) tune their threshold,
  interval or window there; a threshold method whose held-out speed-up falls short is
  made more aggressive until it meets the budget (speed only, never quality);
- wall speed-ups are one timed pass per method against a full-compute pass timed right
  before it (still noisy on a shared machine; the proxies are small, so per-call overhead
  weighs more than on DiT-XL);
- extra memory is what a method holds beyond full compute: on CUDA (``--device cuda``) the
  peak memory allocated during its calls minus full compute's; on CPU, which keeps no allocator
  statistics, the most bytes held by live tensors after a transformer call on the first item,
  minus full compute's (``autodelta.evaluation.held_memory``; that item is left out of the wall timing).

    python benchmarks/quality.py [--model tiny-dit] [--budgets 1.3x,1.6x,2x,2.5x,3x] [--trials N] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import diffusers
import torch

from autodelta.baselines.harness import Comparison, MethodResult
from autodelta.baselines.registry import BASELINES
from autodelta.cli.outputs import write_outputs
from autodelta.cli.report import save_quality_png
from autodelta.errors import BudgetError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator, EvaluatorFactory, default_cache_dir
from autodelta.models.loading import load_profile
from autodelta.plan.cost import parse_budget
from autodelta.plan.schedule import load_schedule
from autodelta.search.results import summarize
from autodelta.search.run import run_search
from autodelta.search.settings import SearchSettings, default_trials, sampler_name
from autodelta.search.spaces import load_space

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
METRICS = ["psnr", "ssim", "sobel_rel_err", "dft_hf_rel_err", "classifier_accuracy", "frechet_distance"]
HEADER = ["budget", "method", "setting", "MACs speed-up", "wall speed-up", "PSNR dB", "SSIM", "Sobel rel err",
          "DFT-HF rel err", "classifier acc", "Fréchet dist", "extra memory"]


def searched_schedule(model: str, budget_text: str, trials: int | None, space: str, out: Path,
                      device: str = "cpu") -> tuple[Path, str]:
    """Run (or resume) the default search at this budget; returns the chosen schedule file and how it was found."""
    profile = load_profile(model)
    budget = parse_budget(budget_text)
    out.mkdir(parents=True, exist_ok=True)
    settings = SearchSettings(budget=budget, space=load_space(space, profile.steps, profile.num_blocks),
                              trials=0, storage=f"sqlite:///{out / 'study.db'}",
                              study_name=f"{model}-{space}-{budget.text}", seed=0, model=profile.name)
    settings.trials = trials or default_trials(settings)
    record = settings.space.range_set(profile.num_blocks) if sampler_name(settings) == "model" else ()
    factory = EvaluatorFactory(model, cache_dir=default_cache_dir(), device=device, record=record)
    evaluator = factory()
    outcome = run_search(evaluator, settings, progress=True)
    heldout = EvaluatorFactory(model, heldout=True, cache_dir=default_cache_dir(), device=device, reference_phase="report")
    write_outputs(outcome, summarize(outcome, settings, evaluator, heldout), settings, evaluator, profile, out)
    spent = sum(outcome.generations.values())
    return out / "schedule.yaml", f"{space} space, {sampler_name(settings)} sampler, {settings.trials} trials, {spent} item-gens"


def row(budget: str, result: MethodResult) -> list[str]:
    m = result.metrics
    return [budget, result.name, result.detail, f"{result.speedup:.3f}x", f"{result.wall_speedup:.2f}x",
            f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['sobel_rel_err']:.4f}", f"{m['dft_hf_rel_err']:.4f}",
            f"{m['classifier_accuracy']:.3f}", f"{m['frechet_distance']:.1f}",
            _size(result.extra_bytes)]


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "—"
    return f"{nbytes / 2**20:.2f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-dit")
    parser.add_argument("--budgets", default="1.3x,1.6x,2x,2.5x,3x")
    parser.add_argument("--trials", type=int, help="trials of each search (default: the search's own)")
    parser.add_argument("--items", type=int, help="held-out items scored (default: all of the profile's)")
    parser.add_argument("--space", default="explicit", help="Search space(s), comma-separated: one row each.")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--work", default="out/quality-bench", help="Folder for the searches (resumable).")
    parser.add_argument("--tag", default="", help="Suffix of this run's results file (runs split by budget or method).")
    parser.add_argument("--merge", nargs="+", metavar="MD",
                        help="Merge the results files of split runs into quality-<model>.md and its plot, then exit.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA also measures each method's extra memory).")
    args = parser.parse_args()

    profile = load_profile(args.model)
    if args.merge:
        merge(profile.name, [Path(p) for p in args.merge])
        return
    cost = profile.cost_model()
    items = CalibrationSet.from_profile(profile, args.items, heldout=True)

    def calibration() -> DiffusionEvaluator:  # the greedy baseline chooses its plan on the calibration items
        return EvaluatorFactory(args.model, cache_dir=default_cache_dir(), device=args.device)()

    start = time.perf_counter()
    comparison = Comparison(profile, profile.load_pipeline(device=args.device), items, cost, METRICS, progress=True,
                            memory=True, retime=True)
    rows = [row("—", comparison.full())]
    points: dict[str, list[tuple[float, float]]] = {}
    notes: list[str] = []
    for budget_text in args.budgets.split(","):
        budget = parse_budget(budget_text)
        results: list[MethodResult] = []
        for space in [s for s in args.space.split(",") if s]:
            label = f"autodelta ({space})"
            try:
                path, how = searched_schedule(args.model, budget_text, args.trials, space,
                                              Path(args.work) / profile.name / space / budget.text, args.device)
                results.append(comparison.plan(label, load_schedule(path).plan, how))
            except BudgetError as exc:  # a space that cannot reach the budget is a row of its own, not the end
                notes.append(f"{budget.text} {label}: {exc}")
                rows.append([budget.text, label, f"cannot reach: {exc}"] + ["—"] * (len(HEADER) - 3))
        searched = [r for r in results if r.name.startswith("autodelta")]
        for name in [b for b in args.baselines.split(",") if b]:
            try:
                results.append(comparison.baseline(name, budget, calibration))
            except BudgetError as exc:
                notes.append(f"{budget.text} {name}: {exc}")
                print(f"{budget.text} {name}: {exc}")
                rows.append([budget.text, name, f"cannot reach: {_maximum(str(exc))}"] + ["—"] * (len(HEADER) - 3))
        for result in results:
            rows.append(row(budget.text, result))
            points.setdefault(result.name, []).append((result.speedup, result.metrics["psnr"]))
            print(" | ".join(rows[-1]))
        paper = next((r for r in results if r.name == "paper"), None)
        others = [r for r in results if r not in searched and budget.reached(r.speedup)]
        for mine in searched:
            if paper is not None and others:
                best = max(others, key=lambda r: r.metrics["psnr"])
                notes.append(f"{budget.text}: {mine.name} − paper = {mine.metrics['psnr'] - paper.metrics['psnr']:+.2f} dB "
                             f"PSNR; − best baseline ({best.name}) = {mine.metrics['psnr'] - best.metrics['psnr']:+.2f} dB")
    elapsed = time.perf_counter() - start

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    for note in notes:
        print(note)
    RESULTS.mkdir(exist_ok=True)
    doc = [f"# Quality benchmark: {profile.name}, {len(items)} held-out items, measured MACs", "",
           f"`python benchmarks/quality.py --model {profile.name}` ({elapsed:.0f} s). Each row: real pipeline calls, item by item; "
           "PSNR/SSIM/Sobel/DFT against full compute on the same seeds; classifier accuracy and Fréchet distance "
           "(digit-classifier features) against the asked digits / real held-out digits.", "",
           text, "", *[f"- {n}" for n in notes], ""]
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"CPU {platform.machine()}, {torch.get_num_threads()} torch threads")
    doc.insert(3, f"Machine: {machine}; torch {torch.__version__}, diffusers {diffusers.__version__}.")
    (RESULTS / f"quality-{profile.name}{args.tag}.md").write_text("\n".join(doc))
    print(f"machine: {machine}")
    if not args.tag:
        save_quality_png(points, ROOT.parent / "docs" / f"quality-{profile.name}.png")
    print(f"wrote benchmarks/results/quality-{profile.name}{args.tag}.md" + ("" if args.tag else
          f" and docs/quality-{profile.name}.png"))


def merge(model: str, parts: list[Path]) -> None:
    """One table and plot from the results files of runs split by budget or method (same items, same code)."""
    rows: list[list[str]] = []
    notes: list[str] = []
    intro: list[str] = []
    for part in parts:
        lines = part.read_text().splitlines()
        intro = intro or lines[:4]
        for line in lines:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) == len(HEADER) and cells[0] not in ("budget",) and \
                    not set(cells[0]) <= {"-"} and (cells[1] != "full compute" or not any(r[1] == "full compute" for r in rows)):
                rows.append(cells)
            elif line.startswith("- "):
                notes.append(line)
    order = {"—": 0.0}
    rows.sort(key=lambda r: (order.get(r[0], parse_budget(r[0]).speedup if r[0] != "—" else 0.0), r[1]))
    points: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r[0] != "—" and r[3].endswith("x") and r[5] not in ("—", "inf"):
            points.setdefault(r[1], []).append((float(r[3][:-1]), float(r[5])))
    text = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + " | ".join(r) + " |" for r in rows]
    merged = [f"Merged from {len(parts)} runs split by budget or method, same items and code.", ""] if len(parts) > 1 else []
    doc = [*intro, "", *merged, *text, "", *notes, ""]
    (RESULTS / f"quality-{model}.md").write_text("\n".join(doc))
    save_quality_png(points, ROOT.parent / "docs" / f"quality-{model}.png")
    print("\n".join(text))
    print(f"wrote benchmarks/results/quality-{model}.md and docs/quality-{model}.png")


def _maximum(message: str) -> str:
    """'its maximum here is 1.369x (…)' from a BudgetError's text."""
    return message.split("its maximum here is ", 1)[-1].split("; choose")[0] if "maximum" in message else message


if __name__ == "__main__":
    main()
