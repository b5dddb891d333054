"""``autodelta rule``: the paper's hand-set schedule for a budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    pass


def run_rule(model: str, budget_text: str, steps: Optional[int], out: Path) -> None:
    from autodelta.models.loading import load_profile
    from autodelta.plan.cost import paper_rule, parse_budget
    from autodelta.plan.schedule import Schedule, paper_boundary

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
