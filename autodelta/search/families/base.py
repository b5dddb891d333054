"""The interface of a search family: named parameters → an explicit plan, plus known good seeds.

Shaped like Optuna's samplers (``optuna/samplers/_base.py``): a small base class, one
implementation per module, listed once in :mod:`autodelta.search.families`. A space file
names a family and gives each of its parameters a range (:mod:`autodelta.search.spaces`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Step, paper_boundary, validate_plan


@dataclass(frozen=True)
class SeedContext:
    """What a family needs to express known schedules as its own parameters."""

    rule: DeltaDiTParams  # the paper's rule at the search's budget
    steps: int
    num_blocks: int
    fits: Callable[[tuple[Step, ...]], bool] | None = None  # plan → within budget
    ranges: tuple[CachedRange, ...] = ()  # the space's named Δ ranges (per-step families)

    @property
    def boundary(self) -> int:
        """The paper's preset boundary b for this T."""
        return paper_boundary(self.steps)[0]


def staged_plan(values: Mapping[str, Any], steps: int, num_blocks: int, full: Callable[[int], bool],
                where: str) -> tuple[Step, ...]:
    """Step i full where ``full(i)``, else Δ with ``[s_early, +n_early)`` before ``b`` and ``[s_late, +n_late)`` after."""
    plan: list[Step] = []
    for i in range(steps):
        if full(i):
            plan.append(None)
        elif i < int(values["b"]):
            plan.append(CachedRange(int(values["s_early"]), int(values["n_early"])))
        else:
            plan.append(CachedRange(int(values["s_late"]), int(values["n_late"])))
    return validate_plan(plan, num_blocks, where=where)


PLAN_SAMPLERS = ("model", "local")
"""The samplers that propose whole plans of a per-step family (:mod:`autodelta.search.samplers`)."""


class SearchFamily(ABC):
    """A parametric family of plans."""

    name: ClassVar[str]
    """The name space files use (``family: NAME``)."""
    params: ClassVar[tuple[str, ...]]
    """Its parameters, in the order a space file must give ranges for them."""

    def expand(self, param: str, steps: int) -> list[str]:
        """The parameters a trial draws for ``param`` at T = ``steps``: itself, for a parametric family."""
        return [param]

    def uses_ranges(self) -> bool:
        """Whether its plans index the space's named Δ ranges (a space file must then give ``ranges:``)."""
        return False

    def default_sampler(self) -> str:
        """The sampler ``--sampler auto`` picks: TPE over a handful of parameters."""
        return "tpe"

    def accepts(self, sampler: str) -> bool:
        """Whether ``sampler`` can search it: the plan samplers propose whole per-step plans, which it has not."""
        return sampler not in PLAN_SAMPLERS

    def fastest_plans(self, steps: int, ranges: Sequence[CachedRange]) -> list[tuple[Step, ...]]:
        """Plans that bound its fastest speed-up from below without sampling (none for a parametric family)."""
        return []

    @abstractmethod
    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        """The explicit plan of parameter ``values`` for T = ``steps`` and N_b = ``num_blocks``.

        ``ranges`` are the space's named Δ ranges; only per-step families read them.
        """

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        """Known schedules (the paper's rule, baselines) as ``(label, values)``; the search tries them first.

        The space keeps those inside its ranges, so a search never returns worse than any of them.
        """
        return []
