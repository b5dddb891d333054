"""``autodelta apply``: generate with a schedule; with ``--compare`` also with full compute."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from autodelta.cli.options import (
    ModelOptions,
    check_same_model,
    check_schedule_fits,
    check_weights_fit,
    load_for_schedule,
    parse_labels,
    prepare_inputs,
)
from autodelta.files import ensure_writable_dir, folder_lock
from autodelta.models.devices import inputs_on

if TYPE_CHECKING:
    from autodelta.plan.schedule import Schedule


def run_apply(schedule_path: Path, options: ModelOptions, *, compare: bool, seed: int, class_labels: Optional[str],
              out: Path, compile: bool = False) -> None:
    from autodelta.plan.schedule import load_schedule

    options.check()
    schedule = load_schedule(schedule_path)  # input errors first: they answer before torch loads
    profile = load_for_schedule(schedule, options.model)
    check_schedule_fits(schedule, profile, check_steps=False)  # apply runs the schedule's own T
    check_same_model(schedule, profile)
    check_weights_fit(profile, options)
    requested = parse_labels(class_labels, list(profile.conditions[:2]) or [0])
    resolution, conditioning = prepare_inputs(profile, options)  # before the output folder: a refusal leaves none
    out = ensure_writable_dir(out)
    with folder_lock(out, "apply"):
        placement = options.placement(profile)

        import torch

        from autodelta.evaluation.generation import generate
        from autodelta.models.devices import peak_memory_bytes, reset_peak_memory
        from autodelta.runtime.apply import apply

        labels = profile.adapter.check_conditions(requested, conditioning)  # PixArt: prompt-embedding indices
        if options.random_weights and profile.pretrained:
            print(f"note: {profile.name} built with random weights: images are noise, timings and MACs are real")
        pipe = profile.load_pipeline(random_weights=options.random_weights, dtype=placement.torch_dtype(),
                                     scheduler=schedule.scheduler, device=placement.device)
        pipe.set_progress_bar_config(disable=None, leave=False)  # diffusers' own step bar, on a terminal
        guidance = schedule.guidance_scale if schedule.guidance_scale is not None else profile.guidance_scale
        cost = profile.cost_at(resolution)  # MACs at the resolution that runs, not only where they were counted
        warn_cost_differs(schedule, cost.speedup(schedule.plan), profile.name, resolution)

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
        report(schedule, schedule_path, profile.name, f"{placement}", cached, full, handle,
               peak_memory_bytes(placement.device), cost.speedup(schedule.plan), compile, out)


def warn_cost_differs(schedule: Schedule, speedup: float, model: str, resolution: int | None) -> None:
    """Where this model at this resolution gives the plan another speed-up than the schedule records, say both."""
    recorded = (schedule.cost or {}).get("speedup")
    if isinstance(recorded, (int, float)) and abs(speedup - recorded) > 0.005 * recorded:
        at = f" at {resolution} px" if resolution else ""
        print(f"warning: the schedule records a {recorded:.3f}x MACs speed-up; on {model}{at} its plan gives "
              f"{speedup:.3f}x (another model or resolution than it was searched for)")


def report(schedule: Schedule, schedule_path: Path, model: str, placement: str, cached: Any, full: Any | None,
           handle: Any, peak: int | None, macs_speedup: float, compile: bool, out: Path) -> None:
    """Print what ``apply`` measured and write its pictures (``compare.png`` when full compute ran too)."""
    from autodelta.cli.report import difference_heatmap, save_image_grid
    from autodelta.evaluation.metrics import psnr_of_images

    save_image_grid([("schedule", cached.images)], out / "schedule.png")
    print(f"schedule: {schedule_path} ({model}, T={schedule.steps}, {schedule.full_steps} full steps) "
          f"on {placement}{', blocks compiled' if compile else ''}")
    print(f"runtime:  {handle.stats}")
    if peak is not None:
        print(f"peak GPU memory:     {peak / 2**30:.2f} GiB")
    print(f"MACs speed-up:       {macs_speedup:.3f}x")
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
