"""``autodelta search``: the search, its workers and its outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from autodelta.cli.options import (
    ModelOptions,
    check_weights_fit,
    evaluator_factory,
    prepare_inputs,
    resolve_devices,
    warn_random,
)
from autodelta.errors import AutodeltaError
from autodelta.files import ensure_writable_dir, folder_lock


def run_search(options: ModelOptions, *, budget_text: str, trials: Optional[int], space_name: str, metric: str,
               calib: Optional[int], storage: Optional[str], study: Optional[str], jobs: int, out: Path, seed: int,
               resume_any: bool, sampler: str, devices: Optional[str] = None, budgets_text: Optional[str] = None,
               max_generations: Optional[int] = None) -> None:
    from autodelta.evaluation.calibration import item_set
    from autodelta.models.loading import load_profile

    options.check()
    profile = load_profile(options.model or "tiny-dit")  # input errors first: they answer before torch loads
    if (trials is not None and trials < 1) or jobs < 1:
        raise AutodeltaError("--trials and --jobs must be at least 1")
    check_weights_fit(profile, options)
    _, conditioning = prepare_inputs(profile, options)  # a resolution, prompt file or size that cannot run: before any study exists
    items = item_set(profile, calib, heldout=False)  # a bad --calib is refused before a study file exists
    check_bound(max_generations, len(items))
    device_list = resolve_devices(devices, options, jobs)
    out = ensure_writable_dir(out)
    with folder_lock(out, "search"):
        settings = _settings(profile, budgets_text or budget_text, space_name, metric, trials, storage, study, out,
                             sampler, seed, resume_any, max_generations)
        _search(options, profile, conditioning, settings, calib, jobs, device_list, out)


def _settings(profile: Any, budget_text: str, space_name: str, metric: str, trials: Optional[int],
              storage: Optional[str], study: Optional[str], out: Path, sampler: str, seed: int, resume_any: bool,
              max_generations: Optional[int]) -> Any:
    """The search's settings, every one checked (before any model is built)."""
    from autodelta.evaluation.metrics import get_metric
    from autodelta.plan.cost import parse_budgets, repeated_budgets
    from autodelta.search.run import check_budget_reachable
    from autodelta.search.settings import SearchSettings, check_sampler, check_settings, default_trials
    from autodelta.search.spaces import load_space

    budgets = parse_budgets(budget_text)
    for dropped, kept in repeated_budgets(budget_text):
        print(f"note: budget {dropped} is {kept} again; searching it once, as {kept}")
    space = load_space(space_name, profile.steps, profile.num_blocks)
    get_metric(metric)
    check_sampler(sampler, space)
    cost = profile.require_cost()
    for budget in budgets:
        check_budget_reachable(space, cost, profile.steps, budget)
    settings = SearchSettings(
        budget=budgets[0], budgets=tuple(budgets) if len(budgets) > 1 else (), space=space, metric=metric, trials=0,
        storage=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=study or f"{profile.name}-{space.name}-{'-'.join(b.text for b in budgets)}", sampler=sampler,
        seed=seed, resume_any=resume_any, model=profile.name, max_generations=max_generations,
    )
    settings.trials = trials if trials is not None else default_trials(settings)
    check_settings(settings)
    return settings


def _search(options: ModelOptions, profile: Any, conditioning: Any, settings: Any, calib: Optional[int], jobs: int,
            device_list: list[str], out: Path) -> None:
    """Open the study, generate (or read) the reference within the bound, search, then summarize and write."""
    from autodelta.cli.outputs import write_outputs
    from autodelta.evaluation.calibration import item_set
    from autodelta.search.results import summarize
    from autodelta.search.run import run_search as search
    from autodelta.search.settings import sampler_name
    from autodelta.search.storage import redact_url
    from autodelta.search.workers import WorkerPool

    placements = [replace(options, device=d).placement(profile) for d in device_list]
    warn_random(profile, options.random_weights, conditioning)
    record = settings.space.range_set(profile.num_blocks) if sampler_name(settings) == "model" else ()
    factory = replace(evaluator_factory(profile, options, placements[0], calib, False), record=record)
    bound = f", at most {settings.max_generations} item-generations" if settings.max_generations is not None else ""
    print(f"search: {profile.name}, budget {', '.join(b.text for b in settings.all_budgets)}, space "
          f"{settings.space.name} ({settings.space.family}), sampler {sampler_name(settings)}, metric {settings.metric}, "
          f"{settings.trials} trials{bound}, storage {redact_url(settings.storage or '')}, study {settings.study_name}, "
          f"on {', '.join(str(p) for p in placements[:jobs])}")
    evaluator = _reference(factory, settings, len(item_set(profile, calib, heldout=False)))
    worker_factories = [replace(factory, device=placements[(i + 1) % len(placements)].device) for i in range(jobs - 1)]
    workers = WorkerPool(worker_factories, settings) if jobs > 1 else None
    outcome = search(evaluator, settings, progress=True, workers=workers)
    heldout = replace(factory, heldout=True, record=(), reference_phase="report")
    results = summarize(outcome, settings, evaluator, heldout)
    figures = write_outputs(outcome, results, settings, evaluator, profile, out)
    for line in figures["summary"]:
        print(line)
    if outcome.interrupted:
        print(f"interrupted: the study keeps its {len(outcome.records)} completed trials; run the same command to resume")
        raise SystemExit(130)


def _reference(factory: Any, settings: Any, items: int) -> Any:
    """The evaluator, its reference generated (or read from the cache) within the bound, booked in the study.

    The study opens first: a bad storage URL, or a study made for other settings, is refused
    before any work, and the reference spends from the same ledger as everything after it.
    """
    from autodelta.evaluation.work import WorkExhausted, WorkMeter
    from autodelta.search.ledger import bind_meter
    from autodelta.search.study import open_study

    meter = bind_meter(WorkMeter(), open_study(settings), settings.run, settings.max_generations)
    try:
        with meter.shown("reference", total=items):
            evaluator = factory(meter)
    except WorkExhausted:
        raise AutodeltaError(f"--max-generations {settings.max_generations} leaves room for {meter.room()} more "
                             f"item-generations in study {settings.study_name}, and the reference needs more; raise "
                             "it, or lower --calib") from None
    how = "read from the cache in" if meter.spent.get("cached") else "generated (full compute), cached in"
    print(f"reference: {len(evaluator.calibration)} calibration items, {how} {factory.cache_dir}")
    return evaluator


def check_bound(max_generations: Optional[int], items: int) -> None:
    """A bound below what a fresh study needs for one verified schedule is refused before any work."""
    from autodelta.search.settings import minimum_generations

    needed = minimum_generations(items)
    if max_generations is not None and max_generations < needed:
        raise AutodeltaError(f"--max-generations {max_generations} is below the least a search needs here: {needed} "
                             f"item-generations (the reference of {items} calibration items and one trial); raise it, "
                             "or lower --calib")
