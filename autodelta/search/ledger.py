"""The study's ledger of item-generations: every process of a search books its work in the study's storage.

Each process writes only its own study attribute (``ledger:<run>:<id>``, phase → items), so two
workers never overwrite each other's counts, and the total is the sum over the keys. A
charge is booked before its work starts and taken back if the total then passes the bound
(:meth:`autodelta.evaluation.work.WorkMeter.charge`), so the bound holds across processes and
machines. ``<run>`` groups what one command spent, so the report can tell "this run" from
"the study so far".
"""

from __future__ import annotations

import uuid

import optuna

from autodelta.evaluation.work import CACHED, PHASES, WorkMeter

PREFIX = "ledger:"

_LEGACY = "generations"
"""Studies written before the per-process ledger: a study attribute for the reference and probes, and a
``generations_<phase>`` attribute on each trial."""


class StudyLedger:
    """One process's bookings in a study (see the module docstring)."""

    def __init__(self, study: optuna.Study, run: str) -> None:
        self.study, self.run = study, run
        self.key = f"{PREFIX}{run}:{uuid.uuid4().hex[:8]}"
        self.phases: dict[str, int] = {}

    def book(self, phase: str, items: int) -> None:
        self.phases[phase] = self.phases.get(phase, 0) + items
        self.study.set_user_attr(self.key, dict(self.phases))

    def spent(self) -> int:
        return sum(generations_by_phase(self.study).values())


def bind_meter(meter: WorkMeter, study: optuna.Study, run: str, bound: int | None) -> WorkMeter:
    """``meter`` booking into ``study`` (what it spent before is booked there once) under ``bound``."""
    if not isinstance(meter.ledger, StudyLedger) or meter.ledger.study._study_id != study._study_id \
            or meter.ledger.run != run:
        meter.rebook(StudyLedger(study, run))
    meter.bound = bound
    return meter


def _entries(study: optuna.Study, run: str | None = None) -> list[dict[str, int]]:
    attrs = study.user_attrs
    prefix = PREFIX + (f"{run}:" if run is not None else "")
    return [{k: int(v) for k, v in value.items()} for key, value in attrs.items()
            if key.startswith(prefix) and isinstance(value, dict)]


def generations_by_phase(study: optuna.Study, run: str | None = None) -> dict[str, int]:
    """Item-generations by phase: the whole study's, or one run's (``run``). Cached items are not generations."""
    out = dict.fromkeys(PHASES, 0)
    for entry in _entries(study, run):
        for phase, items in entry.items():
            if phase != CACHED:
                out[phase] = out.get(phase, 0) + items
    if run is None:  # a study from before the per-process ledger
        for phase, items in study.user_attrs.get(_LEGACY, {}).items():
            out[phase] = out.get(phase, 0) + int(items)
        for t in study.get_trials(deepcopy=False):
            for phase in ("screening", "trials"):
                out[phase] += int(t.user_attrs.get(f"{_LEGACY}_{phase}", 0))
    return out


def cached_items(study: optuna.Study, run: str | None = None) -> int:
    """Reference items read from the cache instead of generated (the whole study's, or one run's)."""
    return sum(entry.get(CACHED, 0) for entry in _entries(study, run))
