"""Running a search: until the trials or the generation bound are reached, Ctrl-C safe, with a progress
bar in item-generations."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from tqdm.auto import tqdm

from autodelta.errors import AutodeltaError, BudgetError
from autodelta.evaluation.evaluator import Evaluator
from autodelta.evaluation.metrics import get_metric
from autodelta.evaluation.work import WorkMeter
from autodelta.logs import quieted
from autodelta.plan.cost import Budget, CostModel
from autodelta.search.ledger import bind_meter, cached_items, generations_by_phase
from autodelta.search.objective import Objective
from autodelta.search.records import TrialRecord, best_within_budget, pareto_front, rank_correlation, records
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import Param, ParamKind, SearchSpace
from autodelta.search.study import attach_sampler, enqueue_known, open_study


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
    run_generations: dict[str, int] = field(default_factory=dict)  # this run's (every process of it), by phase
    cached: int = 0  # reference items this run read from the cache instead of generating
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
    for budget in settings.all_budgets:
        check_budget_reachable(settings.space, evaluator.cost, evaluator.steps, budget)
    meter = evaluator.meter
    bar = tqdm(total=0, desc=f"search {settings.space.name} @ {','.join(b.text for b in settings.all_budgets)}",
               disable=None if progress else True, unit="gen")
    start = time.perf_counter()
    objective = None
    with _interrupts(bar, workers) as stopping:
        try:
            study = _open_with_progress(settings, evaluator, bar)
            if not study.trials and settings.seed_known:
                enqueue_known(study, evaluator, settings)
            objective = Objective(evaluator, settings, study)
            objective.exhausted = not meter.allows(evaluator.items)  # a study already at its bound: no more trials
            _optimize(study, objective, settings, bar, workers, stopping)
        except KeyboardInterrupt:
            stopping.set()
        finally:
            meter.on_charge = None
            if workers is not None:
                workers.stop()  # the main process is done: workers finish their trial in progress and exit
                workers.join()
            bar.close()
    if stopping.is_set() and objective is None:
        raise KeyboardInterrupt  # interrupted before the study had a trial: nothing to write
    return _outcome(study, settings, objective, meter, evaluator.items, time.perf_counter() - start, stopping.is_set())


@contextlib.contextmanager
def _interrupts(bar: Any, workers: Helpers | None) -> Iterator[threading.Event]:
    """The first Ctrl-C sets the yielded event (and asks workers to stop after their trial); a second aborts."""
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
    try:
        yield stopping
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _optimize(study: optuna.Study, objective: Objective, settings: SearchSettings, bar: Any,
              workers: Helpers | None, stopping: threading.Event) -> None:
    """Trials until ``settings.trials``, the bound or Ctrl-C, with the workers alongside and the bar's total kept true."""
    metric = get_metric(settings.metric)
    meter, items = objective.evaluator.meter, objective.evaluator.items
    _estimate(bar, meter, items, max(0, settings.trials - completed_count(study)))

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = best_within_budget(records(study, settings.budget, settings.metric), metric.higher_is_better)
        if best is not None:
            bar.set_postfix_str(f"{completed_count(study)}/{settings.trials} trials, best {settings.metric} "
                                f"{best.quality:.2f} at {best.speedup:.2f}x")
        _estimate(bar, meter, items, max(0, settings.trials - completed_count(study)))

    if objective.exhausted or completed_count(study) >= settings.trials:
        return
    if workers is not None:
        workers.start()
    optimize_until(study, objective, settings.trials, [on_trial], lambda: stopping.is_set() or objective.exhausted)


def _outcome(study: optuna.Study, settings: SearchSettings, objective: Objective | None, meter: WorkMeter, items: int,
             seconds: float, interrupted: bool) -> SearchOutcome:
    metric = get_metric(settings.metric)
    done = records(study, settings.budget, settings.metric)
    exhausted = bool(objective and objective.exhausted) or not meter.allows(items)
    return SearchOutcome(study=study, records=done, best=best_within_budget(done, metric.higher_is_better),
                         pareto=pareto_front(done, metric.higher_is_better), seconds=seconds,
                         duplicates=objective.reused if objective else 0, interrupted=interrupted,
                         exhausted=exhausted and completed_count(study) < settings.trials,
                         generations=generations_by_phase(study),
                         run_generations=generations_by_phase(study, settings.run),
                         cached=cached_items(study, settings.run), model_correlation=_model_correlation(study, done))


def _model_correlation(study: optuna.Study, items: Sequence[TrialRecord]) -> tuple[float, int] | None:
    """How well the model sampler's prior (probes only, no trial) ranked the trials: Spearman, and over how many."""
    from autodelta.search.samplers.model import ModelSampler

    if not isinstance(study.sampler, ModelSampler):
        return None
    return rank_correlation([(study.sampler.model.quality(r.plan), r.quality) for r in items
                             if any(s is not None for s in r.plan)])


def _open_with_progress(settings: SearchSettings, evaluator: Evaluator, bar: Any) -> optuna.Study:
    """Open the study, book the evaluator's work in its ledger under the bound, and attach its sampler (the
    model's probes run here, sized to the room the bound leaves), with every generation on the bar."""
    study = open_study(settings)
    meter = bind_meter(evaluator.meter, study, settings.run, settings.max_generations)
    bar.total = bar.n = meter.total  # the reference, generated with the evaluator
    meter.on_charge = functools.partial(_advance, bar)
    attach_sampler(study, settings, evaluator)
    return study


def _advance(bar: Any, items: int) -> None:
    if bar.n + items > bar.total:
        bar.total = bar.n + items
    bar.update(items)


def _estimate(bar: Any, meter: WorkMeter, items: int, remaining: int) -> None:
    """What the bar expects in all: what was spent, plus one evaluation per remaining trial (capped by the bound)."""
    total = bar.n + remaining * items
    room = meter.room()
    if room is not None:
        total = min(total, bar.n + room)
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
