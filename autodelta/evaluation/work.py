"""Work counted in item-generations: one calibration item generated once, whatever the plan or prefix reuse.

The search's cost on a real model is its generations, so every phase charges one meter:
the full-compute reference, the error model's probes, screening, and the trials. A bound
(``--max-generations``) is checked *before* work starts, so it is never exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from autodelta.errors import AutodeltaError

PHASES = ("reference", "model", "screening", "trials")
"""The phases a search reports its generations by, in the order they happen."""


class WorkExhausted(AutodeltaError):
    """The next piece of work would exceed the generation bound."""


@dataclass
class WorkMeter:
    """Item-generations spent in this process, by phase, against an optional ``limit``."""

    limit: int | None = None
    spent: dict[str, int] = field(default_factory=dict)
    phase: str = "trials"
    on_charge: Callable[[int], None] | None = None  # e.g. a progress bar's update
    booked: dict[str, int] = field(default_factory=dict)  # what a study's ledger already holds

    def unbooked(self, *phases: str) -> dict[str, int]:
        """What ``phases`` spent since the last call, now marked as booked (a study's ledger takes it)."""
        out = {}
        for phase in phases:
            new = self.spent.get(phase, 0) - self.booked.get(phase, 0)
            if new:
                out[phase] = new
                self.booked[phase] = self.spent.get(phase, 0)
        return out

    @property
    def total(self) -> int:
        return sum(self.spent.values())

    def allows(self, items: int) -> bool:
        return self.limit is None or self.total + items <= self.limit

    def charge(self, items: int) -> None:
        """Count ``items`` generations in the current phase, or refuse them if the bound would be passed."""
        if not self.allows(items):
            raise WorkExhausted(f"{items} more item-generations would pass --max-generations {self.limit} "
                                f"({self.total} spent)")
        self.spent[self.phase] = self.spent.get(self.phase, 0) + items
        if self.on_charge is not None:
            self.on_charge(items)

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """Charge what runs inside the block to ``phase``."""
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous
