"""The interface the search depends on: a plan in, its quality and MACs out.

Kept in its own light module (no torch) so the search, its workers and tests can use
a real evaluator (:mod:`autodelta.evaluation`) or a synthetic one
(:mod:`autodelta.synthetic`) interchangeably, as Optuna's samplers share one base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from autodelta.cost import CostModel
from autodelta.schedule import Step
from autodelta.work import WorkMeter

if TYPE_CHECKING:
    from autodelta.plan_dp import SegmentModel


@dataclass
class Evaluation:
    """Quality and cost of one plan."""

    metrics: dict[str, float]
    macs: float
    speedup: float
    per_item: dict[str, list[float]] = field(default_factory=dict)

    def item_mse(self) -> list[float]:
        """Each item's image MSE to full compute (from ``mse``, else ``psnr``), what the error model predicts."""
        if "mse" in self.per_item:
            return [float(v) for v in self.per_item["mse"]]
        if "psnr" in self.per_item:
            return [10 ** (-float(v) / 10) for v in self.per_item["psnr"]]  # inf dB (identical) gives 0
        raise ValueError("this evaluation has no per-item mse or psnr")


class Evaluator(Protocol):
    """What the search needs: a cost model, plan → :class:`Evaluation`, a cheaper subset, and an error model."""

    cost: CostModel
    steps: int
    num_blocks: int
    meter: WorkMeter
    """Charged one item-generation per item of every evaluation."""
    probe_count: int
    """How many probe plans :meth:`error_model` evaluates when it has nothing stored."""

    @property
    def items(self) -> int:
        """Calibration items one evaluation generates."""

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        """Quality and cost of ``plan`` on the calibration items."""

    def subset(self, count: int) -> Evaluator:
        """An evaluator on ``count`` of these items (the cheap fidelity), sharing the meter."""

    def error_model(self, probe: Evaluator, stored: Any) -> tuple[SegmentModel, Any]:
        """This evaluator's error model and its JSON-ready calibration: ``stored`` (from a study) when
        given, else measured by probing on ``probe``."""
