"""The interface the search depends on: a plan in, its quality and MACs out.

Kept in its own light module (no torch) so the search, its workers and tests can use
a real evaluator (:mod:`autodelta.evaluation`) or a synthetic one
(:mod:`autodelta.synthetic`) interchangeably, as Optuna's samplers share one base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autodelta.cost import CostModel
from autodelta.schedule import Step


@dataclass
class Evaluation:
    """Quality and cost of one plan."""

    metrics: dict[str, float]
    macs: float
    speedup: float
    per_item: dict[str, list[float]] = field(default_factory=dict)


class Evaluator(Protocol):
    """What the search needs: a cost model and plan → :class:`Evaluation`."""

    cost: CostModel
    steps: int
    num_blocks: int

    def evaluate(self, plan: Sequence[Step]) -> Evaluation: ...
