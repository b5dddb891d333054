"""The Optuna study: opened or resumed for its settings, its sampler attached, known schedules enqueued,
and its ledger of item-generations."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import optuna

from autodelta.errors import AutodeltaError
from autodelta.evaluation.evaluator import Evaluator
from autodelta.evaluation.metrics import get_metric
from autodelta.logs import quieted
from autodelta.plan.cost import Budget, paper_rule
from autodelta.plan.schedule import Step
from autodelta.search.families.base import PLAN_SAMPLERS
from autodelta.search.settings import (
    SearchSettings,
    check_sampler,
    model_screen_items,
    probe_items,
    sampler_name,
    screen_items,
    screens_within,
)
from autodelta.search.spaces import ParamKind, known_seeds
from autodelta.search.storage import backend_of, make_storage, redact_text, redact_url


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


def screen_evaluator(evaluator: Evaluator, items: int | None = None) -> Evaluator:
    """The cheap fidelity: a spread subset of the calibration items (see :func:`screen_items`)."""
    count = screen_items(evaluator.items, items)
    return evaluator.subset(count) if count < evaluator.items else evaluator


def attach_sampler(study: optuna.Study, settings: SearchSettings, evaluator: Evaluator, probing: bool = True) -> None:
    """Put the plan samplers in place (the model's probes run here, once per study, unless ``probing`` is off:
    workers take the model the main process stored)."""
    name = sampler_name(settings)
    if name == "local":
        from autodelta.search.samplers.local import PlanSampler

        study.sampler = PlanSampler(settings.space, evaluator, settings.budget, settings.metric,
                                    screen=screen_evaluator(evaluator, settings.screen_items), seed=settings.seed)
    elif name == "model":
        from autodelta.search.samplers.model import ModelSampler, prepare_model

        room = evaluator.meter.room()
        default_probes = evaluator.probe_count * probe_items(evaluator.items)
        model = prepare_model(study, evaluator, evaluator.meter, probing, settings.probe_items)
        screens = screens_within(room, evaluator.items, default_probes, settings.trials, settings.model_screen)
        count = settings.screen_items or model_screen_items(evaluator.items)
        screen = evaluator.subset(count) if screens > 1 and count < evaluator.items else None
        study.sampler = ModelSampler(settings.space, evaluator, settings.all_budgets, model, settings.metric,
                                     seed=settings.seed, screen=screen, screen_k=screens)


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


_RACES = ("duplicate key", "already exists", "database is locked", "UniqueViolation", "IntegrityError")


def _schema_race(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _RACES)


def enqueue_known(study: optuna.Study, evaluator: Evaluator, settings: SearchSettings) -> list[str]:
    """Queue the paper rule's schedule and the baselines that the space can express.

    With several budgets, the paper rule at each. The model sampler takes none: it proposes the
    paper rule itself after its own first plan (every trial costs a full evaluation, and under a
    bound of one trial the model's plan comes first).
    """
    if sampler_name(settings) == "model":
        return []  # the model sampler proposes the paper rule itself, right after its own first plan
    labels = []
    for budget in settings.all_budgets:
        rule = paper_rule(evaluator.cost, evaluator.steps, budget)

        def fits(plan: Sequence[Step], budget: Budget = budget) -> bool:
            return budget.met_by(evaluator.cost, plan)

        for label, values in known_seeds(settings.space, rule, evaluator.steps, evaluator.num_blocks, fits):
            label = label if not settings.budgets else f"{label} {budget}"
            free = {p.name: values[p.name] for p in settings.space.expanded(evaluator.steps) if p.kind is not ParamKind.FIXED}
            study.enqueue_trial(free, user_attrs={"seed_label": label}, skip_if_exists=True)
            labels.append(label)
    return labels
