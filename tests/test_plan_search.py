"""The explicit-plan space and the structure-aware sampler: expressiveness, moves, and a planted optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.evaluation.evaluator import Evaluation
from autodelta.evaluation.synthetic import SyntheticEvaluator
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.plan.schedule import CachedRange, Schedule, load_schedule
from autodelta.search.families.explicit import plan_values
from autodelta.search.run import best_reachable_speedup, run_search
from autodelta.search.samplers.moves import neighbours
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import SpaceError, load_space

W = CachedRange(0, 28)
GREEDY_SHAPE = "FFFdFFdFdFdFddFdFdFF"  # the unseen model's greedy plan of the issue: uneven, two Δ in a row


def _plan(text: str, rng: CachedRange = W) -> tuple:
    return tuple(None if c == "F" else rng for c in text)


def test_the_explicit_space_expresses_any_placement_and_round_trips_through_yaml_and_the_runtime(tmp_path):
    space = load_space("explicit", 20, 28)
    ranges = space.range_set(28)
    assert ranges[0] == W and all(r.stop <= 28 for r in ranges) and len(set(ranges)) == len(ranges)
    plan = list(_plan(GREEDY_SHAPE))
    plan[9] = ranges[2]  # one step over another named range
    values = plan_values(plan, ranges)
    assert values is not None and space.contains(values, 20, 28)
    assert space.plan(values, 20, 28) == tuple(plan)

    schedule = Schedule(model="dit-test", num_blocks=28, scheduler="DPMSolverMultistepScheduler", steps=20,
                        plan=tuple(plan))
    schedule.save(tmp_path / "s.yaml")
    assert load_schedule(tmp_path / "s.yaml").plan == tuple(plan)


def test_an_explicit_plan_runs_exactly_its_block_counts(profile, pipe):
    """Through the runtime on a real DiT: blocks run per generation = Σ over steps of N_b − cached."""
    ranges = load_space("explicit", 20, 28).range_set(28)
    plan = list(_plan(GREEDY_SHAPE))
    plan[9], plan[13] = ranges[1], ranges[3]
    evaluator = DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 2), prefix_reuse=False)
    evaluator.evaluate(plan)
    assert evaluator.blocks_computed == sum(28 - (0 if s is None else s.length) for s in plan)
    assert evaluator.blocks_computed == evaluator.blocks_naive


def test_per_step_spaces_check_their_ranges(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: explicit\nranges:\n  past: [2, N_b]\nparams:\n  step: {int: [0, R]}\n")
    with pytest.raises(SpaceError, match="outside"):
        load_space(bad, 20, 28)
    missing = tmp_path / "missing.yaml"
    missing.write_text("family: explicit\nparams:\n  step: {int: [0, 1]}\n")
    with pytest.raises(SpaceError, match="needs 'ranges'"):
        load_space(missing, 20, 28)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("family: delta-dit\nranges: {whole: [0, N_b]}\nparams:\n  N: {int: [1, 4]}\n  N_c: {int: [1, N_b]}\n"
                     "  b: {int: [0, T]}\n  s_early: {fixed: 0}\n  s_late: {fixed: 0}\n")
    with pytest.raises(SpaceError, match="per-step"):
        load_space(wrong, 20, 28)
    assert best_reachable_speedup(load_space("explicit", 20, 28), CostModel.uniform(28), 20) == pytest.approx(20.0)


@pytest.mark.parametrize("budget", ["1.3x", "1.6x", "2x"])
def test_moves_keep_step_zero_full_and_the_budget(budget):
    cost = CostModel.seeded(28)
    limit = parse_budget(budget)
    ranges = load_space("explicit", 20, 28).range_set(28)

    def fits(plan):
        return limit.allows(cost.speedup(plan))

    plan = list(_plan("FdFdFdFdFdFdFdFdFdFd"))
    for i in range(18, 0, -2):  # make it meet the budget: replay more steps from the end
        if fits(tuple(plan)):
            break
        plan[i] = W
    plan = tuple(plan)
    hood = neighbours(plan, ranges, fits)
    assert hood and len(set(hood)) == len(hood) and plan not in hood
    for p in hood:
        assert p[0] is None and len(p) == 20 and fits(p)
        changed = [i for i in range(20) if p[i] != plan[i]]
        assert 1 <= len(changed) <= 3  # one move: a shift or trade touches at most three steps
    unconstrained = neighbours(plan, ranges, lambda p: True)
    assert len(unconstrained) >= len(hood)
    assert any(p.count(None) == plan.count(None) + 1 for p in unconstrained)  # fill
    assert any(sum(a != b for a, b in zip(p, plan)) == 2 and p.count(None) == plan.count(None)
               for p in unconstrained)  # shift


class PlantedEvaluator(SyntheticEvaluator):
    """Quality peaks at one uneven plan no parametric family expresses; every other step costs by distance."""

    def __init__(self) -> None:
        super().__init__(CostModel.uniform(28), 20)
        self.target = _plan(GREEDY_SHAPE)

    def quality(self, plan):
        plan = tuple(plan)
        miss = sum((a is None) != (b is None) for a, b in zip(plan, self.target))
        partial = sum(1 for s in plan if s is not None and s != W)
        deltas = sum(1 for s in plan if s is not None)
        return 40.0 - 3.0 * miss - 0.5 * partial - 0.1 * max(0, 8 - deltas)

    def evaluate(self, plan):
        self.meter.charge(1)
        self.evaluations += 1
        return Evaluation(metrics={"psnr": self.quality(plan)}, macs=self.cost.plan_macs(plan),
                          speedup=self.cost.speedup(plan))

    def error_model(self, probe, stored):
        return PlantedModel(self), {}


class PlantedModel:
    """The planted landscape as the DP reads it: at the budget (8 Δ steps), a Δ step off the target costs two misses."""

    def __init__(self, evaluator: PlantedEvaluator) -> None:
        self.evaluator, self.steps = evaluator, evaluator.steps

    def step_terms(self, step, choice, last_full, previous_full):
        return np.array([6.0 * (self.evaluator.target[step] is None) + 0.5 * (choice != W)])

    def run_costs(self, terms):
        return terms.sum(axis=(-2, -1))

    def quality(self, plan):
        return self.evaluator.quality(plan)

    def calibrated(self, observed):
        return self

    def uncertainty(self, plan, than=None):
        return 0.0

    def alternatives(self):
        return [self]


def test_the_search_finds_a_planted_optimum_the_parametric_families_cannot_express(tmp_path):
    evaluator = PlantedEvaluator()
    budget = parse_budget(f"{evaluator.cost.speedup(evaluator.target) - 1e-6:.6f}x")
    for name in ("delta-dit", "stagewise", "free-steps", "anchored"):  # none of them reaches it
        settings = SearchSettings(budget=budget, space=load_space(name, 20, 28), trials=40, model="synthetic")
        outcome = run_search(evaluator, settings, progress=False)
        assert outcome.best is None or outcome.best.plan != evaluator.target
    settings = SearchSettings(budget=budget, space=load_space("explicit", 20, 28), trials=40, model="synthetic",
                              storage=f"sqlite:///{tmp_path / 'planted.db'}", study_name="planted")
    outcome = run_search(evaluator, settings, progress=False)
    assert outcome.best is not None and outcome.best.plan == evaluator.target
    assert outcome.generations["trials"] == len(outcome.records) and outcome.generations["screening"] == 0

    screened = SearchSettings(budget=budget, space=load_space("explicit", 20, 28), trials=40, model="synthetic",
                              sampler="local")  # greedy construction and screened moves find it too
    outcome = run_search(PlantedEvaluator(), screened, progress=False)
    assert outcome.best is not None and outcome.best.plan == evaluator.target
    assert outcome.best.number < 24  # within 60% of the trials


@pytest.mark.parametrize("budget", ["1.6x", "2x"])
def test_the_search_learns_from_its_trials_what_its_prior_model_gets_wrong(budget):
    """ModelWorld: real scores from an error model with hidden per-step gains; the search's model starts from
    equal gains, so its first plan is far from the optimum. The trials must close that gap: a search that
    trusted its model, or calibrated nothing, stays near its first plan."""
    from autodelta.search.dp import plan_front
    from tests.factories import ModelWorld

    world, limit = ModelWorld(seed=1), parse_budget(budget)
    optimum = world.truth.quality(plan_front(world.truth, world.cost, world.choices).best(limit, world.cost))
    first = world.truth.quality(plan_front(world.prior, world.cost, world.choices).best(limit, world.cost))
    assert first < optimum - 5  # the prior's plan misses by more than 5 dB
    settings = SearchSettings(budget=limit, space=world.space, trials=20, model="world")
    outcome = run_search(world.evaluator(), settings, progress=False)
    assert outcome.best is not None and outcome.best.quality >= optimum - 0.5  # measured: within 0.25 dB


def test_the_local_sampler_is_refused_on_a_parametric_space_in_one_line():
    with pytest.raises(AutodeltaError, match="per-step"):
        settings = SearchSettings(budget=parse_budget("1.6x"), space=load_space("anchored", 20, 28), trials=2,
                                  sampler="local", model="synthetic")
        run_search(SyntheticEvaluator(CostModel.uniform(28), 20), settings, progress=False)


def test_screening_subset_spreads_over_items_and_slices_the_reference(profile, pipe):
    evaluator = DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 6))
    screen = evaluator.subset(3)
    assert len(screen.calibration) == 3 and len(set(screen.calibration.labels)) == 3
    plan = [None] * evaluator.steps
    assert torch.allclose(screen.generate(plan), screen.reference, atol=1e-4)  # all-full: the sliced reference
    assert screen.evaluate(_plan("FdFdFdFdFdFdFdFdFdFd")).metrics["psnr"] < 100
    with pytest.raises(AutodeltaError, match="out of range"):
        evaluator.subset(0)
