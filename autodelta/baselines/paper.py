"""Δ-DiT's hand-set schedule: every N-th step full, rear blocks cached before the boundary, front blocks after."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autodelta.baselines.base import PlanBaseline
from autodelta.plan.cost import Budget, CostModel, paper_rule
from autodelta.plan.schedule import Step


class Paper(PlanBaseline):
    """The paper's rule sets N, then the smallest N_c that fits the budget (docs/design.md §2)."""

    name = "paper"
    description = "Δ-DiT's hand-set schedule (paper rule: rear blocks early, front blocks late)"

    def plan(self, cost: CostModel, steps: int, budget: Budget,
             calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
        return paper_rule(cost, steps, budget).plan(steps, cost.num_blocks)
