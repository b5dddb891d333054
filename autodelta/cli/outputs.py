"""The outputs of a search, written atomically from its results (:func:`autodelta.search.results.summarize`).

``schedule.yaml`` (or one ``schedule-<budget>.yaml`` per budget of ``--budgets``),
``pareto.yaml`` (every non-dominated trial, whatever its speed-up), ``pareto.png`` and
``report.md``, which also says what the search cost in item-generations, phase by phase.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from autodelta.cli.report import plan_map_text, save_pareto_png
from autodelta.evaluation.work import PHASES
from autodelta.files import atomic_write, dump_yaml
from autodelta.plan.cost import Budget
from autodelta.plan.schedule import Schedule, encode_plan
from autodelta.search.records import TrialRecord, rank_correlation
from autodelta.search.results import PAPER, BudgetResult, SearchResults
from autodelta.search.run import SearchOutcome
from autodelta.search.settings import SearchSettings
from autodelta.search.storage import redact_url


def screen_correlation(items: list[TrialRecord]) -> tuple[float, int] | None:
    """Spearman correlation of screened and full scores over the trials that have both, and their count."""
    return rank_correlation([(r.screen, r.quality) for r in items if r.screen is not None])


def _schedule_of(record: TrialRecord, settings: SearchSettings, evaluator: Any, profile: Any,
                 heldout: dict[str, float] | None, storage: str | None) -> Schedule:
    return Schedule(
        model=profile.name, pretrained=profile.pretrained_id, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
        source=profile.schedule_source,
        steps=profile.steps, guidance_scale=profile.guidance_scale, plan=record.plan,
        params=({"rule": "paper", **record.params} if record.number == PAPER else
                {"family": settings.space.family, "space": settings.space.name, **record.params}),
        cost=evaluator.cost.summary(record.plan),
        quality={"metric": settings.metric, "value": record.quality, "metrics": record.metrics,
                 "calibration_size": evaluator.items, "heldout": heldout,
                 "reference": f"full compute, {profile.scheduler}, T={profile.steps}, guidance {profile.guidance_scale}"},
        provenance={"study": settings.study_name, "trial": None if record.number == PAPER else record.number,
                    "storage": storage,
                    "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )


def schedule_name(settings: SearchSettings, budget: Budget) -> str:
    """``schedule.yaml`` for one budget; ``schedule-<budget>.yaml`` for each of several."""
    return f"schedule-{budget.text.replace('%', 'pct')}.yaml" if settings.budgets else "schedule.yaml"


def write_outputs(outcome: SearchOutcome, results: SearchResults, settings: SearchSettings, evaluator: Any,
                  profile: Any, out: Path) -> dict[str, Any]:
    """Write every output of ``results`` in ``out``.

    Returns the headline figures of the first (loosest) budget, the per-budget ones under
    ``"budgets"``, and the lines the CLI prints under ``"summary"``.
    """
    storage = redact_url(settings.storage) if settings.storage else None  # no password, no local path
    written = []
    for result in results.budgets:
        schedule = _schedule_of(result.best, settings, evaluator, profile, result.heldout.get(result.best.number),
                                storage)
        schedule.save(out / schedule_name(settings, result.budget))
        written.append(out / schedule_name(settings, result.budget))
    _write_pareto(outcome, settings, profile, out)
    first = results.budgets[0]
    seeds = {r.label: r for r in outcome.records if r.label}
    marks = {**({"paper (rule)": first.paper} if first.paper is not None else {}),
             **{k: v for k, v in seeds.items() if not k.startswith("paper rule")}}
    save_pareto_png(outcome.records, outcome.pareto, first.budget.speedup, settings.metric, out / "pareto.png",
                    marks=marks, chosen=first.best)
    atomic_write(out / "report.md", _report(outcome, settings, evaluator, profile, results))

    metric = settings.metric
    per_budget = {
        r.budget.text: {"best": r.best.quality, "best_heldout": r.held(r.best, metric), "speedup": r.best.speedup,
                        "paper": r.paper.quality if r.paper else None, "paper_heldout": r.held(r.paper, metric),
                        "found_at": r.found_at, "plan": r.best.plan, "paper_chosen": r.paper_chosen}
        for r in results.budgets
    }
    fidelity = screen_correlation(outcome.records)
    figures: dict[str, Any] = {
        **per_budget[first.budget.text], "budgets": per_budget, "reuse_ratio": _reuse_ratio(evaluator),
        "seconds": outcome.seconds, "screen_correlation": fidelity[0] if fidelity else None,
        "model_correlation": outcome.model_correlation[0] if outcome.model_correlation else None,
        "generations": dict(outcome.generations), "run_generations": dict(outcome.run_generations),
        "report_generations": results.report_generations, "exhausted": outcome.exhausted,
    }
    figures["summary"] = _summary(outcome, results, settings, evaluator, out, written)
    return figures


def _summary(outcome: SearchOutcome, results: SearchResults, settings: SearchSettings, evaluator: Any, out: Path,
             written: list[Path]) -> list[str]:
    """The lines the CLI prints after a search."""
    metric = settings.metric
    lines = []
    if results.bound_note:
        lines.append(results.bound_note)
    for r in results.budgets:
        paper = f"paper rule {r.paper.quality:.3f} at {r.paper.speedup:.3f}x" if r.paper else \
            f"paper rule not measured within --max-generations {settings.max_generations}"
        source = "the paper rule, above every trial" if r.paper_chosen else f"trial {r.best.number}"
        lines.append(f"best within {r.budget}: {metric} {r.best.quality:.3f} at {r.best.speedup:.3f}x ({source}); "
                     f"{paper}")
        chosen, rule = r.held(r.best, metric), r.held(r.paper, metric)
        if chosen is not None:
            lines.append(f"held-out: chosen {chosen:.3f}" + (f", paper rule {rule:.3f}" if rule is not None else ""))
    if results.heldout_note:
        lines.append(f"held-out: {results.heldout_note}")
    lines.append(_generations_line(outcome, settings))
    ratio = _reuse_ratio(evaluator)
    if ratio is not None:
        lines.append(f"prefix reuse: {evaluator.blocks_naive} block evaluations naive, {evaluator.blocks_computed} "
                     f"computed ({ratio:.2f}x)")
    lines.append(f"wrote {', '.join(str(p) for p in written)}, {out / 'pareto.yaml'}, {out / 'pareto.png'}, "
                 f"{out / 'report.md'}")
    return lines


def _reuse_ratio(evaluator: Any) -> float | None:
    from autodelta.evaluation.diffusion import DiffusionEvaluator

    return evaluator.reuse_ratio if isinstance(evaluator, DiffusionEvaluator) else None


def _generations_line(outcome: SearchOutcome, settings: SearchSettings) -> str:
    """This run's item-generations by phase, the study's total when it differs, and cached reference items."""
    run = outcome.run_generations
    parts = ", ".join(f"{phase} {run.get(phase, 0)}" for phase in PHASES)
    line = f"item-generations this run: {sum(run.values())} ({parts})"
    if outcome.cached:
        line += f"; {outcome.cached} reference items read from the cache"
    study = sum(outcome.generations.values())
    if study != sum(run.values()):
        line += f"; the study in all: {study}"
    if settings.max_generations is not None:
        line += f" (bound: --max-generations {settings.max_generations})"
    return line


def _write_pareto(outcome: SearchOutcome, settings: SearchSettings, profile: Any, out: Path) -> None:
    doc = {
        "format": "autodelta/pareto@1", "model": profile.name,
        "budget": ",".join(b.text for b in settings.all_budgets),
        "metric": settings.metric, "space": settings.space.name, "study": settings.study_name,
        "schedules": [
            {"trial": r.number, "speedup": round(r.speedup, 4), "macs": r.macs, "quality": r.quality,
             "within_budget": r.feasible, "metrics": r.metrics, "params": r.params, "plan": encode_plan(r.plan)}
            for r in outcome.pareto
        ],
    }
    atomic_write(out / "pareto.yaml", dump_yaml(doc))


def _report(outcome: SearchOutcome, settings: SearchSettings, evaluator: Any, profile: Any,
            results: SearchResults) -> str:
    metric = settings.metric
    ratio = _reuse_ratio(evaluator)
    budgets = ", ".join(b.text for b in settings.all_budgets)
    run, study = outcome.run_generations, outcome.generations
    lines = [
        f"# autodelta search: {profile.name} at {budgets}",
        "",
        f"space `{settings.space.name}` ({settings.space.family}), metric `{metric}`, "
        f"{len(outcome.records)} completed trials, study `{settings.study_name}`.",
        f"search time {outcome.seconds:.1f} s this run; {outcome.duplicates} duplicate plans answered from the study"
        + (f"; prefix reuse: {evaluator.blocks_naive} block evaluations needed naively, "
           f"{evaluator.blocks_computed} computed ({ratio:.2f}x)" if ratio is not None else "") + ".",
        "",
        "## Cost in item-generations (one calibration item generated once)",
        "",
        "| phase | this run | the study in all |",
        "|---|---|---|",
        *[f"| {phase} | {run.get(phase, 0)} | {study.get(phase, 0)} |" for phase in PHASES],
        f"| **total** | **{sum(run.values())}** | **{sum(study.values())}** |",
        "",
    ]
    if outcome.cached:
        lines += [f"{outcome.cached} reference items were read from the cache this run (0 generations).", ""]
    if settings.max_generations is not None:
        lines += [f"Bound: --max-generations {settings.max_generations}, on the study's total (every phase, every "
                  "process, every run).", ""]
    if results.bound_note:
        lines += [results.bound_note, ""]
    if outcome.model_correlation:
        rho, count = outcome.model_correlation
        lines += [f"error model: Spearman rank correlation of its predictions (probes only, before any trial "
                  f"calibrated it) with the real {metric} of {count} trials: {rho:.3f}.", ""]
    fidelity = screen_correlation(outcome.records)
    if fidelity:
        lines += [f"multi-fidelity: {fidelity[1]} trials were screened on a subset of the calibration items first; "
                  f"Spearman rank correlation of screened and full scores {fidelity[0]:.3f}.", ""]
    if results.heldout_note:
        lines += [f"held-out scores: {results.heldout_note}.", ""]
    for result in results.budgets:
        lines += _budget_section(result, settings, profile)
    return "\n".join(lines)


def _budget_section(result: BudgetResult, settings: SearchSettings, profile: Any) -> list[str]:
    metric = settings.metric
    lines = [f"## {result.budget}", "", f"best trial found at trial {result.found_at}.", ""]
    if result.paper_chosen:
        lines += ["The paper rule's plan scored higher than every trial of the search on the calibration items, so "
                  "it is the schedule written.", ""]
    if result.paper is None:
        lines += [f"paper rule: not measured within --max-generations {settings.max_generations}.", ""]
    lines += [f"| schedule | trial | MACs speed-up | {metric} (calibration) | {metric} (held-out) | params |",
              "|---|---|---|---|---|---|"]
    for i, r in enumerate(result.shown):
        name = "paper rule" if r is result.paper else f"#{i + 1}"
        name += " (chosen)" if r is result.best else ""
        h = result.held(r, metric)
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        number = "" if r.number < 0 else str(r.number)
        lines.append(f"| {name} | {number} | {r.speedup:.3f}x | {r.quality:.3f} | "
                     f"{'' if h is None else f'{h:.3f}'} | {params} |")
    schedule = Schedule(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
                        steps=profile.steps, plan=result.best.plan)
    return lines + ["", "Chosen plan:", "", "```", plan_map_text(schedule), "```", ""]
