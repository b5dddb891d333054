"""Optuna search of Δ-Cache schedules: quality (max) vs MACs (min), the budget as a constraint.

The search depends only on an :class:`~autodelta.evaluation.Evaluator`. It enqueues the
known answers first (the paper's rule, the baselines that fit the space), answers
duplicate plans from the study instead of re-evaluating them, and stores every figure
as trial user attributes, so the study alone (SQLite by default, any Optuna storage
with ``--storage``) is enough to resume, to run several workers, and to report.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from tqdm.auto import tqdm

from autodelta.cost import Budget, CostModel, paper_rule
from autodelta.errors import AutodeltaError, BudgetError
from autodelta.evaluator import Evaluation, Evaluator
from autodelta.explicit_sampler import ExplicitPlanSampler
from autodelta.logs import quieted
from autodelta.metrics import get_metric
from autodelta.model_sampler import MODEL_ATTR
from autodelta.schedule import Step, decode_plan, encode_plan
from autodelta.spaces import Param, SearchSpace, known_seeds
from autodelta.storage import backend_of, make_storage, redact_text, redact_url
from autodelta.work import PHASES, WorkExhausted

logger = logging.getLogger(__name__)

QUALITY_CAP = 100.0  # PSNR of identical images is +inf; Optuna objectives must be finite


@dataclass
class TrialRecord:
    """One completed trial as the report needs it."""

    number: int
    params: dict[str, Any]
    plan: tuple[Step, ...]
    quality: float
    macs: float
    speedup: float
    metrics: dict[str, float]
    feasible: bool
    label: str | None = None
    screen: float | None = None  # its score on the screening items, when the sampler screened it


@dataclass
class SearchSettings:
    budget: Budget
    space: SearchSpace
    metric: str = "psnr"
    trials: int = 60
    storage: str | None = None
    study_name: str = "autodelta"
    sampler: str = "auto"
    seed: int = 0
    resume_any: bool = False
    model: str = "model"
    seed_known: bool = True
    screen_items: int | None = None  # the screening / probing subset (None: a quarter, at least 4)
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()  # several budgets served by one study (``budget`` is then the loosest)
    max_generations: int | None = None  # bound on the study's item-generations, every phase included

    @property
    def all_budgets(self) -> tuple[Budget, ...]:
        return self.budgets or (self.budget,)


SAMPLERS = ("auto", "model", "local", "tpe", "nsga2", "random")
MODEL_TRIALS = 20
"""Default trials of the model sampler for one budget; each further budget adds :data:`MODEL_TRIALS_PER_BUDGET`."""
MODEL_TRIALS_PER_BUDGET = 10
OTHER_TRIALS = 60
"""Default trials of the other samplers (the pre-model default)."""
PLAN_SAMPLERS = ("model", "local")  # they propose whole plans of per-step (explicit) spaces


def check_sampler(name: str, space: SearchSpace | None = None) -> None:
    if name not in SAMPLERS:
        raise AutodeltaError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
    if name in PLAN_SAMPLERS and space is not None and not space.family_impl.per_step:
        raise AutodeltaError(f"sampler {name!r} searches per-step spaces (explicit), not {space.name} ({space.family}); "
                             "use --sampler tpe there, or --space explicit")


def default_trials(settings: SearchSettings) -> int:
    """``--trials`` when not given: the model sampler needs far fewer (each trial is a full evaluation)."""
    if sampler_name(settings) == "model":
        return MODEL_TRIALS + MODEL_TRIALS_PER_BUDGET * (len(settings.all_budgets) - 1)
    return OTHER_TRIALS


def minimum_generations(settings: SearchSettings, items: int, steps: int) -> int:
    """The least item-generations a fresh study needs: the reference, the model's probes, one trial."""
    probes = (2 * steps - 3) * probe_items(items) if sampler_name(settings) == "model" else 0
    return 2 * items + probes


def sampler_name(settings: SearchSettings) -> str:
    """``auto``: the model sampler on per-step spaces, TPE on parametric families."""
    if settings.sampler == "auto":
        return "model" if settings.space.family_impl.per_step else "tpe"
    return settings.sampler


