"""``autodelta search``: the search, its workers and its outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from autodelta.cli.options import ModelOptions, evaluator_factory, prepare_inputs, resolve_devices, warn_random
from autodelta.errors import AutodeltaError
from autodelta.files import ensure_writable_dir, folder_lock

if TYPE_CHECKING:
    pass


def run_search(options: ModelOptions, *, budget_text: str, trials: Optional[int], space_name: str, metric: str,
               calib: Optional[int], storage: Optional[str], study: Optional[str], jobs: int, out: Path, seed: int,
               resume_any: bool, sampler: str, devices: Optional[str] = None, budgets_text: Optional[str] = None,
               max_generations: Optional[int] = None) -> None:
    from autodelta.evaluation.calibration import item_set
    from autodelta.evaluation.metrics import get_metric
    from autodelta.models.loading import load_profile
    from autodelta.plan.cost import parse_budgets
    from autodelta.search.run import check_budget_reachable
    from autodelta.search.run import run_search as search
    from autodelta.search.settings import SearchSettings, check_sampler, default_trials, minimum_generations, sampler_name
    from autodelta.search.spaces import load_space
    from autodelta.search.storage import redact_url
    from autodelta.search.study import open_study

    options.check()
    profile = load_profile(options.model or "tiny-dit")  # input errors first: they answer before torch loads
    budgets = parse_budgets(budgets_text or budget_text)
    space = load_space(space_name, profile.steps, profile.num_blocks)
    get_metric(metric)
    check_sampler(sampler, space)
    if (trials is not None and trials < 1) or jobs < 1:
        raise AutodeltaError("--trials and --jobs must be at least 1")
    items = item_set(profile, calib, heldout=False)  # a bad --calib is refused before a study file exists
    device_list = resolve_devices(devices, options, jobs)
    out = ensure_writable_dir(out)
    with folder_lock(out, "search"):
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
        needed = minimum_generations(settings, len(items), profile.steps)
        if max_generations is not None and max_generations < needed:
            raise AutodeltaError(f"--max-generations {max_generations} is below what one search needs here: {needed} "
                                 f"item-generations (the reference, the error model's probes, one trial of {len(items)} "
                                 "items); raise it, or lower --calib")

        from autodelta.cli.outputs import write_outputs
        from autodelta.search.workers import WorkerPool

        placements = [replace(options, device=d).placement(profile) for d in device_list]
        _, conditioning = prepare_inputs(profile, options)
        warn_random(profile, options.random_weights, conditioning)
        open_study(settings)  # refuses a bad storage URL or a study made for other settings, before any work
        record = space.range_set(profile.num_blocks) if sampler_name(settings) == "model" else ()
        factory = replace(evaluator_factory(profile, options, placements[0], calib, False), record=record)
        bound = f", at most {max_generations} item-generations" if max_generations is not None else ""
        print(f"search: {profile.name}, budget {', '.join(b.text for b in budgets)}, space {space.name} ({space.family}), "
              f"sampler {sampler_name(settings)}, metric {metric}, {settings.trials} trials{bound}, "
              f"storage {redact_url(settings.storage or '')}, study {settings.study_name}, "
              f"on {', '.join(str(p) for p in placements[:jobs])}")
        evaluator = factory()
        print(f"reference: {len(evaluator.calibration)} calibration items, full compute, cached in {factory.cache_dir}")
        worker_factories = [replace(factory, device=placements[(i + 1) % len(placements)].device) for i in range(jobs - 1)]
        workers = WorkerPool(worker_factories, settings) if jobs > 1 else None
        outcome = search(evaluator, settings, progress=True, workers=workers)
        heldout = replace(factory, heldout=True, record=())
        figures = write_outputs(outcome, settings, evaluator, heldout, profile, out)
        for line in figures["summary"]:
            print(line)
        if outcome.interrupted:
            print(f"interrupted: the study keeps its {len(outcome.records)} completed trials; run the same command to resume")
            raise SystemExit(130)
