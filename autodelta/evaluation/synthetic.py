"""A closed-form evaluator: plan → "quality" in microseconds, for tests of the search.

It follows the :class:`~autodelta.evaluation.evaluator.Evaluator` protocol, so the search runs on
it exactly as on real generations, without a model; its error model is exact
(:class:`SyntheticModel`), so the DP's answer is the true optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autodelta.evaluation.evaluator import Evaluation
from autodelta.evaluation.work import WorkMeter
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import CachedRange, Step


class SyntheticEvaluator:
    """Closed-form, deterministic quality of a plan, for tests that must run in milliseconds.

    Each Δ step loses quality in proportion to the staleness of its Δ (steps since the
    last full step) times the sensitivity of the blocks it skips, which depends on the
    stage: early steps tolerate skipping rear blocks, late steps front blocks. Quality is
    ``base − Σ loss`` in "dB", as a PSNR would read. It counts as one item.
    """

    probe_count = 0

    def __init__(self, cost: CostModel, steps: int, base: float = 40.0, metric: str = "psnr",
                 meter: WorkMeter | None = None) -> None:
        self.cost, self.steps, self.num_blocks = cost, steps, cost.num_blocks
        self.base, self.metric = base, metric
        self.evaluations = 0
        self.meter = meter if meter is not None else WorkMeter()

    @property
    def items(self) -> int:
        return 1

    def block_sensitivity(self, step: int, block: int) -> float:
        progress = step / max(self.steps - 1, 1)  # 0 = noisiest
        position = block / max(self.num_blocks - 1, 1)  # 0 = front
        return 0.02 + 0.1 * ((1 - progress) * (1 - position) + progress * position)

    def step_loss(self, step: int, choice: CachedRange, last_full: int) -> float:
        return (step - last_full) * sum(self.block_sensitivity(step, k) for k in range(choice.start, choice.stop))

    def loss(self, plan: Sequence[Step]) -> float:
        loss, last_full = 0.0, 0
        for i, step in enumerate(plan):
            if step is None:
                last_full = i
            else:
                loss += self.step_loss(i, step, last_full)
        return loss

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        self.meter.charge(1)
        self.evaluations += 1
        loss = self.loss(plan)
        return Evaluation(metrics={self.metric: self.base - loss}, macs=self.cost.plan_macs(plan),
                          speedup=self.cost.speedup(plan), per_item={"mse": [loss]})

    def subset(self, count: int) -> SyntheticEvaluator:
        return self

    def error_model(self, probe: Any, stored: Any) -> tuple[SyntheticModel, dict[str, Any]]:
        return SyntheticModel(self), {}


class SyntheticModel:
    """The exact error model of a :class:`SyntheticEvaluator`: a run's cost is the sum of its steps' losses."""

    def __init__(self, evaluator: SyntheticEvaluator) -> None:
        self.evaluator = evaluator
        self.steps = evaluator.steps

    def step_terms(self, step: int, choice: CachedRange, last_full: int, previous_full: int | None) -> np.ndarray:
        return np.array([self.evaluator.step_loss(step, choice, last_full)])

    def run_costs(self, terms: np.ndarray) -> np.ndarray:
        return terms.sum(axis=(-2, -1))

    def quality(self, plan: Sequence[Step]) -> float:
        return self.evaluator.base - self.evaluator.loss(plan)

    def calibrated(self, observed: Any) -> SyntheticModel:
        return self

    def uncertainty(self, plan: Sequence[Step], than: Sequence[Step] | None = None) -> float:
        return 0.0

    def alternatives(self) -> list[SyntheticModel]:
        return [self]
