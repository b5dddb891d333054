"""A closed-form evaluator: plan → "quality" in microseconds, for tests of the search.

It follows the :class:`~autodelta.evaluation.Evaluator` protocol, so the search runs on
it exactly as on real generations, without a model.
"""

from __future__ import annotations

from collections.abc import Sequence

from autodelta.cost import CostModel
from autodelta.evaluator import Evaluation
from autodelta.schedule import Step


class SyntheticEvaluator:
    """Closed-form, deterministic quality of a plan, for tests that must run in milliseconds.

    Each Δ step loses quality in proportion to the staleness of its Δ (steps since the
    last full step) times the sensitivity of the blocks it skips, which depends on the
    stage: early steps tolerate skipping rear blocks, late steps front blocks. Quality is
    ``base − Σ loss`` in "dB", as a PSNR would read.
    """

    def __init__(self, cost: CostModel, steps: int, base: float = 40.0, metric: str = "psnr") -> None:
        self.cost, self.steps, self.num_blocks = cost, steps, cost.num_blocks
        self.base, self.metric = base, metric
        self.evaluations = 0

    def block_sensitivity(self, step: int, block: int) -> float:
        progress = step / max(self.steps - 1, 1)  # 0 = noisiest
        position = block / max(self.num_blocks - 1, 1)  # 0 = front
        return 0.02 + 0.1 * ((1 - progress) * (1 - position) + progress * position)

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        self.evaluations += 1
        loss, since_full = 0.0, 0
        for i, step in enumerate(plan):
            if step is None:
                since_full = 0
                continue
            since_full += 1
            loss += since_full * sum(self.block_sensitivity(i, k) for k in range(step.start, step.stop))
        return Evaluation(metrics={self.metric: self.base - loss}, macs=self.cost.plan_macs(plan),
                          speedup=self.cost.speedup(plan))
