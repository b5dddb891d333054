"""The model sampler, the default on the explicit space: plans from the error model, verified by real trials.

Every generation after the model's probes is a trial (no screening), and the model
proposes each one:

1. **DP seeds**: the calibrated model's best plan for the budget
   (:func:`~autodelta.search.dp.plan_front`: every budget at once), then the paper rule's
   plan where the space expresses it (the baseline to beat), then each alternative
   reading's (:meth:`~autodelta.search.dp.SegmentModel.alternatives`), while untried.
2. **Model-ranked local search**: around the best real trials (a beam), the untried
   neighbour (:func:`~autodelta.search.samplers.moves.neighbours`) with the best optimistic score:
   predicted quality plus ``explore`` standard deviations of the model's uncertainty about
   how it differs from the incumbent (large where it changes steps the trials never
   varied). An incumbent whose ``patience`` neighbours, tried after it, did not beat it
   is a local optimum, and the next one in the beam is searched.
3. When every neighbourhood is spent, a random two-move perturbation of the best plan.

Under a bound too small for the default search (:func:`~autodelta.search.settings.screens_within`),
each trial is the best of the model's first few candidates *screened* on a fifth of the items;
the screens calibrate the model too (on the items they generated), so a small bound looks at
several plans per trial (at a bound of 200 on the three proxies: 6 of 9 cells better, mean
+0.45 dB held out).

The model is recalibrated on every completed trial (:meth:`ErrorModel.calibrated`), so what
the trials measure changes the next proposal and the DP's seeds. The optimism matters:
without it, the search on tiny-dit-p2 at 2x stayed in the basin of its DP seeds (35.62 dB
held out); with ``explore=4`` it left it (37.63 dB). With several budgets (``--budgets``),
each proposal serves the budget whose band holds the fewest trials, so one study covers
all of them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import optuna

from autodelta.errors import AutodeltaError
from autodelta.evaluation.evaluator import Evaluator
from autodelta.evaluation.work import WorkExhausted, WorkMeter
from autodelta.plan.cost import Budget, paper_rule
from autodelta.search.dp import PlanFront, SegmentModel, plan_front
from autodelta.search.families.explicit import plan_values
from autodelta.search.samplers.base import ExplicitPlanSampler, StudyPlans
from autodelta.search.samplers.moves import Plan, neighbours
from autodelta.search.settings import probe_items_within
from autodelta.search.spaces import SearchSpace

logger = logging.getLogger(__name__)

MODEL_ATTR = "error_model"
"""The study attribute that holds the model's calibration from its probes (so resume and workers reuse it)."""


