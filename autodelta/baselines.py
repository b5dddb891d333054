"""The caching methods autodelta is measured against, each set to a MACs budget.

Schedule baselines are explicit plans, so their MACs are exact:

* ``paper``: Δ-DiT's hand-set schedule (the rule's N and N_c; rear blocks early, front late);
* ``fora``: FORA-style whole-stack reuse; the full steps are spread evenly (a fractional
  interval T/F, so that the MACs can meet budgets between integer intervals);
* ``deepcache``: DeepCache-style; the first and last blocks run, the middle is Δ-cached,
  every N-th step full (N and N_c from the paper's rule, the range centred).

Run-time baselines decide while generating; their own knob is tuned on the calibration
items until the MACs *measured* there meet the budget (``autodelta.cache_methods``):

* ``fbcache``: diffusers' FirstBlockCache (threshold);
* ``taylorseer``: diffusers' TaylorSeer cache, first-order forecast of each block's output
  (cache interval and warm-up steps);
* ``magcache``: diffusers' MagCache, magnitude ratios calibrated on the calibration items
  (threshold; at most 3 skipped steps in a row, the first 20% of steps never skipped);
* ``seacache``: diffusers' SeaCache, spectral indicators, residual order 1 (threshold);
* ``pab``: diffusers' Pyramid Attention Broadcast, attention recomputed every N steps inside
  a timestep window (N and the window); it skips attention modules, not blocks;
* ``dbcache`` / ``dbcache-taylorseer``: cache-dit's DBCache (F8B0, 8 warm-up steps), plain or
  with its first-order TaylorSeer calibrator (threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autodelta.cost import Budget, CostModel, paper_rule
from autodelta.errors import BudgetError
from autodelta.schedule import CachedRange, Step


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str  # "schedule" (a plan from the cost), "calibrated" (a plan chosen on calibration items) or "hook"
    description: str


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in [
        Baseline("paper", "schedule", "Δ-DiT's hand-set schedule (paper rule: rear blocks early, front blocks late)"),
        Baseline("fora", "schedule", "FORA-style whole-stack reuse, full steps spread evenly"),
        Baseline("deepcache", "schedule", "DeepCache-style: first/last blocks run, middle Δ-cached, every N-th step full"),
        Baseline("greedy", "calibrated", "greedy: from all-full, replay the whole stack on the step that costs least "
                                         "quality on the calibration items, until the budget"),
        Baseline("fbcache", "hook", "diffusers FirstBlockCache, threshold tuned to the budget"),
        Baseline("taylorseer", "hook", "diffusers TaylorSeer (first order), interval and warm-up tuned to the budget"),
        Baseline("magcache", "hook", "diffusers MagCache, ratios calibrated, threshold tuned to the budget"),
        Baseline("seacache", "hook", "diffusers SeaCache (residual order 1), threshold tuned to the budget"),
        Baseline("pab", "hook", "diffusers Pyramid Attention Broadcast, skip range and window tuned to the budget"),
        Baseline("dbcache", "hook", "cache-dit DBCache (F8B0, 8 warm-up steps), threshold tuned to the budget"),
        Baseline("dbcache-taylorseer", "hook", "cache-dit DBCache with its TaylorSeer calibrator, threshold tuned"),
    ]
}

# MACs of a baseline may differ from the budget by this share and still count as "equal MACs".
TOLERANCE = 0.03


def get_baseline(name: str) -> Baseline:
    try:
        return BASELINES[name]
    except KeyError:
        raise BudgetError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}") from None


# --- schedule baselines --------------------------------------------------------------------
def paper_plan(cost: CostModel, steps: int, budget: Budget) -> Sequence[Step]:
    return paper_rule(cost, steps, budget).plan(steps, cost.num_blocks)


def fora_plan(cost: CostModel, steps: int, budget: Budget) -> list[Step]:
    """Whole stack replayed between F evenly spread full steps.

    F is an integer, so the MACs move in steps of about 1/F: the plan whose MACs are
    closest to the budget's within ±3% is taken, else the closest one that meets it.
    """
    whole = CachedRange(0, cost.num_blocks)
    target = cost.full_macs(steps) / budget.speedup
    candidates = []
    for full in range(1, steps + 1):
        marks = {math.floor(j * steps / full) for j in range(full)}
        candidates.append([None if i in marks else whole for i in range(steps)])
    close = [p for p in candidates if abs(cost.plan_macs(p) / target - 1) <= TOLERANCE]
    if close:
        return min(close, key=lambda p: abs(cost.plan_macs(p) / target - 1))
    meeting = [p for p in candidates if budget.met_by(cost, p)]
    if not meeting:
        raise _unreachable("fora", budget, cost.speedup(candidates[0]), "one full step")
    return max(meeting, key=cost.plan_macs)


def deepcache_plan(cost: CostModel, steps: int, budget: Budget) -> list[Step]:
    """The paper rule's interval and range length, the cached range centred in the stack."""
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
    raise _unreachable("deepcache", budget, cost.speedup(best), "one full step, all but the first and last block cached")


SCHEDULE_BASELINES: dict[str, Callable[[CostModel, int, Budget], Sequence[Step]]] = {
    "paper": paper_plan, "fora": fora_plan, "deepcache": deepcache_plan,
}


def _unreachable(name: str, budget: Budget, best: float, how: str) -> BudgetError:
    return BudgetError(f"baseline {name} cannot reach budget {budget}: its maximum here is {best:.3f}x ({how}); "
                       "choose a smaller budget")


def _greedy(evaluator: Any, budget: Budget) -> Sequence[Step]:
    from autodelta.greedy import greedy_plan

    return greedy_plan(evaluator, budget)


CALIBRATED_BASELINES: dict[str, Callable[[Any, Budget], Sequence[Step]]] = {"greedy": _greedy}
"""Baselines whose plan is chosen on calibration items: name → (their evaluator, budget) → plan."""


def resolve_plan(name: str, cost: CostModel, steps: int, budget: Budget,
                 calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
    """The plan of a schedule baseline at ``budget``; a calibrated one is chosen on ``calibration()``'s items."""
    if name in CALIBRATED_BASELINES:
        if calibration is None:
            raise BudgetError(f"baseline {name} chooses its plan on calibration items; give them "
                              "(the CLI does: the profile's calibration seeds)")
        return CALIBRATED_BASELINES[name](calibration(), budget)
    return SCHEDULE_BASELINES[name](cost, steps, budget)
