"""The outputs of a search: first computed (:func:`summarize`), then written atomically (:func:`write_outputs`).

``schedule.yaml`` (or one ``schedule-<budget>.yaml`` per budget of ``--budgets``),
``pareto.yaml`` (every non-dominated trial, whatever its speed-up), ``pareto.png`` and
``report.md``, which also says what the search cost in item-generations, phase by phase.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodelta.cli.report import plan_map_text, save_pareto_png
from autodelta.errors import AutodeltaError
from autodelta.evaluation.metrics import get_metric
from autodelta.evaluation.work import PHASES
from autodelta.files import atomic_write, dump_yaml
from autodelta.plan.cost import Budget, paper_rule
from autodelta.plan.schedule import Schedule, encode_plan
from autodelta.search.records import TrialRecord, best_within_budget, rank_correlation, records
from autodelta.search.run import SearchOutcome
from autodelta.search.settings import SearchSettings
from autodelta.search.storage import redact_url


@dataclass
class BudgetResult:
    """One budget's answer: the chosen trial, the paper rule's, the top few, and their held-out scores."""

    budget: Budget
    best: TrialRecord
    paper: TrialRecord
    shown: list[TrialRecord]
    heldout: dict[int, dict[str, float]] = field(default_factory=dict)  # by id() of a shown record
    found_at: int = 0

    def held(self, record: TrialRecord, metric: str) -> float | None:
        return self.heldout.get(id(record), {}).get(metric)


@dataclass
class SearchResults:
    """Everything the outputs show, computed once."""

    budgets: list[BudgetResult]
    report_generations: int  # spent scoring for the report (the paper rule, held-out items), outside the search


def screen_correlation(items: list[TrialRecord]) -> tuple[float, int] | None:
    """Spearman correlation of screened and full scores over the trials that have both, and their count."""
    return rank_correlation([(r.screen, r.quality) for r in items if r.screen is not None])


def summarize(outcome: SearchOutcome, settings: SearchSettings, evaluator: Any,
              heldout_factory: Callable[[], Any] | None, top: int = 3) -> SearchResults:
    """Per budget: the best trial, the paper rule (measured when the study lacks it) and held-out scores."""
    metric = get_metric(settings.metric)
    sign = 1.0 if metric.higher_is_better else -1.0
    meter = evaluator.meter
    before = meter.total
    held_ev = None
    results = []
    with meter.during("report"):
        for budget in settings.all_budgets:
            items = records(outcome.study, budget, settings.metric)
            best = best_within_budget(items, metric.higher_is_better)
            if best is None:
                raise AutodeltaError(f"no completed trial meets budget {budget} yet; run more --trials")
            rule = paper_rule(evaluator.cost, evaluator.steps, budget)
            rule_plan = rule.plan(evaluator.steps, evaluator.num_blocks)
            paper = next((r for r in items if r.plan == rule_plan), None)
            if paper is None:  # the space cannot express it: measure it anyway, for the comparison
                ev = evaluator.evaluate(rule_plan)
                paper = TrialRecord(-1, rule.as_dict(), rule_plan, ev.metrics[settings.metric], ev.macs, ev.speedup,
                                    ev.metrics, budget.allows(ev.speedup), "paper rule")
            ranked: list[TrialRecord] = []
            for r in sorted((r for r in items if r.feasible), key=lambda r: (-sign * r.quality, r.macs)):
                if all(r.plan != o.plan for o in ranked):
                    ranked.append(r)
            count = top if not settings.budgets else 1  # several budgets: the chosen one and the paper's
            shown = ranked[:count] + ([paper] if all(paper.plan != r.plan for r in ranked[:count]) else [])
            result = BudgetResult(budget, best, paper, shown,
                                  found_at=min(r.number for r in items if r.plan == best.plan))
            if heldout_factory is not None:
                held_ev = held_ev or heldout_factory()
                for r in shown:
                    result.heldout[id(r)] = held_ev.evaluate(r.plan).metrics
            results.append(result)
    spent = meter.total - before + (held_ev.meter.total if held_ev is not None and held_ev.meter is not meter else 0)
    return SearchResults(results, spent)


def _schedule_of(record: TrialRecord, settings: SearchSettings, evaluator: Any, profile: Any,
                 heldout: dict[str, float] | None, storage: str | None) -> Schedule:
    return Schedule(
        model=profile.name, pretrained=profile.pretrained_id, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
        source=profile.schedule_source,
        steps=profile.steps, guidance_scale=profile.guidance_scale, plan=record.plan,
        params={"family": settings.space.family, "space": settings.space.name, **record.params},
        cost=evaluator.cost.summary(record.plan),
        quality={"metric": settings.metric, "value": record.quality, "metrics": record.metrics,
                 "calibration_size": evaluator.items, "heldout": heldout,
                 "reference": f"full compute, {profile.scheduler}, T={profile.steps}, guidance {profile.guidance_scale}"},
        provenance={"study": settings.study_name, "trial": record.number, "storage": storage,
                    "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )


def schedule_name(settings: SearchSettings, budget: Budget) -> str:
    """``schedule.yaml`` for one budget; ``schedule-<budget>.yaml`` for each of several."""
    return f"schedule-{budget.text.replace('%', 'pct')}.yaml" if settings.budgets else "schedule.yaml"


def write_outputs(outcome: SearchOutcome, settings: SearchSettings, evaluator: Any,
                  heldout_factory: Callable[[], Any] | None, profile: Any, out: Path, top: int = 3) -> dict[str, Any]:
    """Compute (:func:`summarize`) and write every output in ``out``.

    Returns the headline figures of the first (loosest) budget, the per-budget ones under
    ``"budgets"``, and the lines the CLI prints under ``"summary"``.
    """
    results = summarize(outcome, settings, evaluator, heldout_factory, top)
    storage = redact_url(settings.storage) if settings.storage else None  # no password, no local path
    written = []
    for result in results.budgets:
        schedule = _schedule_of(result.best, settings, evaluator, profile, result.heldout.get(id(result.best)),
                                storage)
        schedule.save(out / schedule_name(settings, result.budget))
        written.append(out / schedule_name(settings, result.budget))
    _write_pareto(outcome, settings, profile, out)
    first = results.budgets[0]
    seeds = {r.label: r for r in outcome.records if r.label}
    marks = {"paper (rule)": first.paper, **{k: v for k, v in seeds.items() if not k.startswith("paper rule")}}
    save_pareto_png(outcome.records, outcome.pareto, first.budget.speedup, settings.metric, out / "pareto.png",
                    marks=marks, chosen=first.best)
    atomic_write(out / "report.md", _report(outcome, settings, evaluator, profile, results))

    metric = settings.metric
    per_budget = {
        r.budget.text: {"best": r.best.quality, "best_heldout": r.held(r.best, metric), "speedup": r.best.speedup,
                        "paper": r.paper.quality, "paper_heldout": r.held(r.paper, metric), "found_at": r.found_at,
                        "plan": r.best.plan}
        for r in results.budgets
    }
    fidelity = screen_correlation(outcome.records)
    figures: dict[str, Any] = {
        **per_budget[first.budget.text], "budgets": per_budget, "reuse_ratio": _reuse_ratio(evaluator),
        "seconds": outcome.seconds, "screen_correlation": fidelity[0] if fidelity else None,
        "model_correlation": outcome.model_correlation[0] if outcome.model_correlation else None,
        "generations": dict(outcome.generations), "report_generations": results.report_generations,
    }
    lines = []
    for r in results.budgets:
        lines.append(f"best within {r.budget}: {metric} {r.best.quality:.3f} at {r.best.speedup:.3f}x "
                     f"(trial {r.best.number}); paper rule {r.paper.quality:.3f} at {r.paper.speedup:.3f}x")
        if r.held(r.best, metric) is not None and r.held(r.paper, metric) is not None:
            lines.append(f"held-out: chosen {r.held(r.best, metric):.3f}, paper rule {r.held(r.paper, metric):.3f}")
    lines.append(_generations_line(outcome.generations))
    ratio = figures["reuse_ratio"]
    if ratio is not None:
        lines.append(f"prefix reuse: {evaluator.blocks_naive} block evaluations naive, {evaluator.blocks_computed} "
                     f"computed ({ratio:.2f}x)")
    lines.append(f"wrote {', '.join(str(p) for p in written)}, {out / 'pareto.yaml'}, {out / 'pareto.png'}, "
                 f"{out / 'report.md'}")
    figures["summary"] = lines
    return figures


def _reuse_ratio(evaluator: Any) -> float | None:
    from autodelta.evaluation.diffusion import DiffusionEvaluator

    return evaluator.reuse_ratio if isinstance(evaluator, DiffusionEvaluator) else None


def _generations_line(generations: dict[str, int]) -> str:
    parts = ", ".join(f"{phase} {generations.get(phase, 0)}" for phase in PHASES)
    return f"item-generations: {sum(generations.get(p, 0) for p in PHASES)} ({parts})"


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
        "| phase | item-generations |",
        "|---|---|",
        *[f"| {phase} | {outcome.generations.get(phase, 0)} |" for phase in PHASES],
        f"| **search total** | **{sum(outcome.generations.get(p, 0) for p in PHASES)}** |",
        f"| report (paper rule, held-out scoring; not search) | {results.report_generations} |",
        "",
    ]
    if outcome.exhausted:
        lines += [f"The search stopped at --max-generations {settings.max_generations}.", ""]
    if outcome.model_correlation:
        rho, count = outcome.model_correlation
        lines += [f"error model: Spearman rank correlation of its predictions (probes only, before any trial "
                  f"calibrated it) with the real {metric} of {count} trials: {rho:.3f}.", ""]
    fidelity = screen_correlation(outcome.records)
    if fidelity:
        lines += [f"multi-fidelity: {fidelity[1]} trials were screened on a subset of the calibration items first; "
                  f"Spearman rank correlation of screened and full scores {fidelity[0]:.3f}.", ""]
    for result in results.budgets:
        lines += [f"## {result.budget}", "",
                  f"best found at trial {result.found_at}.", "",
                  f"| schedule | trial | MACs speed-up | {metric} (calibration) | {metric} (held-out) | params |",
                  "|---|---|---|---|---|---|"]
        for i, r in enumerate(result.shown):
            name = "paper rule" if r is result.paper else f"#{i + 1}" + (" (chosen)" if r is result.best else "")
            h = result.held(r, metric)
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
            lines.append(f"| {name} | {r.number} | {r.speedup:.3f}x | {r.quality:.3f} | "
                         f"{'' if h is None else f'{h:.3f}'} | {params} |")
        schedule = Schedule(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
                            steps=profile.steps, plan=result.best.plan)
        lines += ["", "Chosen plan:", "", "```", plan_map_text(schedule), "```", ""]
    return "\n".join(lines)
