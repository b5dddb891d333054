"""Running a search: until the trials or the generation bound are reached, Ctrl-C safe, with a progress
bar in item-generations."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from tqdm.auto import tqdm

from autodelta.errors import AutodeltaError, BudgetError
from autodelta.evaluation.evaluator import Evaluator
from autodelta.evaluation.metrics import get_metric
from autodelta.logs import quieted
from autodelta.plan.cost import Budget, CostModel
from autodelta.search.objective import Objective
from autodelta.search.records import TrialRecord, best_within_budget, pareto_front, rank_correlation, records
from autodelta.search.samplers.model import MODEL_ATTR
from autodelta.search.settings import SearchSettings, probe_items, sampler_name
from autodelta.search.spaces import Param, ParamKind, SearchSpace
from autodelta.search.study import attach_sampler, enqueue_known, generations_by_phase, open_study, record_generations


def best_reachable_speedup(space: SearchSpace, cost: CostModel, steps: int, samples: int = 400, seed: int = 0) -> float:
    """Largest MACs speed-up the space can express: its upper corner and a seeded random sample."""
    import random

    rng = random.Random(seed)
    blocks = cost.num_blocks

    def corner(param: Param, low: float, high: float) -> Any:
        return high if param.name not in {"b", "s_early", "s_late"} else low

    def draw(param: Param, low: float, high: float) -> Any:
        return rng.randint(int(low), int(high)) if param.kind is ParamKind.INT else rng.uniform(low, high)

    best = 1.0
    for plan in space.family_impl.fastest_plans(steps, space.range_set(blocks)):
        best = max(best, cost.speedup(plan))
    for suggest in [corner] + [draw] * samples:
        try:
            plan = space.plan(space.sample(suggest, steps, blocks), steps, blocks)
        except AutodeltaError:
            continue
        best = max(best, cost.speedup(plan))
    return best


def check_budget_reachable(space: SearchSpace, cost: CostModel, steps: int, budget: Budget) -> None:
    reachable = best_reachable_speedup(space, cost, steps)
    if not budget.allows(reachable):
        raise BudgetError(f"budget {budget} is out of reach in space {space.name}: the best reachable speed-up "
                          f"is {reachable:.3f}x; lower the budget or widen the space")


@dataclass
class SearchOutcome:
    study: optuna.Study
    records: list[TrialRecord]
    best: TrialRecord | None
    pareto: list[TrialRecord]
    seconds: float
    duplicates: int
    interrupted: bool = False
    exhausted: bool = False  # stopped by --max-generations
    generations: dict[str, int] = field(default_factory=dict)  # the study's item-generations by phase
    model_correlation: tuple[float, int] | None = None  # the error model's Spearman with real scores, and over how many


class Helpers(Protocol):
    """Extra worker processes on the same study (see :mod:`autodelta.search.workers`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self) -> None: ...


def run_search(evaluator: Evaluator, settings: SearchSettings, progress: bool = True,
               workers: Helpers | None = None) -> SearchOutcome:
    """Run (or resume) the study until it has ``settings.trials`` completed trials, or its item-generations
    reach ``settings.max_generations``.

    The progress bar counts item-generations (the reference, the model's probes, screening
    and trials), so its rate and ETA are the search's real cost. The first Ctrl-C stops after
    the trials in progress (here and in the workers), so every completed trial is kept and
    the outputs can be written; a second one aborts.
    """
    metric = get_metric(settings.metric)
    for budget in settings.all_budgets:
        check_budget_reachable(settings.space, evaluator.cost, evaluator.steps, budget)
    meter = evaluator.meter
    bar = tqdm(total=0, desc=f"search {settings.space.name} @ {','.join(b.text for b in settings.all_budgets)}",
               disable=None if progress else True, unit="gen")
    start = time.perf_counter()
    stopping = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        if workers is not None:
            workers.stop()
        bar.write("autodelta: stopping after the trials in progress (Ctrl-C again to abort now)")

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_interrupt)
    objective = None
    try:
        study = _open_with_progress(settings, evaluator, bar)
        if not study.trials and settings.seed_known:
            enqueue_known(study, evaluator, settings)
        objective = Objective(evaluator, settings, study)
        done = completed_count(study)
        _estimate(bar, study, settings, evaluator.items, max(0, settings.trials - done))

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = best_within_budget(records(study, settings.budget, settings.metric), metric.higher_is_better)
            if best is not None:
                bar.set_postfix_str(f"{completed_count(study)}/{settings.trials} trials, best {settings.metric} "
                                    f"{best.quality:.2f} at {best.speedup:.2f}x")
            _estimate(bar, study, settings, evaluator.items, max(0, settings.trials - completed_count(study)))

        if workers is not None:
            workers.start()
        if done < settings.trials:
            optimize_until(study, objective, settings.trials, [on_trial],
                           lambda: stopping.is_set() or (objective is not None and objective.exhausted))
    except KeyboardInterrupt:
        stopping.set()
    finally:
        meter.on_charge = None
        if workers is not None:
            workers.join()  # they stop by themselves at --trials, or after their trial when asked
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        bar.close()
    if stopping.is_set() and objective is None:
        raise KeyboardInterrupt  # interrupted before the study had a trial: nothing to write
    interrupted = stopping.is_set()
    items = records(study, settings.budget, settings.metric)
    return SearchOutcome(study=study, records=items, best=best_within_budget(items, metric.higher_is_better),
                         pareto=pareto_front(items, metric.higher_is_better), seconds=time.perf_counter() - start,
                         duplicates=objective.reused if objective else 0, interrupted=interrupted,
                         exhausted=bool(objective and objective.exhausted),
                         generations=generations_by_phase(study), model_correlation=_model_correlation(study, items))


