"""``autodelta evaluate``: a schedule, or a baseline at a budget, scored against full compute."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from autodelta.cli.options import (
    ModelOptions,
    check_schedule_fits,
    check_weights_fit,
    evaluator_factory,
    load_for_schedule,
    parse_metric_names,
    prepare_inputs,
    warn_random,
)
from autodelta.files import ensure_writable_dir, folder_lock

if TYPE_CHECKING:
    pass


def print_and_save_comparison(label: str, metrics: dict[str, float], full: dict[str, float], images: Any,
                               reference: Any, out: Path) -> None:
    """The metrics table (method vs full compute) and the grid: reference, method, difference."""
    from autodelta.cli.report import difference_heatmap, save_image_grid

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
    from autodelta.evaluation.calibration import item_set
    from autodelta.plan.schedule import load_schedule

    options.check()
    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = load_for_schedule(schedule, options.model)
    check_schedule_fits(schedule, profile)
    item_set(profile, calib, heldout)
    metric_names = parse_metric_names(metrics)
    out = ensure_writable_dir(out)
    with folder_lock(out, "evaluate"):
        placement = options.placement(profile)

        _, conditioning = prepare_inputs(profile, options)
        warn_random(profile, options.random_weights, conditioning)
        evaluator = evaluator_factory(profile, options, placement, calib, heldout, metric_names)()
        images = evaluator.generate(schedule.plan)  # once: scored and drawn
        result = evaluator.score(schedule.plan, images)
        full = evaluator.score([None] * schedule.steps, evaluator.reference)
        which = "held-out" if heldout else "calibration"
        print(f"{schedule_path}: {profile.name}, {len(evaluator.calibration)} {which} items on {placement}, "
              f"{result.speedup:.3f}x MACs speed-up")
        print_and_save_comparison("schedule", result.metrics, full.metrics, images.cpu(),
                                   evaluator.reference.cpu(), out)


def run_evaluate_baseline(name: str, options: ModelOptions, *, budget_text: str, calib: Optional[int],
                          heldout: bool, metrics: Optional[str], out: Path) -> None:
    from autodelta.baselines.base import PlanBaseline
    from autodelta.baselines.registry import get_baseline
    from autodelta.evaluation.calibration import item_set
    from autodelta.models.loading import load_profile
    from autodelta.plan.cost import parse_budget

    options.check()
    baseline = get_baseline(name)  # input errors first: they answer before torch loads
    budget = parse_budget(budget_text)
    profile = load_profile(options.model or "tiny-dit")
    check_weights_fit(profile, options)
    cost = profile.require_cost()
    if isinstance(baseline, PlanBaseline) and not baseline.calibrated:  # unreachable budgets: refused at once
        baseline.plan(cost, profile.steps, budget)
    items = item_set(profile, calib, heldout)
    metric_names = parse_metric_names(metrics)
    out = ensure_writable_dir(out)
    with folder_lock(out, "evaluate"):
        placement = options.placement(profile)

        from autodelta.baselines.harness import Comparison

        resolution, conditioning = prepare_inputs(profile, options)
        warn_random(profile, options.random_weights, conditioning)
        pipe = profile.load_pipeline(random_weights=options.random_weights, dtype=placement.torch_dtype(),
                                     device=placement.device)
        print(f"baseline {name}: {baseline.description}; budget {budget}; {len(items)} "
              f"{'held-out' if heldout else 'calibration'} items on {placement}, generated one by one")
        comparison = Comparison(profile, pipe, items, cost, metric_names, resolution, conditioning,
                                progress=True)
        calibration = None
        if isinstance(baseline, PlanBaseline) and baseline.calibrated:  # plan chosen on the calibration items
            def calibration() -> Any:
                from autodelta.evaluation.diffusion import DiffusionEvaluator

                return DiffusionEvaluator(profile, pipe, item_set(profile, calib, heldout=False), cost=cost,
                                          metrics=("psnr",), resolution=resolution, conditioning=conditioning,
                                          batch_size=options.batch_size)
        result, full = comparison.baseline(name, budget, calibration), comparison.full()
        print(f"{name} ({result.detail}): {result.speedup:.3f}x MACs speed-up (measured), "
              f"{result.wall_speedup:.3f}x wall speed-up")
        print_and_save_comparison(name, result.metrics, full.metrics, result.images, comparison.reference.images, out)
