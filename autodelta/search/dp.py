"""Plans from an error model by dynamic programming over full steps, with a MACs dimension.

In the manner of LeMiCa's shortest path over a graph of reuse errors: a plan is a path
through its full steps ``0 = f_0 < f_1 < … ``; the edge ``f_k → f_{k+1}`` is the run of Δ
steps between them, and costs what the model predicts for that run. A forecast also
reads the full step before ``f_k``, so a state is the pair (last full step, the one before).
Each state keeps, for every amount of skipped MACs (in buckets), the cheapest way to reach
it, so one pass gives the model's best plan for *every* budget at zero generations.

Inside a run, each Δ step takes, among the choices that skip the same MACs, the model's
cheapest (range, replay or forecast), and the runs enumerate which steps skip how much. Buckets
floor the MACs a run skips, so a plan found for a budget always meets it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autodelta.evaluation.evaluator import SegmentModel
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import CachedRange, Step

MAX_COMBOS = 512
"""Per run, at most this many assignments of block counts to its Δ steps are scored."""


@dataclass(frozen=True)
class _Run:
    """One way to fill the Δ steps between two full steps."""

    skipped: int  # buckets of MACs skipped
    cost: float
    choices: tuple[CachedRange, ...]


@dataclass
class PlanFront:
    """The model's cheapest plan for every bucket of skipped MACs."""

    steps: int
    unit: float
    full_macs: float
    cost: np.ndarray  # [buckets]: the least predicted cost of a plan skipping (about) bucket × unit MACs
    _plans: dict[int, tuple[Step, ...]]

    def best(self, budget: Budget, cost_model: CostModel) -> tuple[Step, ...] | None:
        """The predicted-best plan that meets ``budget``, or ``None`` when no plan of the space does."""
        ranked = self.ranked(budget, cost_model)
        return ranked[0] if ranked else None

    def ranked(self, budget: Budget, cost_model: CostModel, count: int | None = None) -> list[tuple[Step, ...]]:
        """Distinct plans meeting ``budget``, predicted best first (one per bucket of skipped MACs)."""
        need = self.full_macs - self.full_macs / budget.speedup
        # buckets floor each run's MACs, so a plan may skip up to a bucket per run more than its bucket says:
        # look that far below the budget's bucket, and check every plan exactly
        first = max(0, math.ceil(need / self.unit - 1e-9) - self.steps)
        order = [int(k) for k in np.argsort(self.cost[first:], kind="stable") + first if np.isfinite(self.cost[k])]
        out: list[tuple[Step, ...]] = []
        for k in order:
            plan = self._plans[k]
            if plan not in out and budget.met_by(cost_model, plan):
                out.append(plan)
                if count is not None and len(out) >= count:
                    break
        return out

    def points(self, cost_model: CostModel) -> list[tuple[float, float, tuple[Step, ...]]]:
        """``(speed-up, predicted cost, plan)`` of the non-dominated plans, fastest last."""
        out: list[tuple[float, float, tuple[Step, ...]]] = []
        best = math.inf
        for k in range(len(self.cost) - 1, -1, -1):
            if np.isfinite(self.cost[k]) and self.cost[k] < best:
                best = float(self.cost[k])
                out.append((cost_model.speedup(self._plans[k]), best, self._plans[k]))
        return sorted(out, key=lambda p: p[0])


