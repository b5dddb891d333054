"""What each CLI command does, in terms of the library modules (cli.py only parses).

Each command checks its inputs first, with light modules only, so a mistake answers in
a fraction of a second; torch and diffusers are imported after that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from autodelta.devices import inputs_on
from autodelta.errors import AutodeltaError, ScheduleError
from autodelta.files import ensure_writable_dir, folder_lock

if TYPE_CHECKING:
    from autodelta.devices import Placement
    from autodelta.models import Profile
    from autodelta.schedule import Schedule


@dataclass(frozen=True)
class ModelOptions:
    """The options every model-running command shares."""

    model: Optional[str] = None  # profile name, profile YAML, pipeline folder or cached hub id
    random_weights: bool = False
    device: str = "auto"
    dtype: str = "auto"
    resolution: Optional[int] = None
    prompt_embeds: Optional[Path] = None
    batch_size: Optional[int] = None

    def check(self) -> None:
        from autodelta.devices import check_names

        check_names(self.device, self.dtype)
        if self.batch_size is not None and self.batch_size < 1:
            raise AutodeltaError(f"--batch-size {self.batch_size} must be at least 1")

    def placement(self, profile: Profile) -> Placement:
        from autodelta.devices import resolve

        return resolve(self.device, self.dtype, profile.gpu_dtype)


def _load_for_schedule(schedule: Schedule, override: Optional[str]) -> Profile:
    """The model a schedule was made for: ``--model`` if given, else its recorded profile or source."""
    from autodelta.errors import ModelError
    from autodelta.models import load_profile

    if override is not None:
        return load_profile(override)
    try:
        return load_profile(schedule.model)
    except ModelError:
        if schedule.source and Path(schedule.source).exists():
            return load_profile(schedule.source)
        where = f" (made from {schedule.source})" if schedule.source else ""
        raise ModelError(f"unknown model {schedule.model!r}{where}; pass --model with its profile YAML, pipeline "
                         "folder or hub id") from None


def run_apply(schedule_path: Path, options: ModelOptions, *, compare: bool, seed: int, class_labels: Optional[str],
              out: Path, compile: bool = False) -> None:
    from autodelta.schedule import load_schedule

    options.check()
    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = _load_for_schedule(schedule, options.model)
    _check_schedule_fits(schedule, profile, check_steps=False)  # apply runs the schedule's own T
    _check_same_model(schedule, profile)
    requested = _labels(class_labels, list(profile.conditions[:2]) or [0])
    out = ensure_writable_dir(out)
    with folder_lock(out, "apply"):
        placement = options.placement(profile)

        import torch

        from autodelta.devices import peak_memory_bytes, reset_peak_memory
        from autodelta.generation import generate
        from autodelta.metrics import psnr_of_images
        from autodelta.report import difference_heatmap, save_image_grid
        from autodelta.runtime import apply

        resolution, conditioning = _prepare_inputs(profile, options)
        labels = profile.adapter.check_conditions(requested, conditioning)  # PixArt: prompt-embedding indices
        if options.random_weights and profile.pretrained:
            print(f"note: {profile.name} built with random weights: images are noise, timings and MACs are real")
        pipe = profile.load_pipeline(random_weights=options.random_weights, dtype=placement.torch_dtype(),
                                     scheduler=schedule.scheduler, device=placement.device)
        guidance = schedule.guidance_scale if schedule.guidance_scale is not None else profile.guidance_scale
        cost = profile.require_cost()

        def run() -> Any:
            return generate(pipe, profile, labels, seed, schedule.steps, guidance, resolution, conditioning)

        def timed(plan_schedule: Schedule | None) -> tuple[Any, Any]:
            """One generation with ``plan_schedule`` installed (``None``: the unpatched pipeline), after a warm-up
            outside the timing. Eager: one transformer call pays the one-off allocations. Compiled: one untimed
            generation, because the pipeline's own call is what gets traced."""
            if not compile:
                with torch.no_grad():
                    pipe.transformer(**inputs_on(profile.example_inputs(batch=profile.cfg_factor * len(labels),
                                                                  dtype=placement.torch_dtype(), resolution=resolution),
                                           placement.device), return_dict=False)
            if plan_schedule is None:
                return run(), None
            with apply(pipe, plan_schedule, cost=cost, compile=compile) as handle:
                if compile:
                    print("compiling the blocks (one untimed generation) ...", flush=True)
                    run()
                    handle.reset_stats()
                return run(), handle

        # full compute for --compare: with the same compiled blocks under --compile (like with like)
        full = timed(replace(schedule, plan=(None,) * schedule.steps) if compile else None)[0] if compare else None
        reset_peak_memory(placement.device)
        cached, handle = timed(schedule)
        save_image_grid([("schedule", cached.images)], out / "schedule.png")
        print(f"schedule: {schedule_path} ({profile.name}, T={schedule.steps}, {schedule.full_steps} full steps) "
              f"on {placement}{', blocks compiled' if compile else ''}")
        print(f"runtime:  {handle.stats}")
        peak = peak_memory_bytes(placement.device)
        if peak is not None:
            print(f"peak GPU memory:     {peak / 2**30:.2f} GiB")
        print(f"MACs speed-up:       {cost.speedup(schedule.plan):.3f}x")
        if full is not None:
            wall_tr = full.transformer_s / cached.transformer_s
            wall_pipe = full.pipeline_s / cached.pipeline_s
            print(f"wall speed-up:       transformer {wall_tr:.3f}x ({full.transformer_s:.2f}s -> "
                  f"{cached.transformer_s:.2f}s), pipeline {wall_pipe:.3f}x ({full.pipeline_s:.2f}s -> {cached.pipeline_s:.2f}s)")
            print(f"PSNR to full:        {psnr_of_images(cached.images, full.images):.2f} dB")
            save_image_grid(
                [("full", full.images), ("schedule", cached.images),
                 ("|difference|", difference_heatmap(cached.images, full.images))],
                out / "compare.png",
            )
            print(f"wrote {out / 'compare.png'}")
        print(f"wrote {out / 'schedule.png'}")


