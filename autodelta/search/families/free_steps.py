"""Free steps: how many steps are full and where (a placement warp) is itself searched."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autodelta.plan.schedule import CachedRange, Step
from autodelta.search.families.base import SearchFamily, SeedContext, staged_plan


def full_step_positions(steps: int, count: int, warp: float) -> set[int]:
    """``count`` full steps at ``round((T-1)·(j/(count-1))^warp)``: the first and last step included.

    ``warp`` = 1 spreads them evenly, > 1 packs them towards the start (outline stage),
    < 1 towards the end. Collisions move to the next free step so exactly ``count`` remain.
    """
    count = max(1, min(count, steps))
    positions: set[int] = set()
    for j in range(count):
        frac = j / (count - 1) if count > 1 else 0.0
        pos = min(steps - 1, int(round((steps - 1) * frac**warp)))
        while pos in positions and pos < steps - 1:
            pos += 1
        while pos in positions:
            pos -= 1
        positions.add(pos)
    positions.discard(0)
    positions.add(0)
    while len(positions) > count:  # step 0 collided with a placed one; drop the last
        positions.remove(max(positions))
    return positions


class FreeSteps(SearchFamily):
    """A count of full steps and a warp placing them; one Δ range per stage."""

    name = "free-steps"
    params = ("full_steps", "warp", "b", "n_early", "s_early", "n_late", "s_late")

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        v = values
        full = full_step_positions(steps, int(v["full_steps"]), float(v["warp"]))
        return staged_plan(v, steps, num_blocks, full.__contains__, where="free-steps plan")

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        n_c, n_b = context.rule.cached_blocks, context.num_blocks
        full = math.ceil(context.steps / context.rule.interval)
        return [  # this family places full steps differently, so these are neighbours of the known plans
            ("rule's N_c, even spread", {"full_steps": full, "warp": 1.0, "b": context.rule.boundary, "n_early": n_c,
                                         "s_early": n_b - n_c, "n_late": n_c, "s_late": 0}),
            ("whole stack, even spread", {"full_steps": full, "warp": 1.0, "b": context.boundary, "n_early": n_b,
                                          "s_early": 0, "n_late": n_b, "s_late": 0}),
        ]