def plan_front(model: SegmentModel, cost: CostModel, choices: Sequence[CachedRange], max_run: int = 8,
               resolution: int = 2) -> PlanFront:
    """Every budget's model-best plan: a DP over (last full step, the one before) and skipped MACs.

    ``choices`` are the space's Δ choices (ranges, replayed or forecast); runs of more than
    ``max_run`` Δ steps are not considered (fewer when the choices skip many different
    amounts, so a run scores at most ``MAX_COMBOS`` assignments). One bucket is ``1/resolution`` of the
    cheapest block's MACs.
    """
    steps = model.steps
    skip = {c: cost.cfg_factor * sum(cost.blocks[c.start : c.stop]) for c in choices}
    unit = cost.cfg_factor * min(cost.blocks) / resolution
    buckets = int(max(skip.values()) * (steps - 1) / unit) + 2
    groups = sorted({int(skip[c] // unit) for c in choices})  # choices that skip the same MACs compete per step
    if len(groups) > 1:
        max_run = max(1, min(max_run, int(math.log(MAX_COMBOS, len(groups)))))

    def runs(a: int, b: int | None, stop: int) -> list[_Run]:
        inner = list(range(a + 1, stop))
        if not inner:
            return [_Run(0, 0.0, ())]
        options: list[list[tuple[int, np.ndarray, CachedRange]]] = []
        for i in inner:
            per_group: dict[int, tuple[float, int, np.ndarray, CachedRange]] = {}
            for choice in choices:
                if choice.forecast and b is None:
                    continue
                terms = model.step_terms(i, choice, a, b)
                own = float(model.run_costs(terms[None, None])[0])
                group = int(skip[choice] // unit)
                held = per_group.get(group)
                if held is None or own < held[0]:
                    per_group[group] = (own, group, terms, choice)
            options.append([(m, t, c) for _, m, t, c in per_group.values()])
        combos = np.array(list(itertools.product(*[range(len(o)) for o in options])))  # [runs, steps]
        terms = np.stack([np.stack([t for _, t, _ in o]) for o in _padded(options)])  # [steps, groups, items]
        values = model.run_costs(terms[np.arange(len(inner)), combos])
        skipped = np.array([[options[j][g][0] for j, g in enumerate(row)] for row in combos]).sum(1)
        best: dict[int, _Run] = {}
        for row, total, value in zip(combos.tolist(), skipped.tolist(), values.tolist()):
            if total not in best or value < best[total].cost:
                best[total] = _Run(total, value, tuple(options[j][g][2] for j, g in enumerate(row)))
        return list(best.values())

    # states (a, b): the cheapest cost per bucket, and where it came from (state, bucket, run)
    ids: dict[tuple[int, int | None], int] = {}
    value: list[np.ndarray] = []
    came: list[np.ndarray] = []  # [3, buckets]: previous state id, previous bucket, run id (-1: none)
    chosen: list[tuple[CachedRange, ...]] = []

    def state(key: tuple[int, int | None]) -> int:
        if key not in ids:
            ids[key] = len(value)
            value.append(np.full(buckets, np.inf))
            came.append(np.full((3, buckets), -1, dtype=np.int64))
        return ids[key]

    value[state((0, None))][0] = 0.0
    end = state((steps, None))  # past the last step: the plan is complete
    for a in range(steps):
        for key in [k for k in ids if k[0] == a]:
            sid = ids[key]
            current = value[sid]
            if not np.isfinite(current).any():
                continue
            for stop in range(a + 1, min(steps, a + max_run + 1) + 1):
                target = state((stop, a)) if stop < steps else end
                for run in runs(a, key[1], stop):
                    shifted = np.full(buckets, np.inf)
                    shifted[run.skipped :] = current[: buckets - run.skipped] + run.cost
                    better = shifted < value[target]
                    if better.any():
                        value[target][better] = shifted[better]
                        came[target][0, better] = sid
                        came[target][1, better] = np.nonzero(better)[0] - run.skipped
                        came[target][2, better] = len(chosen)
                        chosen.append(run.choices)

    keys = {sid: key for key, sid in ids.items()}

    def rebuild(k: int) -> tuple[Step, ...]:
        plan: list[Step] = [None] * steps
        sid = end
        while sid != ids[(0, None)]:
            previous, k, run = (int(v) for v in came[sid][:, k])
            a = keys[previous][0]
            plan[a + 1 : a + 1 + len(chosen[run])] = chosen[run]
            sid = previous
        return tuple(plan)

    final = value[end]
    plans = {k: rebuild(k) for k in np.nonzero(np.isfinite(final))[0].tolist()}
    return PlanFront(steps=steps, unit=unit, full_macs=cost.full_macs(steps), cost=final, _plans=plans)


def _padded(options: list[list[tuple[int, np.ndarray, CachedRange]]]) -> list[list[tuple[int, np.ndarray, CachedRange]]]:
    """Every step's options to the same count (repeating its last), so their terms stack into one array."""
    width = max(len(o) for o in options)
    return [o + [o[-1]] * (width - len(o)) for o in options]
