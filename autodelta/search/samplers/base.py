"""The Optuna plumbing shared by samplers that propose whole explicit plans.

Shaped like ``optuna/samplers/_base.py``: a sampler that proposes a plan per trial (as the
per-step parameters ``step_1`` … of the explicit space) and keeps no state of its own that
matters. Every proposal is derived from the study's trials, so a resumed study or a second
worker proposes what a single uninterrupted run would. Subclasses say which plan comes
next (:meth:`ExplicitPlanSampler.propose`).
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from autodelta.errors import AutodeltaError
from autodelta.evaluation.metrics import get_metric
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import decode_plan
from autodelta.search.families.explicit import plan_values
from autodelta.search.samplers.moves import Plan, neighbours
from autodelta.search.spaces import SearchSpace


@dataclass
class StudyPlans:
    """What a study holds, by plan: real scores (signed: higher is better), and every plan already taken."""

    done: dict[Plan, float] = field(default_factory=dict)
    taken: set[Plan] = field(default_factory=set)
    item_mse: dict[Plan, list[float]] = field(default_factory=dict)
    number: dict[Plan, int] = field(default_factory=dict)  # the first trial of each plan

    def tried_after(self, incumbent: Plan, hood: list[Plan]) -> int:
        """How many of ``hood`` were scored after ``incumbent`` was: the proposals it has had."""
        first = self.number.get(incumbent, -1)
        return sum(1 for p in hood if p in self.done and self.number.get(p, -1) > first)


class ExplicitPlanSampler(optuna.samplers.BaseSampler):
    """Proposes whole explicit plans of a per-step space; see the module docstring."""

    def __init__(self, space: SearchSpace, steps: int, num_blocks: int, cost: CostModel, budget: Budget,
                 metric: str = "psnr", seed: int = 0, max_shift: int = 3) -> None:
        if not space.family_impl.accepts("model"):
            raise AutodeltaError(f"the plan samplers search per-step spaces (explicit), not {space.name} "
                                 f"({space.family}); use --sampler tpe there, or --space explicit")
        self.space, self.budget, self.metric = space, budget, metric
        self.steps, self.num_blocks, self.cost = steps, num_blocks, cost
        self.ranges = space.range_set(num_blocks)
        self.sign = 1.0 if get_metric(metric).higher_is_better else -1.0
        self.seed, self.max_shift = seed, max_shift
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        names = space.names(steps, num_blocks)
        self._dists: dict[str, IntDistribution] = {}
        for param in space.expanded(steps):
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
        return {k: v for k, v in values.items() if k in self._dists and self._dists[k].low <= v <= self._dists[k].high}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # --- proposals ------------------------------------------------------------------------------
    @abstractmethod
    def propose(self, study: optuna.Study, number: int = 0) -> Plan | None:
        """The next plan to score on every calibration item, from what the study already holds."""

    def screened(self, plan: Plan) -> float | None:
        """``plan``'s score on the screening items, when this sampler screened it (for the report)."""
        return None

    def fits(self, plan: Plan, budget: Budget | None = None) -> bool:
        return (budget or self.budget).met_by(self.cost, plan)

    def plan_of(self, trial: FrozenTrial) -> Plan | None:
        if "plan" in trial.user_attrs:
            return decode_plan(trial.user_attrs["plan"], f"trial {trial.number}")
        params = {**trial.params, **trial.system_attrs.get("fixed_params", {})}
        if all(name in params for name in self._dists):
            try:
                return self.space.plan(params, self.steps, self.num_blocks)
            except AutodeltaError:
                return None
        return None

    def study_plans(self, study: optuna.Study) -> StudyPlans:
        held = StudyPlans()
        for t in study.get_trials(deepcopy=False):
            plan = self.plan_of(t)
            if plan is None:
                continue
            if t.state == TrialState.COMPLETE and t.values and not math.isnan(t.values[0]):
                held.done.setdefault(plan, self.sign * t.values[0])
                if "item_mse" in t.user_attrs:
                    held.item_mse.setdefault(plan, list(t.user_attrs["item_mse"]))
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL):
                held.taken.add(plan)
                held.number.setdefault(plan, t.number)
        return held

    def perturb(self, plan: Plan, taken: set[Plan], number: int, budget: Budget | None = None) -> Plan | None:
        """A random plan two moves from ``plan``, meeting the budget and not yet taken (seeded by the trial number)."""
        rng = random.Random(f"{self.seed}:{number}")
        first = neighbours(plan, self.ranges, lambda p: True, self.max_shift)
        if not first:
            return None
        for _ in range(50):
            second = neighbours(rng.choice(first), self.ranges, lambda p: self.fits(p, budget), self.max_shift)
            fresh = [p for p in second if p not in taken]
            if fresh:
                return rng.choice(fresh)
        return None