def _sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """Constraint-aware samplers: the budget reaches them through ``trial.set_constraint``.

    The plan samplers need the evaluator (and the model its study calibrates), so the study
    opens with a placeholder and :func:`attach_sampler` puts them in place.
    """
    check_sampler(settings.sampler, settings.space)
    name = sampler_name(settings)
    if name in PLAN_SAMPLERS:
        return optuna.samplers.RandomSampler(seed=settings.seed)
    if name == "tpe":
        with warnings.catch_warnings():  # `multivariate` and `group` are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=20)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    raise AssertionError(settings.sampler)


def screen_items(items: int, asked: int | None = None) -> int:
    """How many items the cheap fidelity (the local sampler's screening) uses: a quarter, at least 4."""
    return min(items, asked if asked is not None else max(4, items // 4))


def probe_items(items: int) -> int:
    """How many items the error model's probes use: half, at least 4. A gain is a ratio dominated by the
    few most sensitive items, so a quarter misjudged tiny-dit's step 1 fourfold (measured)."""
    return min(items, max(4, items // 2))


def screen_evaluator(evaluator: Evaluator, items: int | None = None) -> Evaluator:
    """The cheap fidelity: a spread subset of the calibration items (see :func:`screen_items`)."""
    count = screen_items(evaluator.items, items)
    return evaluator.subset(count) if count < evaluator.items else evaluator


def attach_sampler(study: optuna.Study, settings: SearchSettings, evaluator: Evaluator) -> None:
    """Put the plan samplers in place (the model's probes run here, once per study)."""
    name = sampler_name(settings)
    if name == "local":
        from autodelta.plan_sampler import PlanSampler

        study.sampler = PlanSampler(settings.space, evaluator, settings.budget, settings.metric,
                                    screen=screen_evaluator(evaluator, settings.screen_items), seed=settings.seed)
    elif name == "model":
        from autodelta.model_sampler import ModelSampler, prepare_model

        probe = evaluator.subset(probe_items(evaluator.items)) if probe_items(evaluator.items) < evaluator.items \
            else evaluator
        model = prepare_model(study, evaluator, probe, evaluator.meter)
        study.sampler = ModelSampler(settings.space, evaluator, settings.all_budgets, model, settings.metric,
                                     seed=settings.seed)


def open_study(settings: SearchSettings, evaluator: Evaluator | None = None) -> optuna.Study:
    """Create or load the study; refuse one made for another model, budget, space or metric.

    With ``evaluator``, the plan samplers are attached (see :func:`attach_sampler`).
    """
    metric = get_metric(settings.metric)
    sampler = _sampler(settings)  # an unknown sampler is refused before any storage is touched
    identity = {"model": settings.model, "budget": settings.budget.speedup, "space": settings.space.name,
                "family": settings.space.family, "metric": settings.metric, **settings.extra_attrs}
    if settings.budgets:
        identity["budgets"] = ",".join(b.text for b in settings.all_budgets)
    url = settings.storage
    if url is not None:
        backend_of(url)  # a malformed URL is one line, at once
    attempts = 6
    study = None
    for attempt in range(attempts):
        try:
            with quieted("optuna"):
                study = optuna.create_study(
                    study_name=settings.study_name, storage=make_storage(url) if url else None, load_if_exists=True,
                    directions=["maximize" if metric.higher_is_better else "minimize", "minimize"],
                    sampler=sampler,
                )
            break
        except Exception as exc:
            # workers that open a fresh database at once race on creating its schema (a duplicate
            # key, a table that already exists, a locked SQLite file): retry those briefly; anything
            # else (a server that is down or silent, a wrong password) is said at once
            if attempt == attempts - 1 or not _schema_race(exc):
                reason = redact_text(str(exc).splitlines()[0] if str(exc) else "", url or "")[:160]
                raise AutodeltaError(
                    f"storage {redact_url(url or 'memory')!r} cannot be opened ({type(exc).__name__}: {reason}); "
                    "check the URL and that the database is reachable") from None
            time.sleep(0.2 * (attempt + 1))
    assert study is not None
    existing = {k: study.user_attrs.get(k) for k in identity}
    if study.user_attrs and existing != identity and not settings.resume_any:
        diff = ", ".join(f"{k}={existing[k]!r} (asked {identity[k]!r})" for k in identity if existing[k] != identity[k])
        raise AutodeltaError(f"study {settings.study_name!r} exists with other settings: {diff}; use another --study "
                             "name, or --resume-any to continue it anyway")
    if not study.user_attrs:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    if evaluator is not None:
        attach_sampler(study, settings, evaluator)
    return study


GENERATIONS = "generations"
"""Study attribute: item-generations by phase that belong to no trial (reference, model probes)."""


def record_generations(study: optuna.Study, spent: dict[str, int]) -> None:
    """Add this process's reference and probe generations to the study's ledger."""
    extra = {k: v for k, v in spent.items() if k in ("reference", "model") and v}
    if extra:
        ledger = dict(study.user_attrs.get(GENERATIONS, {}))
        for key, value in extra.items():
            ledger[key] = ledger.get(key, 0) + value
        study.set_user_attr(GENERATIONS, ledger)


def generations_by_phase(study: optuna.Study) -> dict[str, int]:
    """The study's item-generations by phase: its ledger plus what each trial spent (screening, evaluation)."""
    out = dict.fromkeys(PHASES, 0)
    out.update({k: int(v) for k, v in study.user_attrs.get(GENERATIONS, {}).items()})
    for t in study.get_trials(deepcopy=False):
        for phase in ("screening", "trials"):
            out[phase] += int(t.user_attrs.get(f"{GENERATIONS}_{phase}", 0))
    return out


_RACES = ("duplicate key", "already exists", "database is locked", "UniqueViolation", "IntegrityError")


def _schema_race(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _RACES)


def best_reachable_speedup(space: SearchSpace, cost: CostModel, steps: int, samples: int = 400, seed: int = 0) -> float:
    """Largest MACs speed-up the space can express: its upper corner and a seeded random sample."""
    import random

    rng = random.Random(seed)
    blocks = cost.num_blocks

    def corner(param: Param, low: float, high: float) -> Any:
        return high if param.name not in {"b", "s_early", "s_late"} else low

    def draw(param: Param, low: float, high: float) -> Any:
        return rng.randint(int(low), int(high)) if param.kind == "int" else rng.uniform(low, high)

    best = 1.0
    if space.family_impl.per_step:  # one full step, then one range everywhere: the fastest plans it has
        for cached in space.range_set(blocks):
            best = max(best, cost.speedup([None] + [cached] * (steps - 1)))
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


class Objective:
    """Plan of the sampled parameters → (quality, MACs); duplicate plans are answered from the study."""

    def __init__(self, evaluator: Evaluator, settings: SearchSettings, study: optuna.Study) -> None:
        self.evaluator, self.settings, self.study = evaluator, settings, study
        self.metric = get_metric(settings.metric)
        self.reused = 0
        self.exhausted = False
        self._screened = evaluator.meter.spent.get("screening", 0)

    def _charge_screening(self, trial: optuna.Trial) -> None:
        """What the sampler screened to propose this trial belongs to it in the ledger."""
        screened = self.evaluator.meter.spent.get("screening", 0)
        if screened > self._screened:
            trial.set_user_attr(f"{GENERATIONS}_screening", screened - self._screened)
        self._screened = screened

    def _room(self) -> bool:
        """Whether the study's ledger leaves room for one more evaluation under --max-generations."""
        bound = self.settings.max_generations
        if bound is None:
            return True
        return sum(generations_by_phase(self.study).values()) + self.evaluator.items <= bound

    def _known(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        known = {}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "plan" in t.user_attrs:
                known[tuple(map(str, t.user_attrs["plan"]))] = t.user_attrs
        return known

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        steps, blocks = self.evaluator.steps, self.evaluator.num_blocks

        def suggest(param: Param, low: float, high: float) -> Any:
            if param.kind == "int":
                return trial.suggest_int(param.name, int(low), int(high))
            return trial.suggest_float(param.name, low, high, log=param.log)

        values = self.settings.space.sample(suggest, steps, blocks)
        plan = self.settings.space.plan(values, steps, blocks)
        plan_list = encode_plan(plan)
        self._charge_screening(trial)
        attrs = self._known().get(tuple(map(str, plan_list)))
        if attrs is not None:  # same explicit plan as an earlier trial: answer from the study
            self.reused += 1
            metrics, macs, speedup = attrs["metrics"], attrs["macs"], attrs["speedup"]
            trial.set_user_attr("duplicate_of", attrs.get("trial"))
            if "item_mse" in attrs:
                trial.set_user_attr("item_mse", attrs["item_mse"])
        else:
            if not self._room():  # the bound is reached: nothing more is generated
                self.exhausted = True
                self.study.stop()
                raise optuna.TrialPruned(f"--max-generations {self.settings.max_generations} reached")
            trial.set_user_attr(f"{GENERATIONS}_trials", self.evaluator.items)  # reserved while it runs
            try:
                evaluation: Evaluation = self.evaluator.evaluate(plan)
            except WorkExhausted:
                trial.set_user_attr(f"{GENERATIONS}_trials", 0)
                self.exhausted = True
                self.study.stop()
                raise optuna.TrialPruned(f"--max-generations {self.settings.max_generations} reached") from None
            metrics, macs, speedup = evaluation.metrics, evaluation.macs, evaluation.speedup
            try:
                trial.set_user_attr("item_mse", [_finite_or_none(v) or 0.0 for v in evaluation.item_mse()])
            except ValueError:
                pass  # metrics without an image error: the model is not calibrated on this trial
        sampler = self.study.sampler
        screened = sampler.screened(plan) if isinstance(sampler, ExplicitPlanSampler) else None
        if screened is not None:  # both fidelities: for the report
            trial.set_user_attr("screen", _finite_or_none(screened))
        trial.set_user_attr("trial", trial.number)
        trial.set_user_attr("plan", plan_list)
        trial.set_user_attr("metrics", {k: _finite_or_none(v) for k, v in metrics.items()})
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("speedup", speedup)
        trial.set_constraint("budget", self.settings.budget.speedup - speedup)  # feasible when <= 0
        quality = metrics[self.settings.metric]
        if math.isnan(quality) or quality == (-math.inf if self.metric.higher_is_better else math.inf):
            # a broken generation is never a schedule: Optuna marks a NaN objective FAIL, and the
            # study keeps it out of every record, Pareto front and choice
            trial.set_user_attr("failed", f"{self.settings.metric} is {quality}")
            logger.warning("trial %d failed: %s is %s; it is never chosen", trial.number, self.settings.metric, quality)
            return math.nan, macs
        if math.isinf(quality):  # identical to full compute
            quality = QUALITY_CAP if self.metric.higher_is_better else 0.0
        return quality, macs


def _finite_or_none(value: float) -> float | None:
    if math.isnan(value):
        return None
    return QUALITY_CAP if value == math.inf else (-QUALITY_CAP if value == -math.inf else value)


def records(study: optuna.Study, budget: Budget, metric: str) -> list[TrialRecord]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "plan" not in t.user_attrs:
            continue
        speedup = float(t.user_attrs["speedup"])
        out.append(TrialRecord(
            number=t.number, params=dict(t.params), plan=decode_plan(t.user_attrs["plan"], f"trial {t.number}"),
            quality=float(t.values[0]), macs=float(t.values[1]), speedup=speedup,
            metrics=dict(t.user_attrs["metrics"]), feasible=budget.allows(speedup),
            label=t.user_attrs.get("seed_label"), screen=t.user_attrs.get("screen"),
        ))
    return out


def pareto_front(items: Sequence[TrialRecord], higher_is_better: bool = True) -> list[TrialRecord]:
    """Non-dominated trials (quality vs MACs), one per distinct plan, sorted by MACs."""
    unique: dict[tuple[Step, ...], TrialRecord] = {}
    for r in items:
        unique.setdefault(r.plan, r)
    sign = 1.0 if higher_is_better else -1.0

    def dominates(a: TrialRecord, b: TrialRecord) -> bool:
        qa, qb = sign * a.quality, sign * b.quality
        return qa >= qb and a.macs <= b.macs and (qa > qb or a.macs < b.macs)

    front = [r for r in unique.values() if not any(dominates(o, r) for o in unique.values() if o is not r)]
    return sorted(front, key=lambda r: r.macs)


def best_within_budget(items: Sequence[TrialRecord], higher_is_better: bool = True) -> TrialRecord | None:
    feasible = [r for r in items if r.feasible]
    if not feasible:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(feasible, key=lambda r: (sign * r.quality, -r.macs, -r.number))


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
    """Extra worker processes on the same study (see :mod:`autodelta.workers`)."""

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
        done = _completed_count(study)
        _estimate(bar, study, settings, evaluator.items, max(0, settings.trials - done))

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = best_within_budget(records(study, settings.budget, settings.metric), metric.higher_is_better)
            if best is not None:
                bar.set_postfix_str(f"{_completed_count(study)}/{settings.trials} trials, best {settings.metric} "
                                    f"{best.quality:.2f} at {best.speedup:.2f}x")
            _estimate(bar, study, settings, evaluator.items, max(0, settings.trials - _completed_count(study)))

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
    from autodelta.model_sampler import ModelSampler

    if not isinstance(study.sampler, ModelSampler):
        return None
    return rank_correlation([(study.sampler.model.quality(r.plan), r.quality) for r in items
                             if any(s is not None for s in r.plan)])


def rank_correlation(pairs: Sequence[tuple[float, float]]) -> tuple[float, int] | None:
    """Spearman rank correlation of the pairs' two values (finite pairs only), and how many; ``None`` below 3."""
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic), len(pairs)


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


def _completed_count(study: optuna.Study) -> int:
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
    while _completed_count(study) < trials and not should_stop():
        failed = _failed_count(study) - failed_before
        if failed > max(10, trials):
            raise AutodeltaError(f"{failed} trials failed (NaN or -inf quality) and only {_completed_count(study)} "
                                 "completed; the model's generations are broken, check its weights and dtype")
        try:
            with quieted("optuna", level=logging.ERROR):  # INFO/WARNING per trial would drown the progress bar
                study.optimize(objective, n_trials=trials - _completed_count(study),
                               callbacks=[*callbacks, stop, stop_when_asked])
        except ValueError as exc:
            if "Cannot tell a COMPLETE trial" not in str(exc):
                raise
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def _failed_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))


def enqueue_known(study: optuna.Study, evaluator: Evaluator, settings: SearchSettings) -> list[str]:
    """Queue the paper rule's schedule and the baselines that the space can express.

    With several budgets, the paper rule at each; the model sampler takes only the paper
    rule (its own seeds come from the DP, and every trial costs a full evaluation).
    """
    only_rule = sampler_name(settings) == "model"
    labels = []
    for budget in settings.all_budgets:
        rule = paper_rule(evaluator.cost, evaluator.steps, budget)

        def fits(plan: Sequence[Step], budget: Budget = budget) -> bool:
            return budget.met_by(evaluator.cost, plan)

        for label, values in known_seeds(settings.space, rule, evaluator.steps, evaluator.num_blocks, fits):
            if only_rule and label != "paper rule":
                continue
            label = label if not settings.budgets else f"{label} {budget}"
            free = {p.name: values[p.name] for p in settings.space.expanded(evaluator.steps) if p.kind != "fixed"}
            study.enqueue_trial(free, user_attrs={"seed_label": label}, skip_if_exists=True)
            labels.append(label)
    return labels
