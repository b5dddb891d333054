"""A search's answer per budget, computed in the search floor: the chosen plan, the paper rule, held-out scores.

Every measurement here spends from the same ledger and bound as the search (phase
``report``), and what does not fit is left out and said so, never guessed:

1. per budget, the best verified trial meeting it;
2. the paper rule's plan, from the study when the space expressed it, else measured on the
   calibration items if the bound has room. When it meets the budget and scores higher than
   the search's best, it is the answer (the search never writes less than the baseline it
   measured);
3. held-out scores, chosen plan first, then the paper rule, then the runners-up, while the
   bound has room.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autodelta.errors import AutodeltaError
from autodelta.evaluation.evaluator import Evaluator, EvaluatorBuilder
from autodelta.evaluation.metrics import get_metric
from autodelta.evaluation.work import WorkExhausted
from autodelta.plan.cost import Budget, paper_rule
from autodelta.search.records import TrialRecord, best_within_budget, records
from autodelta.search.run import SearchOutcome, completed_count
from autodelta.search.settings import SearchSettings

PAPER = -1
"""Trial number of a paper-rule plan measured for the report (the space could not express it)."""


@dataclass
class BudgetResult:
    """One budget's answer. ``paper`` is ``None`` where its measurement did not fit the bound."""

    budget: Budget
    best: TrialRecord
    paper: TrialRecord | None
    shown: list[TrialRecord]
    found_at: int
    paper_chosen: bool = False  # the paper rule scored higher than every trial and is the answer
    heldout: dict[int, dict[str, float]] = field(default_factory=dict)  # by trial number

    def held(self, record: TrialRecord | None, metric: str) -> float | None:
        return None if record is None else self.heldout.get(record.number, {}).get(metric)


@dataclass
class SearchResults:
    """Everything the outputs show, computed once."""

    budgets: list[BudgetResult]
    report_generations: int  # spent on the report's measurements in this run
    heldout_note: str | None = None  # why held-out scores are missing, when they are
    bound_note: str | None = None  # what the bound stopped, and what a larger one would buy


def summarize(outcome: SearchOutcome, settings: SearchSettings, evaluator: Evaluator,
              heldout_factory: EvaluatorBuilder | None, top: int = 3) -> SearchResults:
    """Per budget: the answer, the paper rule (measured when the study lacks it and the bound has room) and
    held-out scores. A budget no verified plan meets yet is one :class:`AutodeltaError` (the study is kept)."""
    metric = get_metric(settings.metric)
    sign = 1.0 if metric.higher_is_better else -1.0
    meter = evaluator.meter
    before = meter.total
    results = []
    _check_every_budget_met(outcome, settings)
    with meter.during("report"), meter.shown("report: the paper rule and held-out scores"):
        for budget in settings.all_budgets:
            items = records(outcome.study, budget, settings.metric)
            found = best_within_budget(items, metric.higher_is_better)
            assert found is not None  # checked above
            paper = _paper(evaluator, items, budget, settings.metric)
            chosen = paper is not None and paper.feasible and sign * paper.quality > sign * found.quality
            best = paper if chosen and paper is not None else found
            ranked: list[TrialRecord] = []
            for r in sorted((r for r in items if r.feasible), key=lambda r: (-sign * r.quality, r.macs)):
                if all(r.plan != o.plan for o in ranked):
                    ranked.append(r)
            count = top if not settings.budgets else 1  # several budgets: the chosen one and the paper's
            shown = [best] + [r for r in ranked[:count] if r.plan != best.plan][: count - 1]
            if paper is not None and all(paper.plan != r.plan for r in shown):
                shown.append(paper)
            results.append(BudgetResult(budget, best, paper, shown, paper_chosen=chosen,
                                        found_at=min(r.number for r in items if r.plan == found.plan)))
        note = _score_heldout(results, heldout_factory, evaluator) if heldout_factory is not None else None
    return SearchResults(results, meter.total - before, heldout_note=note,
                         bound_note=_bound_note(outcome, settings, evaluator, results))


def _check_every_budget_met(outcome: SearchOutcome, settings: SearchSettings) -> None:
    metric = get_metric(settings.metric)
    for budget in settings.all_budgets:
        items = records(outcome.study, budget, settings.metric)
        if best_within_budget(items, metric.higher_is_better) is None:
            fastest = max((r.speedup for r in items), default=None)
            seen = f"; the fastest of its {len(items)} trials reaches {fastest:.3f}x" if fastest else ""
            where = f"--max-generations {settings.max_generations}" if outcome.exhausted else "--trials"
            raise AutodeltaError(f"no verified plan meets budget {budget} yet{seen}; raise {where} and run the same "
                                 "command again: the study resumes where it stopped")


def _paper(evaluator: Evaluator, items: list[TrialRecord], budget: Budget, metric: str) -> TrialRecord | None:
    """The paper rule's plan at ``budget``: its trial, else measured now, else ``None`` (no room in the bound)."""
    rule = paper_rule(evaluator.cost, evaluator.steps, budget)
    plan = rule.plan(evaluator.steps, evaluator.num_blocks)
    known = next((r for r in items if r.plan == plan), None)
    if known is not None or not evaluator.meter.allows(evaluator.items):
        return known
    try:
        ev = evaluator.evaluate(plan)
    except WorkExhausted:
        return None
    return TrialRecord(PAPER, rule.as_dict(), plan, ev.metrics[metric], ev.macs, ev.speedup, ev.metrics,
                       budget.allows(ev.speedup), "paper rule")


def _score_heldout(results: list[BudgetResult], factory: EvaluatorBuilder, evaluator: Evaluator) -> str | None:
    """Held-out scores while the bound has room: every budget's answer first, then paper rules, then the rest."""
    meter = evaluator.meter
    bound = f"--max-generations {meter.bound}"
    try:
        held = factory(meter)
    except WorkExhausted:
        return f"not measured within {bound} (the held-out reference did not fit)"
    order = [(r, r.best) for r in results] + [(r, r.paper) for r in results if r.paper is not None] + \
        [(r, s) for r in results for s in r.shown]
    scored: dict[tuple[object, ...], dict[str, float]] = {}
    missing: set[tuple[object, ...]] = set()
    for result, record in order:
        if record is None or record.number in result.heldout:
            continue
        if record.plan not in scored:
            try:
                scored[record.plan] = held.evaluate(record.plan).metrics
            except WorkExhausted:
                missing.add(record.plan)
                continue
        result.heldout[record.number] = scored[record.plan]
    return f"{len(missing)} plan(s) not scored held out within {bound}" if missing else None


def _bound_note(outcome: SearchOutcome, settings: SearchSettings, evaluator: Evaluator,
                results: list[BudgetResult]) -> str | None:
    """What the bound stopped, and the bound that would complete the asked trials (the study resumes)."""
    if not outcome.exhausted or settings.max_generations is None:
        return None
    spent = sum(outcome.generations.values())
    left = max(0, settings.trials - completed_count(outcome.study))
    unmeasured = sum(1 for r in results if r.paper is None)
    more = left * evaluator.items
    text = (f"The search stopped at --max-generations {settings.max_generations} ({spent} item-generations spent in "
            f"the study), with {completed_count(outcome.study)} of {settings.trials} trials done.")
    if more:
        text += (f" --max-generations {spent + more} would run the other {left} (each {evaluator.items} "
                 "item-generations), resuming this study")
        text += f", plus {evaluator.items} per budget to measure the paper rule." if unmeasured else "."
    return text
