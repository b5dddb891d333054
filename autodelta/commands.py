"""What each CLI command does, in terms of the library modules (cli.py only parses)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from autodelta.errors import AutodeltaError, ScheduleError
from autodelta.files import ensure_writable_dir

if TYPE_CHECKING:
    from autodelta.cost import CostModel
    from autodelta.models import Profile
    from autodelta.schedule import Schedule


def run_apply(schedule_path: Path, *, compare: bool, seed: int, class_labels: Optional[str], out: Path,
              random_weights: bool, dtype: str, resolution: Optional[int] = None,
              prompt_embeds: Optional[Path] = None) -> None:
    from autodelta.models import load_profile, parse_dtype
    from autodelta.schedule import load_schedule

    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = load_profile(schedule.model)
    _check_schedule_fits(schedule, profile, check_steps=False)  # apply runs the schedule's own T
    requested = _labels(class_labels, list(profile.conditions[:2]) or [0])
    out = ensure_writable_dir(out)
    torch_dtype = parse_dtype(dtype)

    import torch

    from autodelta.generation import generate
    from autodelta.metrics import psnr_of_images
    from autodelta.report import difference_heatmap, save_image_grid
    from autodelta.runtime import apply

    resolution, conditioning = _prepare_inputs(profile, resolution, prompt_embeds)
    labels = profile.adapter.check_conditions(requested, conditioning)  # PixArt: prompt-embedding indices
    if random_weights and profile.pretrained:
        print(f"note: {profile.name} built with random weights: images are noise, timings and MACs are real")
    pipe = profile.load_pipeline(random_weights=random_weights, dtype=torch_dtype, scheduler=schedule.scheduler)
    guidance = schedule.guidance_scale if schedule.guidance_scale is not None else profile.guidance_scale
    cost = profile.cost_model() or _measured_cost(profile)
    with torch.no_grad():  # warm-up: first calls pay one-off allocation costs
        pipe.transformer(**profile.example_inputs(batch=profile.cfg_factor * len(labels), dtype=torch_dtype,
                                                  resolution=resolution), return_dict=False)
    full = generate(pipe, profile, labels, seed, schedule.steps, guidance, resolution, conditioning) if compare else None
    with apply(pipe, schedule, cost=cost) as handle:
        cached = generate(pipe, profile, labels, seed, schedule.steps, guidance, resolution, conditioning)
    save_image_grid([("schedule", cached.images)], out / "schedule.png")
    print(f"schedule: {schedule_path} ({schedule.model}, T={schedule.steps}, {schedule.full_steps} full steps)")
    print(f"runtime:  {handle.stats}")
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


def _measured_cost(profile: Profile) -> CostModel:
    """Cost of a profile that has no stored cost section: count MACs now (no latency)."""
    from autodelta.cost import CostModel
    from autodelta.profiler import profile_macs

    measured = profile_macs(profile.build_transformer(), profile.example_inputs(batch=1))
    return CostModel(tuple(measured.blocks_macs), measured.pre_macs, measured.post_macs, cfg_factor=profile.cfg_factor)


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


def run_profile(model: str, *, write: bool, random_weights: bool, dtype: str, batch: int, repeats: int,
                resolution: Optional[int] = None) -> None:
    import torch

    from autodelta.models import load_profile, parse_dtype

    spec = load_profile(model)
    torch_dtype = parse_dtype(dtype)
    if batch < 1 or repeats < 1:
        raise AutodeltaError("--batch and --repeats must be at least 1")
    from autodelta.profiler import profile

    if spec.weights is not None or (spec.pretrained and not random_weights):
        transformer = spec.load_pipeline(dtype=torch_dtype).transformer
    else:
        transformer = spec.build_transformer()
        transformer = transformer if torch_dtype == torch.float32 else transformer.to(torch_dtype)
    resolution = spec.check_resolution(resolution)
    inputs = spec.example_inputs(batch=batch, dtype=torch_dtype, resolution=resolution)
    result = profile(transformer, inputs, spec.blocks_attr, repeats=repeats, progress=True, resolution=resolution)
    blocks = result.blocks_macs
    print(f"{spec.name} at {resolution} px: {result.total_macs / 1e9:.3f} GMACs per sample per call "
          f"(pre {result.pre_macs / 1e9:.4f}, blocks {sum(blocks) / 1e9:.3f} = {len(blocks)} x "
          f"{min(blocks) / 1e9:.4f}..{max(blocks) / 1e9:.4f}, post {result.post_macs / 1e9:.4f})")
    share = sum(result.blocks_ms or []) / (result.call_ms or 1.0)
    print(f"latency: {result.call_ms:.1f} ms per call at batch {batch} {dtype} on {torch.get_num_threads()} threads; "
          f"blocks {share:.1%} of it, median block {sorted(result.blocks_ms or [0])[len(blocks) // 2]:.2f} ms")
    if write:
        spec.write_cost(result.as_dict())
        print(f"wrote cost to {spec.path}")


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
        model=spec.name, pretrained=spec.pretrained, num_blocks=spec.num_blocks, scheduler=spec.scheduler,
        steps=steps, guidance_scale=spec.guidance_scale, plan=plan,
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


def _prepare_inputs(profile: Profile, resolution: Optional[int], prompt_embeds: Optional[Path]) -> tuple[int, Any]:
    """The resolution and conditioning to run with; a bad one is refused before any model is built."""
    return profile.check_resolution(resolution), profile.adapter.conditioning(prompt_embeds)


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


def run_evaluate(schedule_path: Path, *, calib: Optional[int], heldout: bool, metrics: Optional[str],
                 out: Path, random_weights: bool, resolution: Optional[int] = None,
                 prompt_embeds: Optional[Path] = None) -> None:
    from autodelta.calibration import item_set
    from autodelta.metrics import get_metric
    from autodelta.models import load_profile
    from autodelta.schedule import load_schedule

    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = load_profile(schedule.model)
    _check_schedule_fits(schedule, profile)
    item_set(profile, calib, heldout)
    for name in _metric_names(metrics) or ():
        get_metric(name)
    out = ensure_writable_dir(out)

    from autodelta.evaluation import EvaluatorFactory

    _, conditioning = _prepare_inputs(profile, resolution, prompt_embeds)
    _warn_random(profile, random_weights, conditioning)
    evaluator = EvaluatorFactory(schedule.model, random_weights, calib, heldout, _metric_names(metrics),
                                 resolution=resolution, prompt_embeds=_path_text(prompt_embeds))()
    result = evaluator.evaluate(schedule.plan)
    full = evaluator.score([None] * schedule.steps, evaluator.reference)
    which = "held-out" if heldout else "calibration"
    print(f"{schedule_path}: {schedule.model}, {len(evaluator.calibration)} {which} items, "
          f"{result.speedup:.3f}x MACs speed-up")
    _print_and_save_comparison("schedule", result.metrics, full.metrics, evaluator.generate(schedule.plan),
                               evaluator.reference, out)


def run_evaluate_baseline(name: str, *, model: str, budget_text: str, calib: Optional[int], heldout: bool,
                          metrics: Optional[str], out: Path, random_weights: bool, resolution: Optional[int] = None,
                          prompt_embeds: Optional[Path] = None) -> None:
    from autodelta.baselines import get_baseline, resolve_plan
    from autodelta.calibration import item_set
    from autodelta.cost import parse_budget
    from autodelta.metrics import get_metric
    from autodelta.models import load_profile

    baseline = get_baseline(name)  # input errors first: they answer before torch loads
    budget = parse_budget(budget_text)
    profile = load_profile(model)
    cost = profile.require_cost()
    if baseline.kind == "schedule":  # unreachable budgets are refused before any generation
        resolve_plan(name, cost, profile.steps, budget)
    items = item_set(profile, calib, heldout)
    for metric in _metric_names(metrics) or ():
        get_metric(metric)
    out = ensure_writable_dir(out)

    from autodelta.harness import Comparison

    resolution, conditioning = _prepare_inputs(profile, resolution, prompt_embeds)
    _warn_random(profile, random_weights, conditioning)
    pipe = profile.load_pipeline(random_weights=random_weights)
    print(f"baseline {name}: {baseline.description}; budget {budget}; {len(items)} "
          f"{'held-out' if heldout else 'calibration'} items, generated one by one")
    comparison = Comparison(profile, pipe, items, cost, _metric_names(metrics), resolution, conditioning,
                            progress=True)
    result, full = comparison.baseline(name, budget), comparison.full()
    print(f"{name} ({result.detail}): {result.speedup:.3f}x MACs speed-up (measured), "
          f"{result.wall_speedup:.3f}x wall speed-up")
    _print_and_save_comparison(name, result.metrics, full.metrics, result.images, comparison.reference.images, out)


def _check_schedule_fits(schedule: Schedule, profile: Profile, check_steps: bool = True) -> None:
    if profile.num_blocks != schedule.num_blocks:
        raise ScheduleError(f"model {profile.name} has N_b={profile.num_blocks} blocks but the schedule "
                            f"has N_b={schedule.num_blocks}; use a schedule made for {profile.name}")
    if check_steps and profile.steps != schedule.steps:
        raise ScheduleError(f"profile {profile.name} samples {profile.steps} steps but the schedule has "
                            f"{schedule.steps}; use a schedule made for {profile.steps} steps")


def run_search(model: str, *, budget_text: str, trials: int, space_name: str, metric: str, calib: Optional[int],
               storage: Optional[str], study: Optional[str], jobs: int, out: Path, seed: int, random_weights: bool,
               resume_any: bool, sampler: str, resolution: Optional[int] = None,
               prompt_embeds: Optional[Path] = None) -> None:
    from autodelta.calibration import item_set
    from autodelta.cost import parse_budget
    from autodelta.files import redact_url
    from autodelta.metrics import get_metric
    from autodelta.models import load_profile
    from autodelta.search import SearchSettings, check_budget_reachable, check_sampler, open_study
    from autodelta.search import run_search as search
    from autodelta.spaces import load_space

    profile = load_profile(model)  # input errors first: they answer before torch loads
    budget = parse_budget(budget_text)
    space = load_space(space_name, profile.steps, profile.num_blocks)
    get_metric(metric)
    check_sampler(sampler)
    if trials < 1 or jobs < 1:
        raise AutodeltaError("--trials and --jobs must be at least 1")
    item_set(profile, calib, heldout=False)  # a bad --calib is refused before a study file exists
    cost = profile.require_cost()
    check_budget_reachable(space, cost, profile.steps, budget)
    out = ensure_writable_dir(out)

    from autodelta.evaluation import EvaluatorFactory
    from autodelta.search_outputs import write_outputs
    from autodelta.workers import WorkerPool

    _, conditioning = _prepare_inputs(profile, resolution, prompt_embeds)
    _warn_random(profile, random_weights, conditioning)
    settings = SearchSettings(
        budget=budget, space=space, metric=metric, trials=trials,
        storage=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=study or f"{profile.name}-{space.name}-{budget.text}", sampler=sampler, seed=seed,
        resume_any=resume_any, model=profile.name,
    )
    open_study(settings)  # refuses a bad storage URL or a study made for other settings, before any work
    factory = EvaluatorFactory(model, random_weights, calib, False, None, resolution=resolution,
                               prompt_embeds=_path_text(prompt_embeds))
    print(f"search: {profile.name}, budget {budget}, space {space.name} ({space.family}), metric {metric}, "
          f"{trials} trials, storage {redact_url(settings.storage or '')}, study {settings.study_name}")
    evaluator = factory()
    print(f"reference: {len(evaluator.calibration)} calibration items, full compute, cached in {factory.cache_dir}")
    workers = WorkerPool(jobs - 1, factory, settings) if jobs > 1 else None
    outcome = search(evaluator, settings, progress=True, workers=workers)
    heldout = EvaluatorFactory(model, random_weights, calib, True, None, resolution=resolution,
                               prompt_embeds=_path_text(prompt_embeds))
    figures = write_outputs(outcome, settings, evaluator, heldout, profile, out)
    for line in figures["summary"]:
        print(line)
    if outcome.interrupted:
        print(f"interrupted: the study keeps its {len(outcome.records)} completed trials; run the same command to resume")
        raise SystemExit(130)


def _metric_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(m.strip() for m in text.split(",")) if text else None


def _path_text(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
