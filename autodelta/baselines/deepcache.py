"""DeepCache-style: the first and last blocks always run, the middle is Δ-cached, every N-th step full."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autodelta.baselines.base import PlanBaseline, unreachable
from autodelta.errors import BudgetError
from autodelta.plan.cost import Budget, CostModel, paper_rule
from autodelta.plan.schedule import CachedRange, Step


class DeepCache(PlanBaseline):
    """The paper rule's interval and the fewest middle blocks that meet the budget, the cached range centred."""

    name = "deepcache"
    description = "DeepCache-style: first/last blocks run, middle Δ-cached, every N-th step full"

    def plan(self, cost: CostModel, steps: int, budget: Budget,
             calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
        n_b = cost.num_blocks
        try:
            interval = paper_rule(cost, steps, budget).interval
        except BudgetError:
            interval = steps
        for n in range(interval, steps + 1):
            for n_c in range(1, n_b - 1):  # DeepCache always computes at least one block at each end
                start = (n_b - n_c) // 2
                plan: list[Step] = [None if i % n == 0 else CachedRange(start, n_c) for i in range(steps)]
                if budget.met_by(cost, plan):
                    return plan
        best = [None if i == 0 else CachedRange(1, n_b - 2) for i in range(steps)]
        raise unreachable(self.name, budget, cost.speedup(best), "one full step, all but the first and last block cached")
