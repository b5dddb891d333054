"""FORA-style whole-stack reuse: the whole stack replayed between full steps spread evenly."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from autodelta.baselines.base import PlanBaseline, unreachable
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import CachedRange, Step


class Fora(PlanBaseline):
    """F full steps at a fractional interval T/F, so the MACs can meet budgets between integer intervals.

    F is an integer, so the MACs move in steps of about 1/F: the plan whose MACs are nearest the
    budget's (:meth:`~autodelta.plan.cost.Budget.near`) is taken, else the nearest one that meets it.
    """

    name = "fora"
    description = "FORA-style whole-stack reuse, full steps spread evenly"

    def plan(self, cost: CostModel, steps: int, budget: Budget,
             calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
        whole = CachedRange(0, cost.num_blocks)
        target = cost.full_macs(steps) / budget.speedup
        candidates = []
        for full in range(1, steps + 1):
            marks = {math.floor(j * steps / full) for j in range(full)}
            candidates.append([None if i in marks else whole for i in range(steps)])
        close = [p for p in candidates if budget.near(cost.speedup(p), both_sides=True)]
        if close:
            return min(close, key=lambda p: abs(cost.plan_macs(p) / target - 1))
        meeting = [p for p in candidates if budget.met_by(cost, p)]
        if not meeting:
            raise unreachable(self.name, budget, cost.speedup(candidates[0]), "one full step")
        return max(meeting, key=cost.plan_macs)