def run_show(schedule_path: Path, png: Optional[Path]) -> None:
    from autodelta.report import plan_map_text, save_plan_png
    from autodelta.schedule import load_schedule

    schedule = load_schedule(schedule_path)
    print(f"{schedule.model} (N_b={schedule.num_blocks}), {schedule.scheduler}, T={schedule.steps}, "
          f"guidance {schedule.guidance_scale}")
    if schedule.params:
        print("params: " + ", ".join(f"{k}={v}" for k, v in schedule.params.items()))
    if schedule.cost:
        print(f"cost: {schedule.cost.get('speedup')}x MACs speed-up")
    print(plan_map_text(schedule))
    if png is not None:
        save_plan_png(schedule, png)
        print(f"wrote {png}")


def run_profile(model: str, options: ModelOptions, *, write: bool, out: Optional[Path], batch: int,
                repeats: int) -> None:
    from autodelta.models import load_profile

    options.check()
    spec = load_profile(model)
    if batch < 1 or repeats < 1:
        raise AutodeltaError("--batch and --repeats must be at least 1")
    if write and out is None and spec.source is not None:
        raise AutodeltaError(f"{spec.name} was read from a pipeline folder, not a profile file; pass --out my.yaml "
                             "to write its profile")
    placement = options.placement(spec)

    import torch

    from autodelta.profiler import profile

    resolution = spec.check_resolution(options.resolution)
    if spec.weights is not None or (spec.pretrained and not options.random_weights):
        transformer = spec.load_pipeline(dtype=placement.torch_dtype(), device=placement.device).transformer
    else:
        transformer = spec.build_transformer().to(device=placement.device, dtype=placement.torch_dtype())
    inputs = inputs_on(spec.example_inputs(batch=batch, dtype=placement.torch_dtype(), resolution=resolution),
                 placement.device)
    result = profile(transformer, inputs, spec.blocks_attr, repeats=repeats, progress=True, resolution=resolution)
    blocks = result.blocks_macs
    print(f"{spec.name} at {resolution} px: {result.total_macs / 1e9:.3f} GMACs per sample per call "
          f"(pre {result.pre_macs / 1e9:.4f}, blocks {sum(blocks) / 1e9:.3f} = {len(blocks)} x "
          f"{min(blocks) / 1e9:.4f}..{max(blocks) / 1e9:.4f}, post {result.post_macs / 1e9:.4f})")
    share = sum(result.blocks_ms or []) / (result.call_ms or 1.0)
    where = placement.device if placement.device != "cpu" else f"cpu, {torch.get_num_threads()} threads"
    print(f"latency: {result.call_ms:.1f} ms per call at batch {batch} {placement.dtype} on {where}; "
          f"blocks {share:.1%} of it, median block {sorted(result.blocks_ms or [0])[len(blocks) // 2]:.2f} ms")
    if write:
        target = spec.write_cost(result.as_dict(), out)
        print(f"wrote the profile to {target}")


