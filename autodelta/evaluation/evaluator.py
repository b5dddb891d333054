"""The interfaces the search depends on: an evaluator (a plan in, its quality and MACs out) and the
error model the DP plans from.

Kept in its own light module (no torch) so the search, its workers and tests can use
a real evaluator (:mod:`autodelta.evaluation.diffusion`) or a synthetic one
(:mod:`autodelta.evaluation.synthetic`) interchangeably, as Optuna's samplers share one base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from autodelta.evaluation.work import WorkMeter
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import CachedRange, Step

if TYPE_CHECKING:
    import numpy as np


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


class SegmentModel(Protocol):
    """What the DP needs of an error model (:class:`~autodelta.evaluation.error_model.ErrorModel`, or a synthetic one)."""

    steps: int

    def step_terms(self, step: int, choice: CachedRange, last_full: int, previous_full: int | None) -> np.ndarray:
        """Non-negative per-item terms of one Δ step (the model combines a run's terms)."""

    def run_costs(self, terms: np.ndarray) -> np.ndarray:
        """Predicted costs (lower is better) of runs of Δ steps from their terms, ``[runs, steps, items]`` → ``[runs]``."""

    def quality(self, plan: Sequence[Step]) -> float:
        """The plan's predicted quality (higher is better), as the search's metric would read it."""

    def calibrated(self, observed: Sequence[tuple[Sequence[Step], Sequence[float], Sequence[int] | None]]
                   ) -> SegmentModel:
        """The model refit to real evaluations: ``(plan, per-item image MSE, item positions or None for all)``."""

    def uncertainty(self, plan: Sequence[Step], than: Sequence[Step] | None = None) -> float:
        """One standard deviation of the predicted quality (of its difference to ``than``), where the
        model knows it (else 0)."""

    def alternatives(self) -> Sequence[SegmentModel]:
        """Other readings of the same measurements, whose DP plans are worth a trial before data decides."""


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

    def error_model(self, probe: Evaluator | None, stored: Any) -> tuple[SegmentModel, Any]:
        """This evaluator's error model and its JSON-ready calibration: ``stored`` (from a study) when
        given, else measured by probing on ``probe``, else (``None``: no room to probe) a prior."""


class EvaluatorBuilder(Protocol):
    """Builds an evaluator in any process (``--jobs`` workers pickle it), charging its work to ``meter``."""

    def __call__(self, meter: WorkMeter | None = None) -> Evaluator: ...
