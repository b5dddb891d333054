"""The structure-aware sampler: greedy construction, then best-first local search on screened moves.

An Optuna sampler (shaped like ``optuna/samplers/_base.py``), so storage, resume,
``--jobs`` workers, duplicate answers and reports stay the study's one mechanism. It keeps
no state of its own that matters: every proposal is derived from the study's trials, so a
resumed study or a second worker proposes what a single uninterrupted run would.

Two fidelities (docs/design.md §6): candidate plans are *screened* on a few calibration
items, and only the best screened candidate is proposed as a trial, which the objective
scores on every calibration item. The report gives the rank correlation of the two.

1. **Greedy construction** (screened): from all-full, make a whole-range Δ step of the
   step whose replay costs least, until the budget is met.
2. **Local search**: around the best trials (a beam), screen the moves of
   :func:`~autodelta.plan_moves.neighbours` in a fixed shuffled order, ``chunk`` at a
   time, and propose the best-screened untried one of the first chunk that beats the
   incumbent's own screened score (all of them screened when none does: first
   improvement, so a neighbourhood is rarely screened whole); an incumbent whose
   ``patience`` proposals were tried without beating it is a local optimum, and the
   next one in the beam is searched.
3. When every neighbourhood is spent, a random two-move perturbation of the best plan.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from autodelta.cost import Budget
from autodelta.errors import AutodeltaError
from autodelta.evaluator import Evaluation, Evaluator
from autodelta.families.explicit import plan_values
from autodelta.greedy import greedy_plan
from autodelta.metrics import get_metric
from autodelta.plan_moves import Plan, neighbours
from autodelta.schedule import Step, decode_plan, encode_plan
from autodelta.search import check_sampler
from autodelta.spaces import SearchSpace

logger = logging.getLogger(__name__)


class ScreenMemo:
    """Screening scores by plan: the cheap evaluator, each plan evaluated once per process."""

    def __init__(self, evaluator: Evaluator, metric: str) -> None:
        self.evaluator, self.metric = evaluator, metric
        self.cost, self.steps, self.num_blocks = evaluator.cost, evaluator.steps, evaluator.num_blocks
        self.scores: dict[Plan, float] = {}

    def score(self, plan: Sequence[Step]) -> float:
        key = tuple(plan)
        if key not in self.scores:
            self.scores[key] = float(self.evaluator.evaluate(key).metrics[self.metric])
        return self.scores[key]

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:  # the Evaluator protocol, for the greedy construction
        value = self.score(plan)
        return Evaluation(metrics={self.metric: value}, macs=self.cost.plan_macs(plan), speedup=self.cost.speedup(plan))


class PlanSampler(optuna.samplers.BaseSampler):
    """Proposes whole explicit plans; see the module docstring for the order."""

    def __init__(self, space: SearchSpace, evaluator: Evaluator, budget: Budget, metric: str = "psnr",
                 screen: Evaluator | None = None, seed: int = 0, beam: int = 4, patience: int = 3,
                 max_shift: int = 3, chunk: int = 16) -> None:
        check_sampler("local", space)
        self.space, self.budget, self.metric = space, budget, metric
        self.steps, self.num_blocks, self.cost = evaluator.steps, evaluator.num_blocks, evaluator.cost
        self.ranges = space.range_set(self.num_blocks)
        self.screen = ScreenMemo(screen if screen is not None else evaluator, metric)
        self.sign = 1.0 if get_metric(metric).higher_is_better else -1.0
        self.seed, self.beam, self.patience, self.max_shift, self.chunk = seed, beam, patience, max_shift, chunk
        self._greedy: Plan | None = None
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        names = space.names(self.steps, self.num_blocks)
        self._dists: dict[str, BaseDistribution] = {}
        for param in space.expanded(self.steps):
            low, high = param.bounds(names)
            self._dists[param.name] = IntDistribution(int(low), int(high))

    # --- Optuna's sampler interface --------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued seed: its parameters are given
            return {}
        plan = self.propose(study, trial.number)
        values = plan_values(plan, self.ranges) if plan is not None else None
        if values is None:
            return {}
        return {k: v for k, v in values.items() if k in search_space and search_space[k]._contains(v)}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # --- proposals ------------------------------------------------------------------------------
    def fits(self, plan: Plan) -> bool:
        return self.budget.met_by(self.cost, plan)

    def greedy(self) -> Plan:
        if self._greedy is None:
            self._greedy = tuple(greedy_plan(self.screen, self.budget, self.metric))
        return self._greedy

    def _plan_of(self, trial: FrozenTrial) -> Plan | None:
        if "plan" in trial.user_attrs:
            return decode_plan(trial.user_attrs["plan"], f"trial {trial.number}")
        params = {**trial.params, **trial.system_attrs.get("fixed_params", {})}
        if all(name in params for name in self._dists):
            try:
                return self.space.plan(params, self.steps, self.num_blocks)
            except AutodeltaError:
                return None
        return None

    def propose(self, study: optuna.Study, number: int = 0) -> Plan | None:
        """The next plan to score on every calibration item, from what the study already holds."""
        done: dict[Plan, float] = {}
        taken: set[Plan] = set()
        for t in study.get_trials(deepcopy=False):
            plan = self._plan_of(t)
            if plan is None:
                continue
            if t.state == TrialState.COMPLETE and t.values and not math.isnan(t.values[0]):
                done.setdefault(plan, self.sign * t.values[0])
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL):
                taken.add(plan)
        greedy = self.greedy()
        if greedy not in taken:
            return greedy
        incumbents = sorted((p for p in done if self.fits(p)), key=lambda p: -done[p])
        for incumbent in incumbents[: self.beam]:
            hood = neighbours(incumbent, self.ranges, self.fits, self.max_shift)
            fresh = [p for p in hood if p not in taken]
            if not fresh or sum(p in done for p in hood) >= self.patience:
                continue  # a local optimum (or nothing left to try) here: the next incumbent
            return self._first_improvement(incumbent, fresh)
        return self._perturb(incumbents[0] if incumbents else greedy, taken, number)

    def _first_improvement(self, incumbent: Plan, fresh: list[Plan]) -> Plan:
        """The best screened of the first chunk (in a fixed order) holding a plan that beats ``incumbent``."""
        rng = random.Random(f"{self.seed}:{encode_plan(incumbent)}")  # the same order in every process
        order = rng.sample(fresh, len(fresh))
        bar = self.sign * self.screen.score(incumbent)
        best = order[0]
        for start in range(0, len(order), self.chunk):
            best = max([best, *order[start : start + self.chunk]], key=self._rank)
            if self._rank(best)[0] > bar:
                break
        return best

    def _rank(self, plan: Plan) -> tuple[float, float]:
        return self.sign * self.screen.score(plan), -self.cost.plan_macs(plan)

    def _perturb(self, plan: Plan, taken: set[Plan], number: int) -> Plan | None:
        rng = random.Random(self.seed * 100_003 + number)
        first = neighbours(plan, self.ranges, lambda p: True, self.max_shift)
        if not first:
            return None
        for _ in range(50):
            second = neighbours(rng.choice(first), self.ranges, self.fits, self.max_shift)
            fresh = [p for p in second if p not in taken]
            if fresh:
                return rng.choice(fresh)
        return None
