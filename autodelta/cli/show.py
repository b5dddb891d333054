"""``autodelta show``: a schedule's plan as a steps × blocks map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    pass


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
    print(plan_map_text(schedule))
    if png is not None:
        save_plan_png(schedule, png)
        print(f"wrote {png}")
