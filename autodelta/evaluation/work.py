"""Work counted in item-generations: one calibration item generated once, whatever the plan or prefix reuse.

The search's cost on a real model is its generations, so every phase charges one meter:
the full-compute reference, the error model's probes, screening, the trials and the
report's comparisons. Every charge is booked in a :class:`Ledger` at once; a search keeps
its ledger in the study's storage, so every process of it (``--jobs`` workers, other
machines, a later resume) books into one total. A bound (``--max-generations``) is checked
against that total *before* the work starts, so it is never exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from autodelta.errors import AutodeltaError

PHASES = ("reference", "model", "screening", "trials", "report")
"""The phases a search reports its generations by, in the order they happen."""

CACHED = "cached"
"""Ledger entry for reference items read from the cache: counted apart, 0 generations spent."""


class WorkExhausted(AutodeltaError):
    """The next piece of work would pass the generation bound."""


class Ledger(Protocol):
    """Where charged work is booked, and the total every process sharing it has booked."""

    def book(self, phase: str, items: int) -> None:
        """Add ``items`` (negative: give a reservation back) to ``phase``."""

    def spent(self) -> int:
        """Item-generations booked by everyone sharing this ledger (:data:`CACHED` excluded)."""


@dataclass
class MemoryLedger:
    """A ledger only this process sees (a search without a study, tests)."""

    phases: dict[str, int] = field(default_factory=dict)

    def book(self, phase: str, items: int) -> None:
        self.phases[phase] = self.phases.get(phase, 0) + items

    def spent(self) -> int:
        return sum(v for k, v in self.phases.items() if k != CACHED)


@dataclass
class WorkMeter:
    """Item-generations spent in this process, by phase, booked in ``ledger`` against an optional ``bound``.

    ``bound`` is the user's ``--max-generations``: it caps the ledger's total (every process,
    every run of the study), so messages name that number and the ledger's total.
    """

    bound: int | None = None
    spent: dict[str, int] = field(default_factory=dict)
    phase: str = "trials"
    on_charge: Callable[[int], None] | None = None  # e.g. a progress bar's update
    ledger: Ledger = field(default_factory=MemoryLedger)

    @property
    def total(self) -> int:
        """What this process spent (the ledger's total may hold other processes' and runs' work too)."""
        return sum(v for k, v in self.spent.items() if k != CACHED)

    def room(self) -> int | None:
        """Item-generations the bound still allows (``None``: no bound)."""
        return None if self.bound is None else max(0, self.bound - self.ledger.spent())

    def allows(self, items: int) -> bool:
        room = self.room()
        return room is None or items <= room

    def charge(self, items: int) -> None:
        """Count ``items`` generations in the current phase, or refuse them if the bound would be passed.

        The work is booked first and checked after, so two processes charging at once can
        never pass the bound together: at worst both step back.
        """
        if items <= 0:
            return
        self.ledger.book(self.phase, items)
        if self.bound is not None:
            total = self.ledger.spent()
            if total > self.bound:
                self.ledger.book(self.phase, -items)
                raise WorkExhausted(f"{items} more item-generations would pass --max-generations {self.bound} "
                                    f"({total - items} spent)")
        self.spent[self.phase] = self.spent.get(self.phase, 0) + items
        if self.on_charge is not None:
            self.on_charge(items)

    def refund(self, items: int) -> None:
        """Give back ``items`` of a charge whose work was not done after all (a failed generation)."""
        if items > 0:
            self.ledger.book(self.phase, -items)
            self.spent[self.phase] = self.spent.get(self.phase, 0) - items

    def cached(self, items: int) -> None:
        """Record ``items`` reference items read from the cache (0 generations spent)."""
        self.ledger.book(CACHED, items)
        self.spent[CACHED] = self.spent.get(CACHED, 0) + items

    def rebook(self, ledger: Ledger) -> None:
        """Move to ``ledger`` (a study's). What this meter charged before any study held it (an evaluator's
        reference, made before the study opened) is booked there; an earlier study's work stays in that study."""
        if isinstance(self.ledger, MemoryLedger):
            for phase, items in self.ledger.phases.items():
                if items:
                    ledger.book(phase, items)
        self.ledger = ledger

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """Charge what runs inside the block to ``phase``."""
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    @contextmanager
    def shown(self, desc: str, total: int | None = None, enabled: bool = True) -> Iterator[None]:
        """A progress bar (on a terminal) of what is charged inside the block, for the phases that have no bar of
        their own (the reference, the report): nothing that takes minutes runs silently."""
        from tqdm.auto import tqdm

        outer = self.on_charge
        with tqdm(total=total, desc=desc, unit="gen", leave=False, disable=None if enabled else True) as bar:
            def update(items: int) -> None:
                bar.update(items)
                if outer is not None:
                    outer(items)

            self.on_charge = update
            try:
                yield
            finally:
                self.on_charge = outer