def run_rule(model: str, budget_text: str, steps: Optional[int], out: Path) -> None:
    from autodelta.cost import paper_rule, parse_budget
    from autodelta.models import load_profile
    from autodelta.schedule import Schedule, paper_boundary

    spec = load_profile(model)
    budget = parse_budget(budget_text)
    cost = spec.require_cost()
    steps = steps or spec.steps
    params = paper_rule(cost, steps, budget)
    plan = params.plan(steps, spec.num_blocks)
    _, boundary_note = paper_boundary(steps)
    schedule = Schedule(
        model=spec.name, pretrained=spec.pretrained_id, num_blocks=spec.num_blocks, scheduler=spec.scheduler,
        steps=steps, guidance_scale=spec.guidance_scale, plan=plan, source=spec.schedule_source,
        params={**params.as_dict(), "source": f"paper rule at budget {budget}", "boundary_rule": boundary_note},
        cost=cost.summary(plan), provenance={"study": None, "trial": None},
    )
    schedule.save(out)
    print(f"N={params.interval}, N_c={params.cached_blocks}, b={params.boundary}: "
          f"{cost.speedup(plan):.3f}x MACs speed-up; wrote {out}")


# --- evaluate and search ---------------------------------------------------------------------
def _labels(text: Optional[str], default: list[int]) -> list[int]:
    if text is None:
        return default
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AutodeltaError(f"--class-labels {text!r} is not a comma-separated list of integers, e.g. 207,360") from None


def _warn_random(profile: Profile, random_weights: bool, conditioning: Any) -> None:
    if random_weights and profile.pretrained:
        print(f"warning: {profile.name} runs with random weights: its quality numbers are meaningless "
              "(costs and timings are real); use tiny-dit for quality")
    if conditioning is not None:
        print(f"conditions: prompt embeddings from {conditioning.source}")


def _prepare_inputs(profile: Profile, options: ModelOptions) -> tuple[int, Any]:
    """The resolution and conditioning to run with; a bad one is refused before any model is built."""
    return profile.check_resolution(options.resolution), profile.adapter.conditioning(options.prompt_embeds)


def _factory(profile: Profile, options: ModelOptions, placement: Placement, calib: Optional[int], heldout: bool,
             metrics: Optional[tuple[str, ...]] = None) -> Any:
    from autodelta.evaluation import EvaluatorFactory

    factory = EvaluatorFactory(profile.origin or profile.name, options.random_weights, calib, heldout, metrics,
                               resolution=options.resolution, prompt_embeds=_path_text(options.prompt_embeds),
                               device=placement.device, dtype=placement.dtype, batch_size=options.batch_size)
    _check_cache(factory.cache_dir)
    return factory


def _check_cache(folder: Optional[str]) -> None:
    """The reference cache must be writable before a reference is computed, not after."""
    if folder is None:
        return
    try:
        ensure_writable_dir(folder)
    except AutodeltaError:
        raise AutodeltaError(f"the reference cache folder {folder!r} is not writable; set XDG_CACHE_HOME to a folder "
                             "you can write to") from None