class ModelSampler(ExplicitPlanSampler):
    """Proposes whole explicit plans from an error model; see the module docstring for the order."""

    def __init__(self, space: SearchSpace, evaluator: Evaluator, budgets: Sequence[Budget], model: SegmentModel,
                 metric: str = "psnr", seed: int = 0, beam: int = 3, patience: int = 3, max_shift: int = 3,
                 explore: float = 4.0, screen: Evaluator | None = None, screen_k: int = 0) -> None:
        if not budgets:
            raise AutodeltaError("the model sampler needs at least one budget")
        self.budgets = sorted(budgets, key=lambda b: b.speedup)
        super().__init__(space, evaluator.steps, evaluator.num_blocks, evaluator.cost, self.budgets[0], metric,
                         seed, max_shift)
        self.model = model
        self.items = evaluator.items
        self.beam, self.patience, self.explore = beam, patience, explore
        self.screen: Evaluator | None = screen if screen_k > 1 else None
        self.screen_k = screen_k if self.screen is not None else 0
        self._positions: tuple[int, ...] | None = tuple(getattr(screen, "item_indices", ())) or None
        self._screened: dict[Plan, tuple[list[float], float]] = {}  # per-item MSE on the screen items, and its score
        self._fronts: dict[int, PlanFront] = {}
        self._papers: dict[Budget, Plan | None] = {}
        self._calibration: tuple[Any, SegmentModel] = (None, model)

    def paper_plan(self, budget: Budget) -> Plan | None:
        """The paper rule's plan at ``budget`` when the space expresses it: the baseline the search must beat,
        measured right after the model's first plan (so a bound of one trial still gets the model's plan)."""
        if budget not in self._papers:
            plan = tuple(paper_rule(self.cost, self.steps, budget).plan(self.steps, self.num_blocks))
            fits = plan_values(plan, self.ranges) is not None and self.fits(plan, budget)
            self._papers[budget] = plan if fits else None
        return self._papers[budget]

    def front(self, model: SegmentModel) -> PlanFront:
        """The DP's plans under ``model``: computed once per model object (calibration picks among a few)."""
        if id(model) not in self._fronts:
            self._fronts[id(model)] = plan_front(model, self.cost, self.ranges)
        return self._fronts[id(model)]

    def calibrated(self, held: StudyPlans) -> SegmentModel:
        """The model calibrated on the study's completed trials and this sampler's screens (cached until new ones
        land)."""
        key = (frozenset(held.item_mse), frozenset(self._screened))
        if key != self._calibration[0]:
            observed: list[tuple[Plan, Sequence[float], Sequence[int] | None]] = [
                (plan, mse, None) for plan, mse in held.item_mse.items()]
            observed += [(plan, mse, self._positions) for plan, (mse, _) in self._screened.items()
                         if plan not in held.item_mse]
            self._calibration = (key, self.model.calibrated(observed))
        return self._calibration[1]

    def screened(self, plan: Plan) -> float | None:
        found = self._screened.get(tuple(plan))
        return None if found is None else found[1]

    def target(self, held: StudyPlans) -> Budget:
        """The budget whose band (its speed-up up to the next budget's) holds the fewest plans taken so far."""
        counts = [0] * len(self.budgets)
        for plan in held.taken:
            speedup = self.cost.speedup(plan)
            bands = [k for k, b in enumerate(self.budgets) if b.allows(speedup)]
            if bands:
                counts[bands[-1]] += 1
        return self.budgets[counts.index(min(counts))]

    def propose(self, study: optuna.Study, number: int = 0) -> Plan | None:
        held = self.study_plans(study)
        budget = self.target(held)
        model = self.calibrated(held)
        candidates = self._candidates(model, held, budget, number)
        if self.screen is None:
            return next(candidates, None)
        picks = list(itertools.islice(candidates, self.screen_k))
        room = self.screen.meter.room()
        if room is not None and room < len(picks) * self.screen.items + self.items:
            return picks[0] if picks else None  # no room to screen and still run the trial: the model's first
        for plan in picks:  # the model's best few, each on the screen items; the best of them is the trial
            if plan not in self._screened:
                try:
                    with self.screen.meter.during("screening"):
                        evaluation = self.screen.evaluate(plan)
                except WorkExhausted:
                    break
                self._screened[plan] = (evaluation.item_mse(), self.sign * evaluation.metrics[self.metric])
        scored = [p for p in picks if p in self._screened]
        return max(scored, key=lambda p: self._screened[p][1]) if scored else (picks[0] if picks else None)

    def _candidates(self, model: SegmentModel, held: StudyPlans, budget: Budget, number: int) -> Iterator[Plan]:
        """Untried plans, best first: the calibrated model's DP plan, the paper rule's, each reading's DP plan;
        then the neighbours of the best trials by optimistic score; then a random two-move perturbation."""
        seen: set[Plan] = set()

        def fresh(plan: Plan | None) -> bool:
            if plan is None or plan in held.taken or plan in self._screened or plan in seen:
                return False
            seen.add(plan)
            return True

        seed = None
        for k, candidate in enumerate((model, *self.model.alternatives())):
            seed = self.front(candidate).best(budget, self.cost)
            if fresh(seed):
                yield seed  # type: ignore[misc]
            paper = self.paper_plan(budget)
            if k == 0 and fresh(paper):
                yield paper  # type: ignore[misc]
        done = held.done
        incumbents = sorted((p for p in done if self.fits(p, budget)), key=lambda p: -done[p])
        for incumbent in incumbents[: self.beam]:
            hood = neighbours(incumbent, self.ranges, lambda p: self.fits(p, budget), self.max_shift)
            untried = [p for p in hood if p not in held.taken and p not in self._screened and p not in seen]
            if not untried or held.tried_after(incumbent, hood) >= self.patience:
                continue  # a local optimum (or nothing left to try) here: the next incumbent
            yield from sorted(untried, key=lambda p: (-(model.quality(p) + self.explore * model.uncertainty(p, incumbent)),
                                                      self.cost.plan_macs(p)))
        start = incumbents[0] if incumbents else seed
        if start is not None:
            plan = self.perturb(start, held.taken | set(self._screened), number, budget)
            if plan is not None:
                yield plan


def prepare_model(study: optuna.Study, evaluator: Evaluator, meter: WorkMeter, probing: bool = True,
                  asked: int | None = None) -> SegmentModel:
    """The evaluator's error model, calibrated by probes once per study (their gains are kept in the study).

    The probes take as many items as the bound leaves room for (:func:`probe_items_within`);
    with no room, or in a worker (``probing=False``), the model starts from the stored gains or
    the prior. A study that started from the prior probes when a later run has the room.
    """
    stored = study.user_attrs.get(MODEL_ATTR)
    prior = isinstance(stored, dict) and stored.get("source") == "prior"
    count = probe_items_within(meter.room(), evaluator.items, evaluator.probe_count, asked) if probing else 0
    if stored is not None and not (prior and count > 0):
        model, _ = evaluator.error_model(None, stored)
        return model
    probe = None if count == 0 else evaluator.subset(count) if count < evaluator.items else evaluator
    try:
        with meter.during("model"):
            model, calibration = evaluator.error_model(probe, None)
    except WorkExhausted:  # another process of the study took the room meanwhile: start from the prior
        logger.warning("--max-generations %s left no room for the error model's probes; starting from its prior",
                       meter.bound)
        model, calibration = evaluator.error_model(None, None)
    if calibration and (probing or stored is None):
        study.set_user_attr(MODEL_ATTR, calibration)
    return model