def _model_correlation(study: optuna.Study, items: Sequence[TrialRecord]) -> tuple[float, int] | None:
    """How well the model sampler's prior (probes only, no trial) ranked the trials: Spearman, and over how many."""
    from autodelta.search.samplers.model import ModelSampler

    if not isinstance(study.sampler, ModelSampler):
        return None
    return rank_correlation([(study.sampler.model.quality(r.plan), r.quality) for r in items
                             if any(s is not None for s in r.plan)])


def _open_with_progress(settings: SearchSettings, evaluator: Evaluator, bar: Any) -> optuna.Study:
    """Open the study and attach its sampler (the model's probes run here) with every generation on the bar;
    the reference's and the probes' generations go to the study's ledger, and the bound to the meter."""
    meter = evaluator.meter
    bar.total = bar.n = meter.total  # the reference, generated with the evaluator
    meter.on_charge = functools.partial(_advance, bar)
    study = open_study(settings)
    record_generations(study, meter.unbooked("reference"))
    if settings.max_generations is not None:
        room = settings.max_generations - sum(generations_by_phase(study).values())
        probes = 0
        if sampler_name(settings) == "model" and study.user_attrs.get(MODEL_ATTR) is None:
            probes = evaluator.probe_count * probe_items(evaluator.items)
        if room < probes + evaluator.items:
            raise AutodeltaError(
                f"--max-generations {settings.max_generations} leaves room for {max(room, 0)} more item-generations, "
                f"but the error model's probes need {probes} and one trial {evaluator.items}; raise it to at least "
                f"{settings.max_generations - room + probes + evaluator.items}")
        meter.limit = meter.total + room
    attach_sampler(study, settings, evaluator)
    record_generations(study, meter.unbooked("model"))
    return study


def _advance(bar: Any, items: int) -> None:
    if bar.n + items > bar.total:
        bar.total = bar.n + items
    bar.update(items)


def _estimate(bar: Any, study: optuna.Study, settings: SearchSettings, items: int, remaining: int) -> None:
    """What the bar expects in all: what was spent, plus one evaluation per remaining trial (capped by the bound)."""
    total = bar.n + remaining * items
    if settings.max_generations is not None:
        total = min(total, max(bar.n, settings.max_generations - sum(generations_by_phase(study).values()) + bar.n))
    bar.total = max(total, bar.n)
    bar.refresh()


def completed_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def optimize_until(study: optuna.Study, objective: Callable[[optuna.Trial], Any], trials: int,
                   callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
                   should_stop: Callable[[], bool] = lambda: False) -> None:
    """Optimize until the study holds ``trials`` completed trials, whatever other workers do.

    On SQLite two processes can pop the same enqueued trial; the second one's ``tell`` then
    fails ("Cannot tell a COMPLETE trial", or Optuna's ``UpdateFinishedTrialError`` when it
    finished first). Its result was identical (same parameters, deterministic evaluation)
    and is already stored, so the worker just goes on. When
    ``should_stop()`` turns true, the trial in progress finishes and nothing new starts.
    """
    stop = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))

    def stop_when_asked(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if should_stop():
            study.stop()

    failed_before = _failed_count(study)
    while completed_count(study) < trials and not should_stop():
        failed = _failed_count(study) - failed_before
        if failed > max(10, trials):
            raise AutodeltaError(f"{failed} trials failed (NaN or -inf quality) and only {completed_count(study)} "
                                 "completed; the model's generations are broken, check its weights and dtype")
        try:
            with quieted("optuna", level=logging.ERROR):  # INFO/WARNING per trial would drown the progress bar
                study.optimize(objective, n_trials=trials - completed_count(study),
                               callbacks=[*callbacks, stop, stop_when_asked])
        except ValueError as exc:
            if "Cannot tell a COMPLETE trial" not in str(exc):
                raise
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def _failed_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
