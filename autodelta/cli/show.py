"""``autodelta show``: a schedule's plan as a steps × blocks map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from autodelta.plan.schedule import Schedule


def model_stack(schedule: Schedule) -> tuple[list[int], str] | None:
    """Where the schedule's model begins a new block segment, and its segments, when the stack has several
    and the model is known here (a profile, or the folder it was made from); ``None`` otherwise."""
    from autodelta.errors import AutodeltaError
    from autodelta.models.blocks import block_stack
    from autodelta.models.discover import folder_transformer
    from autodelta.models.hub import is_pipeline_folder
    from autodelta.models.loading import load_profile

    for origin in (schedule.model, schedule.source):
        if not origin:
            continue
        try:
            if is_pipeline_folder(origin):  # its transformer's config is all the layout needs: no diffusers
                name, config = folder_transformer(origin)
                stack = block_stack(name)
            else:
                profile = load_profile(origin)
                stack, config = profile.stack, profile.transformer_config
        except AutodeltaError:
            continue
        if sum(1 for key in stack.sizes if int(config.get(key) or 0)) < 2 or stack.count(config) != schedule.num_blocks:
            return None
        return stack.boundaries(config), stack.describe(config)
    return None


def run_show(schedule_path: Path, png: Optional[Path]) -> None:
    from autodelta.cli.report import plan_map_text, save_plan_png
    from autodelta.plan.schedule import load_schedule

    schedule = load_schedule(schedule_path)
    print(f"{schedule.model} (N_b={schedule.num_blocks}), {schedule.scheduler}, T={schedule.steps}, "
          f"guidance {schedule.guidance_scale}")
    if schedule.params:
        print("params: " + ", ".join(f"{k}={v}" for k, v in schedule.params.items()))
    if schedule.cost:
        print(f"cost: {schedule.cost.get('speedup')}x MACs speed-up")
    stack = model_stack(schedule)
    if stack is not None:
        print(f"blocks: {stack[1]}")
    print(plan_map_text(schedule, stack[0] if stack else ()))
    if png is not None:
        save_plan_png(schedule, png)
        print(f"wrote {png}")
