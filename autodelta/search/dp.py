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
    solver = _FrontSolver(model, cost, choices, max_run, resolution)
    final = solver.solve()
    plans = {k: solver.rebuild(k) for k in np.nonzero(np.isfinite(final))[0].tolist()}
    return PlanFront(steps=model.steps, unit=solver.unit, full_macs=cost.full_macs(model.steps), cost=final,
                     _plans=plans)


class _FrontSolver:
    """The DP's tables: per state (last full step, the one before), the cheapest predicted cost per bucket of
    skipped MACs, and where it came from (previous state, previous bucket, run)."""

    def __init__(self, model: SegmentModel, cost: CostModel, choices: Sequence[CachedRange], max_run: int,
                 resolution: int) -> None:
        self.model, self.choices, self.steps = model, choices, model.steps
        self.skip = {c: cost.cfg_factor * sum(cost.blocks[c.start : c.stop]) for c in choices}
        self.unit = cost.cfg_factor * min(cost.blocks) / resolution
        self.buckets = int(max(self.skip.values()) * (self.steps - 1) / self.unit) + 2
        groups = sorted({int(self.skip[c] // self.unit) for c in choices})  # same skipped MACs compete per step
        self.max_run = max(1, min(max_run, int(math.log(MAX_COMBOS, len(groups))))) if len(groups) > 1 else max_run
        self.ids: dict[tuple[int, int | None], int] = {}
        self.value: list[np.ndarray] = []
        self.came: list[np.ndarray] = []  # [3, buckets]: previous state id, previous bucket, run id (-1: none)
        self.chosen: list[tuple[CachedRange, ...]] = []
        self.keys: dict[int, tuple[int, int | None]] = {}

    def state(self, key: tuple[int, int | None]) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.value)
            self.value.append(np.full(self.buckets, np.inf))
            self.came.append(np.full((3, self.buckets), -1, dtype=np.int64))
        return self.ids[key]

    def _options(self, i: int, a: int, b: int | None) -> list[tuple[int, np.ndarray, CachedRange]]:
        """Step ``i``'s choices between full steps: the model-cheapest one per group of equal skipped MACs."""
        per_group: dict[int, tuple[float, int, np.ndarray, CachedRange]] = {}
        for choice in self.choices:
            if choice.forecast and b is None:
                continue
            terms = self.model.step_terms(i, choice, a, b)
            own = float(self.model.run_costs(terms[None, None])[0])
            group = int(self.skip[choice] // self.unit)
            held = per_group.get(group)
            if held is None or own < held[0]:
                per_group[group] = (own, group, terms, choice)
        return [(m, t, c) for _, m, t, c in per_group.values()]

    def runs(self, a: int, b: int | None, stop: int) -> list[_Run]:
        """The cheapest Δ run per skipped total between full steps ``a`` and ``stop`` (``b``: the one before ``a``)."""
        inner = list(range(a + 1, stop))
        if not inner:
            return [_Run(0, 0.0, ())]
        options = [self._options(i, a, b) for i in inner]
        combos = np.array(list(itertools.product(*[range(len(o)) for o in options])))  # [runs, steps]
        terms = np.stack([np.stack([t for _, t, _ in o]) for o in _padded(options)])  # [steps, groups, items]
        values = self.model.run_costs(terms[np.arange(len(inner)), combos])
        skipped = np.array([[options[j][g][0] for j, g in enumerate(row)] for row in combos]).sum(1)
        best: dict[int, _Run] = {}
        for row, total, value in zip(combos.tolist(), skipped.tolist(), values.tolist()):
            if total not in best or value < best[total].cost:
                best[total] = _Run(total, value, tuple(options[j][g][2] for j, g in enumerate(row)))
        return list(best.values())

    def solve(self) -> np.ndarray:
        """Fill the tables step by step; the cost per bucket of complete plans."""
        self.value[self.state((0, None))][0] = 0.0
        end = self.state((self.steps, None))  # past the last step: the plan is complete
        for a in range(self.steps):
            for key in [k for k in self.ids if k[0] == a]:
                sid = self.ids[key]
                if not np.isfinite(self.value[sid]).any():
                    continue
                for stop in range(a + 1, min(self.steps, a + self.max_run + 1) + 1):
                    target = self.state((stop, a)) if stop < self.steps else end
                    for run in self.runs(a, key[1], stop):
                        self._relax(sid, target, run)
        self.keys = {sid: key for key, sid in self.ids.items()}
        return self.value[end]

    def _relax(self, sid: int, target: int, run: _Run) -> None:
        shifted = np.full(self.buckets, np.inf)
        shifted[run.skipped :] = self.value[sid][: self.buckets - run.skipped] + run.cost
        better = shifted < self.value[target]
        if better.any():
            self.value[target][better] = shifted[better]
            self.came[target][0, better] = sid
            self.came[target][1, better] = np.nonzero(better)[0] - run.skipped
            self.came[target][2, better] = len(self.chosen)
            self.chosen.append(run.choices)

    def rebuild(self, k: int) -> tuple[Step, ...]:
        """The plan ending in bucket ``k``, followed back from the end state (after :meth:`solve`)."""
        plan: list[Step] = [None] * self.steps
        sid, start = self.ids[(self.steps, None)], self.ids[(0, None)]
        while sid != start:
            previous, k, run = (int(v) for v in self.came[sid][:, k])
            a = self.keys[previous][0]
            plan[a + 1 : a + 1 + len(self.chosen[run])] = self.chosen[run]
            sid = previous
        return tuple(plan)


def _padded(options: list[list[tuple[int, np.ndarray, CachedRange]]]) -> list[list[tuple[int, np.ndarray, CachedRange]]]:
    """Every step's options to the same count (repeating its last), so their terms stack into one array."""
    width = max(len(o) for o in options)
    return [o + [o[-1]] * (width - len(o)) for o in options]