def _print_and_save_comparison(label: str, metrics: dict[str, float], full: dict[str, float], images: Any,
                               reference: Any, out: Path) -> None:
    """The metrics table (method vs full compute) and the grid: reference, method, difference."""
    from autodelta.report import difference_heatmap, save_image_grid

    print(f"{'metric':<22}{label:>12}{'full compute':>14}")
    for name, value in metrics.items():
        print(f"{name:<22}{value:>12.4f}{full[name]:>14.4f}")
    images, reference = images.permute(0, 2, 3, 1).numpy(), reference.permute(0, 2, 3, 1).numpy()
    shown = slice(0, min(10, len(images)))
    save_image_grid([("full compute", reference[shown]), (label, images[shown]),
                     ("|difference|", difference_heatmap(images[shown], reference[shown]))], out / "evaluate.png")
    print(f"wrote {out / 'evaluate.png'}")


def run_evaluate(schedule_path: Path, options: ModelOptions, *, calib: Optional[int], heldout: bool,
                 metrics: Optional[str], out: Path) -> None:
    from autodelta.calibration import item_set
    from autodelta.metrics import get_metric
    from autodelta.schedule import load_schedule

    options.check()
    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = _load_for_schedule(schedule, options.model)
    _check_schedule_fits(schedule, profile)
    item_set(profile, calib, heldout)
    for name in _metric_names(metrics) or ():
        get_metric(name)
    out = ensure_writable_dir(out)
    with folder_lock(out, "evaluate"):
        placement = options.placement(profile)

        _, conditioning = _prepare_inputs(profile, options)
        _warn_random(profile, options.random_weights, conditioning)
        evaluator = _factory(profile, options, placement, calib, heldout, _metric_names(metrics))()
        result = evaluator.evaluate(schedule.plan)
        full = evaluator.score([None] * schedule.steps, evaluator.reference)
        which = "held-out" if heldout else "calibration"
        print(f"{schedule_path}: {profile.name}, {len(evaluator.calibration)} {which} items on {placement}, "
              f"{result.speedup:.3f}x MACs speed-up")
        _print_and_save_comparison("schedule", result.metrics, full.metrics, evaluator.generate(schedule.plan).cpu(),
                                   evaluator.reference.cpu(), out)


def run_evaluate_baseline(name: str, options: ModelOptions, *, budget_text: str, calib: Optional[int],
                          heldout: bool, metrics: Optional[str], out: Path) -> None:
    from autodelta.baselines import get_baseline, resolve_plan
    from autodelta.calibration import item_set
    from autodelta.cost import parse_budget
    from autodelta.metrics import get_metric
    from autodelta.models import load_profile

    options.check()
    baseline = get_baseline(name)  # input errors first: they answer before torch loads
    budget = parse_budget(budget_text)
    profile = load_profile(options.model or "tiny-dit")
    cost = profile.require_cost()
    if baseline.kind == "schedule":  # unreachable budgets are refused before any generation
        resolve_plan(name, cost, profile.steps, budget)
    items = item_set(profile, calib, heldout)
    for metric in _metric_names(metrics) or ():
        get_metric(metric)
    out = ensure_writable_dir(out)
    with folder_lock(out, "evaluate"):
        placement = options.placement(profile)

        from autodelta.harness import Comparison

        resolution, conditioning = _prepare_inputs(profile, options)
        _warn_random(profile, options.random_weights, conditioning)
        pipe = profile.load_pipeline(random_weights=options.random_weights, dtype=placement.torch_dtype(),
                                     device=placement.device)
        print(f"baseline {name}: {baseline.description}; budget {budget}; {len(items)} "
              f"{'held-out' if heldout else 'calibration'} items on {placement}, generated one by one")
        comparison = Comparison(profile, pipe, items, cost, _metric_names(metrics), resolution, conditioning,
                                progress=True)
        calibration = None
        if baseline.kind == "calibrated":  # its plan is chosen on the calibration items, scored on `items`
            def calibration() -> Any:
                from autodelta.evaluation import DiffusionEvaluator

                return DiffusionEvaluator(profile, pipe, item_set(profile, calib, heldout=False), cost=cost,
                                          metrics=("psnr",), resolution=resolution, conditioning=conditioning,
                                          batch_size=options.batch_size)
        result, full = comparison.baseline(name, budget, calibration), comparison.full()
        print(f"{name} ({result.detail}): {result.speedup:.3f}x MACs speed-up (measured), "
              f"{result.wall_speedup:.3f}x wall speed-up")
        _print_and_save_comparison(name, result.metrics, full.metrics, result.images, comparison.reference.images, out)


