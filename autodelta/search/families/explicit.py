"""Explicit plans: each step 1..T-1 is full or a Δ step over one of the space's named ranges.

Any placement of full steps is expressible, uneven ones and runs of Δ steps included
(a greedy plan such as ``FFFdFFdFdFdFddFdFdFF`` fits no parametric family). The space
file names the ranges (``ranges:``, expressions in ``N_b``); a step's value 0 means full
and k means the k-th range. The structure-aware sampler (:mod:`autodelta.search.samplers.local`)
searches this space by moves on whole plans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autodelta.errors import AutodeltaError
from autodelta.plan.schedule import CachedRange, Step, canonical, validate_plan
from autodelta.search.families.base import SearchFamily, SeedContext


def step_param(i: int) -> str:
    """The name of step ``i``'s parameter (step 0 is always full and has none)."""
    return f"step_{i}"


def plan_values(plan: Sequence[Step], ranges: Sequence[CachedRange]) -> dict[str, int] | None:
    """The parameter values of ``plan``, or None when a Δ step uses a range the space does not name."""
    values = {}
    for i, step in enumerate(plan[1:], start=1):
        if step is not None and step not in ranges:
            return None
        values[step_param(i)] = 0 if step is None else list(ranges).index(step) + 1
    return values


class Explicit(SearchFamily):
    """One choice per step: full (0) or the k-th Δ choice (k): a named range, replayed or forecast.

    A forecast with one full step before it has nothing to extrapolate from and replays
    (:func:`~autodelta.plan.schedule.canonical`), so such values give the replay's plan.
    """

    name = "explicit"
    params = ("step",)

    def expand(self, param: str, steps: int) -> list[str]:
        """Its one parameter repeats for steps 1..T-1 (``step_1`` …); step 0 is always full."""
        return [step_param(i) for i in range(1, steps)]

    def uses_ranges(self) -> bool:
        return True

    def default_sampler(self) -> str:
        """The model sampler: the error model's plans first (docs/design.md §6a)."""
        return "model"

    def accepts(self, sampler: str) -> bool:
        return True

    def fastest_plans(self, steps: int, ranges: Sequence[CachedRange]) -> list[tuple[Step, ...]]:
        """One full step, then one range everywhere."""
        return [(None, *[cached] * (steps - 1)) for cached in ranges]

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        plan: list[Step] = [None]
        for i in range(1, steps):
            choice = int(values[step_param(i)])
            if not 0 <= choice <= len(ranges):
                raise AutodeltaError(f"{step_param(i)}={choice} names no range: use 0 (full) to {len(ranges)}")
            plan.append(None if choice == 0 else ranges[choice - 1])
        return validate_plan(canonical(plan), num_blocks, where="explicit plan")

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        """The paper's schedule where the ranges express it, and every other step over the first range.

        The sampler adds its greedy construction itself; these are the known shapes it
        starts beside.
        """
        steps, n_b = context.steps, context.num_blocks
        candidates: list[tuple[str, tuple[Step, ...]]] = [("paper rule", context.rule.plan(steps, n_b))]
        if context.ranges:
            first = context.ranges[0]
            candidates.append(("every other step", tuple(None if i % 2 == 0 else first for i in range(steps))))
        seeds = []
        for label, plan in candidates:
            values = plan_values(plan, context.ranges)
            if values is not None and (context.fits is None or context.fits(plan)):
                seeds.append((label, dict(values)))
        return seeds
