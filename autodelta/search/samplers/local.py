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
   :func:`~autodelta.search.samplers.moves.neighbours` in a fixed shuffled order, ``chunk`` at a
   time, and propose the best-screened untried one of the first chunk that beats the
   incumbent's own screened score (all of them screened when none does: first
   improvement, so a neighbourhood is rarely screened whole); an incumbent whose
   ``patience`` proposals were tried without beating it is a local optimum, and the
   next one in the beam is searched.
3. When every neighbourhood is spent, a random two-move perturbation of the best plan.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import optuna

from autodelta.evaluation.evaluator import Evaluation, Evaluator
from autodelta.evaluation.work import WorkExhausted
from autodelta.plan.cost import Budget
from autodelta.plan.schedule import Step, encode_plan
from autodelta.search.samplers.base import ExplicitPlanSampler
from autodelta.search.samplers.greedy import greedy_plan
from autodelta.search.samplers.moves import Plan, neighbours
from autodelta.search.spaces import SearchSpace

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
            with self.evaluator.meter.during("screening"):
                self.scores[key] = float(self.evaluator.evaluate(key).metrics[self.metric])
        return self.scores[key]

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:  # the Evaluator protocol, for the greedy construction
        value = self.score(plan)
        return Evaluation(metrics={self.metric: value}, macs=self.cost.plan_macs(plan), speedup=self.cost.speedup(plan))


class PlanSampler(ExplicitPlanSampler):
    """Proposes whole explicit plans; see the module docstring for the order."""

    def __init__(self, space: SearchSpace, evaluator: Evaluator, budget: Budget, metric: str = "psnr",
                 screen: Evaluator | None = None, seed: int = 0, beam: int = 4, patience: int = 3,
                 max_shift: int = 3, chunk: int = 16) -> None:
        super().__init__(space, evaluator.steps, evaluator.num_blocks, evaluator.cost, budget, metric, seed, max_shift)
        self.screen = ScreenMemo(screen if screen is not None else evaluator, metric)
        self.beam, self.patience, self.chunk = beam, patience, chunk
        self._greedy: Plan | None = None

    def screened(self, plan: Plan) -> float | None:
        return self.screen.scores.get(tuple(plan))

    def greedy(self) -> Plan:
        if self._greedy is None:
            self._greedy = tuple(greedy_plan(self.screen, self.budget, self.metric))
        return self._greedy

    def propose(self, study: optuna.Study, number: int = 0) -> Plan | None:
        """The next plan to score on every calibration item, from what the study already holds.

        ``None`` (Optuna then draws at random, and the objective refuses to evaluate) when
        --max-generations leaves no room to screen.
        """
        try:
            return self._propose(study, number)
        except WorkExhausted:
            return None

    def _propose(self, study: optuna.Study, number: int) -> Plan | None:
        held = self.study_plans(study)
        done, taken = held.done, held.taken
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
        return self.perturb(incumbents[0] if incumbents else greedy, taken, number)

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