def _check_same_model(schedule: Schedule, profile: Profile) -> None:
    """A schedule made for another model gets a warning naming both; for another kind of sampler, a refusal."""
    from autodelta.schedule import sampler_family

    ours, theirs = sampler_family(profile.scheduler), sampler_family(schedule.scheduler)
    if ours != theirs:
        raise ScheduleError(f"the schedule was made for {schedule.model} with {schedule.scheduler} ({theirs}), but "
                            f"{profile.name} samples with {profile.scheduler} ({ours}); use a schedule made for "
                            f"{profile.name}")
    if schedule.model != profile.name or schedule.scheduler != profile.scheduler:
        print(f"warning: the schedule was made for {schedule.model} ({schedule.scheduler}, T={schedule.steps}); "
              f"running it on {profile.name} ({profile.scheduler})")


def _check_schedule_fits(schedule: Schedule, profile: Profile, check_steps: bool = True) -> None:
    if profile.num_blocks != schedule.num_blocks:
        raise ScheduleError(f"model {profile.name} has N_b={profile.num_blocks} blocks but the schedule "
                            f"has N_b={schedule.num_blocks}; use a schedule made for {profile.name}")
    if check_steps and profile.steps != schedule.steps:
        raise ScheduleError(f"profile {profile.name} samples {profile.steps} steps but the schedule has "
                            f"{schedule.steps}; use a schedule made for {profile.steps} steps")


def run_search(options: ModelOptions, *, budget_text: str, trials: Optional[int], space_name: str, metric: str,
               calib: Optional[int], storage: Optional[str], study: Optional[str], jobs: int, out: Path, seed: int,
               resume_any: bool, sampler: str, devices: Optional[str] = None, budgets_text: Optional[str] = None,
               max_generations: Optional[int] = None) -> None:
    from autodelta.calibration import item_set
    from autodelta.cost import parse_budgets
    from autodelta.metrics import get_metric
    from autodelta.models import load_profile
    from autodelta.search import (
        SearchSettings,
        check_budget_reachable,
        check_sampler,
        default_trials,
        minimum_generations,
        open_study,
        sampler_name,
    )
    from autodelta.search import run_search as search
    from autodelta.spaces import load_space
    from autodelta.storage import redact_url

    options.check()
    profile = load_profile(options.model or "tiny-dit")  # input errors first: they answer before torch loads
    budgets = parse_budgets(budgets_text or budget_text)
    space = load_space(space_name, profile.steps, profile.num_blocks)
    get_metric(metric)
    check_sampler(sampler, space)
    if (trials is not None and trials < 1) or jobs < 1:
        raise AutodeltaError("--trials and --jobs must be at least 1")
    items = item_set(profile, calib, heldout=False)  # a bad --calib is refused before a study file exists
    device_list = _device_list(devices, options, jobs)
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

        from autodelta.search_outputs import write_outputs
        from autodelta.workers import WorkerPool

        placements = [replace(options, device=d).placement(profile) for d in device_list]
        _, conditioning = _prepare_inputs(profile, options)
        _warn_random(profile, options.random_weights, conditioning)
        open_study(settings)  # refuses a bad storage URL or a study made for other settings, before any work
        record = space.range_set(profile.num_blocks) if sampler_name(settings) == "model" else ()
        factory = replace(_factory(profile, options, placements[0], calib, False), record=record)
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


def _device_list(devices: Optional[str], options: ModelOptions, jobs: int) -> list[str]:
    """One device per worker: ``--devices a,b`` in turn, else ``cuda:i`` for worker i on a CUDA machine."""
    from autodelta.devices import check_names

    if devices:
        names = [d.strip() for d in devices.split(",") if d.strip()]
        for name in names:
            check_names(name, options.dtype)
        if not names:
            raise AutodeltaError("--devices is empty; give e.g. cuda:0,cuda:1")
        return names
    if jobs > 1 and options.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [options.device]


def _metric_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(m.strip() for m in text.split(",")) if text else None


def _path_text(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
