"""The two kinds of baseline, each a small class: a plan from the cost model, or a method that decides at run time.

Shaped like diffusers' cache hooks: one class per method, in one module each, with the
knob it is set to the budget by; :mod:`autodelta.baselines.registry` lists them once. The
harness asks nothing but these classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from autodelta.baselines.hooks import Installer
from autodelta.errors import BudgetError
from autodelta.plan.cost import Budget, CostModel
from autodelta.plan.schedule import Step


class Baseline(ABC):
    """A caching method autodelta is measured against, set to a MACs budget."""

    name: ClassVar[str]
    description: ClassVar[str]


class PlanBaseline(Baseline):
    """A fixed plan: from the cost model alone, or (``calibrated``) chosen on the calibration items."""

    calibrated: ClassVar[bool] = False

    @abstractmethod
    def plan(self, cost: CostModel, steps: int, budget: Budget,
             calibration: Callable[[], Any] | None = None) -> Sequence[Step]:
        """The plan at ``budget``; a calibrated baseline chooses it on ``calibration()``'s items."""


class RuntimeMethod(Baseline):
    """A method that decides while generating, set to the budget by its knob (see :mod:`autodelta.baselines.tuning`).

    A continuous knob (a threshold) is bisected in log space between ``low`` and ``high``,
    skipping more as it grows; a discrete one lists its :meth:`settings` and names the one
    that skips most (:meth:`extreme`), which is tried first.
    """

    knob: ClassVar[str]
    low: ClassVar[float] = 1e-3
    high: ClassVar[float] = 10.0
    discrete: ClassVar[bool] = False

    @abstractmethod
    def installer(self, value: Any, extras: Any = None) -> Installer:
        """How to install the method with knob ``value`` (and what :meth:`calibrate` measured)."""

    def settings(self, steps: int) -> list[Any]:
        """A discrete knob's candidates for T = ``steps``."""
        raise TypeError(f"{self.name} has a continuous knob")

    def extreme(self, steps: int) -> Any:
        """A discrete knob's setting that skips most."""
        raise TypeError(f"{self.name} has a continuous knob")

    def calibrate(self, runner: Any, steps: int) -> Any:
        """What the method measures on the calibration items before its knob is tuned (MagCache's ratios)."""
        return None


def unreachable(name: str, budget: Budget, best: float, how: str) -> BudgetError:
    """The one message for a budget a baseline cannot reach, with its maximum."""
    return BudgetError(f"baseline {name} cannot reach budget {budget}: its maximum here is {best:.3f}x ({how}); "
                       "choose a smaller budget")
