"""The caching methods autodelta is measured against, each set to a MACs budget.

Schedule baselines are explicit plans, so their MACs are exact:

* ``paper``: Δ-DiT's hand-set schedule (the rule's N and N_c; rear blocks early, front late);
* ``fora``: FORA-style whole-stack reuse; the full steps are spread evenly (a fractional
  interval T/F, so that the MACs can meet budgets between integer intervals);
* ``deepcache``: DeepCache-style; the first and last blocks run, the middle is Δ-cached,
  every N-th step full (N and N_c from the paper's rule, the range centred).

Hook baselines decide at run time; one knob (a threshold) is tuned by bisection until
the MACs *measured* on the items reach the budget:

* ``fbcache``: diffusers' ``FirstBlockCache`` (``diffusers.hooks.apply_first_block_cache``);
* ``dbcache``: cache-dit's DBCache with its default F8B0 and 8 warm-up steps (``cache-dit`` package).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from autodelta.cost import Budget, CostModel, paper_rule
from autodelta.errors import BudgetError, ModelError
from autodelta.logs import quieted
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
        Baseline("dbcache", "hook", "cache-dit DBCache (F8B0, 8 warm-up steps), threshold tuned to the budget"),
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
    meeting = [p for p in candidates if budget.allows(cost.speedup(p))]
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
            if budget.allows(cost.speedup(plan)):
                return plan
    best = [None if i == 0 else CachedRange(1, n_b - 2) for i in range(steps)]
    raise _unreachable("deepcache", budget, cost.speedup(best), "one full step, all but the first and last block cached")


SCHEDULE_BASELINES: dict[str, Callable[[CostModel, int, Budget], Sequence[Step]]] = {
    "paper": paper_plan, "fora": fora_plan, "deepcache": deepcache_plan,
}


def _unreachable(name: str, budget: Budget, best: float, how: str) -> BudgetError:
    return BudgetError(f"baseline {name} cannot reach budget {budget}: its maximum here is {best:.3f}x ({how}); "
                       "choose a smaller budget")


# --- hook baselines ------------------------------------------------------------------------
class _Installed:
    """What an installer returns: ``reset()`` before each generation, ``remove()`` at the end."""

    def __init__(self, reset: Callable[[], None], remove: Callable[[], None]) -> None:
        self.reset, self.remove = reset, remove


def _hook_names(modules: Sequence[Any]) -> set[tuple[int, str]]:
    from diffusers.hooks import HookRegistry

    return {(index, name) for index, module in enumerate(modules)
            for name in HookRegistry.check_if_exists_or_initialize(module).hooks}


def fbcache_installer(threshold: float) -> Callable[[Any], _Installed]:
    """diffusers' FirstBlockCache on ``pipe.transformer``, through public diffusers API only.

    DiT and PixArt do not inherit ``CacheMixin``, so nothing opens the cache context the
    hooks need; autodelta opens it with ``CacheMixin.cache_context`` (a plain context
    manager on any module) and removes exactly the hooks that ``apply_first_block_cache``
    added (found by comparing the hook registries before and after).
    """

    def install(pipe: Any) -> _Installed:
        try:
            from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
            from diffusers.models.cache_utils import CacheMixin
        except ImportError:
            raise ModelError("baseline fbcache needs diffusers >= 0.35 (FirstBlockCache and cache_context); "
                             "pip install -U diffusers") from None
        transformer = pipe.transformer
        modules = [transformer, *transformer.modules()]
        before = _hook_names(modules)
        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=threshold))
        added = _hook_names(modules) - before
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        context = ExitStack()
        context.enter_context(CacheMixin.cache_context(transformer, "autodelta"))

        def reset() -> None:  # each generation starts without a cached residual (reset also drops the context)
            context.close()
            registry.reset_stateful_hooks(recurse=True)
            context.enter_context(CacheMixin.cache_context(transformer, "autodelta"))

        def remove() -> None:
            context.close()
            for index, name in added:
                HookRegistry.check_if_exists_or_initialize(modules[index]).remove_hook(name, recurse=False)

        return _Installed(reset, remove)

    return install


def dbcache_installer(threshold: float) -> Callable[[Any], _Installed]:
    """cache-dit's DBCache (its defaults, ``residual_diff_threshold`` set) on the whole pipeline."""

    def install(pipe: Any) -> _Installed:
        try:
            import cache_dit
        except ImportError:
            raise ModelError("baseline dbcache needs the cache-dit package; pip install cache-dit") from None
        quiet = ExitStack()
        # its per-call INFO lines would drown the progress bar
        quiet.enter_context(quieted("CACHE_DIT", "cache_dit", level=logging.ERROR))
        cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(residual_diff_threshold=threshold))

        def remove() -> None:
            cache_dit.disable_cache(pipe)
            quiet.close()

        # cache-dit opens a fresh cache context on every pipeline call: nothing to reset
        return _Installed(lambda: None, remove)

    return install


HOOK_BASELINES: dict[str, Callable[[float], Callable[[Any], _Installed]]] = {
    "fbcache": fbcache_installer, "dbcache": dbcache_installer,
}


@dataclass
class Tuned:
    """A hook baseline's threshold and what it measured there."""

    threshold: float
    speedup: float
    run: Any


def tune_threshold(name: str, measure: Callable[[Callable[[Any], _Installed]], Any], budget: Budget,
                   low: float = 1e-3, high: float = 10.0, iterations: int = 8) -> Tuned:
    """Bisection in log-threshold for the smallest threshold whose measured speed-up meets the budget.

    ``measure(installer)`` generates the items and returns a run with ``.speedup``.
    """
    make = HOOK_BASELINES[name]
    top = measure(make(high))
    if not budget.allows(top.speedup):
        raise _unreachable(name, budget, top.speedup, f"threshold {high:g}, as much skipping as the method allows")
    best = Tuned(high, top.speedup, top)
    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        run = measure(make(math.exp(mid)))
        if budget.allows(run.speedup):
            hi = mid
            best = Tuned(math.exp(mid), run.speedup, run)
            if run.speedup <= budget.speedup * (1 + TOLERANCE):
                break  # equal MACs within tolerance: close enough
        else:
            lo = mid
    return best


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
