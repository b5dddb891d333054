"""The greedy baseline: from all-full, replay the whole stack on the step that costs least quality, until the budget.

A plain, strong reference point for any search (measured on a digit DiT the project had
never seen, it beat the default search by 1.8 dB at 1.6x). Each round tries every full
step but step 0 as a whole-stack Δ step on the calibration items and keeps the one whose
quality drops least; rounds repeat until the plan meets the budget. Ties go to the
earlier step, so the result is deterministic. With prefix reuse most candidates share
their first steps, so a round costs far less than its generations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Protocol

from autodelta.errors import BudgetError
from autodelta.evaluation.evaluator import Evaluation
from autodelta.evaluation.metrics import get_metric
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import CachedRange, Step


class PlanScorer(Protocol):
    """What the greedy reads: a real evaluator, or the search's screening memo."""

    cost: CostModel
    steps: int
    num_blocks: int

    def evaluate(self, plan: Sequence[Step]) -> Evaluation: ...

logger = logging.getLogger(__name__)


def greedy_plan(evaluator: PlanScorer, budget: Budget, metric: str = "psnr") -> tuple[Step, ...]:
    """The greedy whole-stack plan that meets ``budget``, chosen on ``evaluator``'s items."""
    sign = 1.0 if get_metric(metric).higher_is_better else -1.0
    whole = CachedRange(0, evaluator.num_blocks)
    plan: list[Step] = [None] * evaluator.steps
    evaluations = 0
    while not budget.met_by(evaluator.cost, plan):
        candidates = [i for i in range(1, evaluator.steps) if plan[i] is None]
        if not candidates:
            raise BudgetError(f"baseline greedy cannot reach budget {budget}: its maximum here is "
                              f"{evaluator.cost.speedup(plan):.3f}x (every step but the first replayed)")
        scores = []
        for i in candidates:
            trial = list(plan)
            trial[i] = whole
            value = evaluator.evaluate(trial).metrics[metric]
            evaluations += 1
            scores.append((sign * value if not math.isnan(value) else -math.inf, -i))
        best = candidates[scores.index(max(scores))]
        plan[best] = whole
        logger.info("greedy: step %d replayed (%d Δ steps, %.3fx)", best, sum(s is not None for s in plan),
                    evaluator.cost.speedup(plan))
    logger.info("greedy: %d evaluations", evaluations)
    return tuple(plan)
