"""The greedy baseline: from all-full, the step whose whole-stack replay costs least quality becomes a Δ step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autodelta.baselines.base import PlanBaseline
from autodelta.errors import BudgetError
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import Step


class Greedy(PlanBaseline):
    """Chosen on the calibration items, round after round, until the budget; then scored on the asked items."""

    name = "greedy"
    description = ("greedy: from all-full, replay the whole stack on the step that costs least quality on the "
                   "calibration items, until the budget")
    calibrated = True

    def plan(self, cost: CostModel, steps: int, budget: Budget,
             calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
        if calibration is None:
            raise BudgetError(f"baseline {self.name} chooses its plan on calibration items; give them "
                              "(the CLI does: the profile's calibration seeds)")
        from autodelta.search.samplers.greedy import greedy_plan  # the search's floor: loaded only when used

        return greedy_plan(calibration(), budget)
