"""Local moves on explicit plans: the neighbourhood the structure-aware sampler screens.

Every move keeps step 0 full (no Δ exists before it) and only plans that meet the
budget are neighbours, so the search never spends a trial on a plan it could not choose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autodelta.plan.schedule import CachedRange, Step, canonical

Plan = tuple[Step, ...]


def neighbours(plan: Sequence[Step], ranges: Sequence[CachedRange], fits: Callable[[Plan], bool],
               max_shift: int = 3) -> list[Plan]:
    """Distinct plans one move away from ``plan`` that meet the budget (``fits``), in a fixed order.

    Moves: *shift* a full step up to ``max_shift`` steps (it trades places with a Δ step,
    which keeps that step's range: swapping neighbours is a shift by one); *re-range* a Δ
    step to another of the space's choices (another range, or replay ↔ forecast); *fill*
    a Δ step (make it full, spending spare budget); *trade* two Δ steps for one: both
    become full and a full step elsewhere becomes a whole-range Δ step, when that still
    meets the budget. Forecasts left with one full step before them become replays.
    """
    base = list(plan)
    steps = len(base)
    out: list[Plan] = []

    def add(candidate: list[Step]) -> None:
        key = canonical(candidate)
        if key != tuple(base) and key[0] is None and key not in seen and fits(key):
            seen.add(key)
            out.append(key)

    seen: set[Plan] = set()
    for i in range(1, steps):  # shift
        if base[i] is not None:
            continue
        for j in range(max(1, i - max_shift), min(steps, i + max_shift + 1)):
            if base[j] is not None:
                moved = list(base)
                moved[i], moved[j] = base[j], None
                add(moved)
    for i in range(1, steps):  # re-range, fill
        if base[i] is None:
            continue
        for rng in ranges:
            if rng != base[i]:
                changed = list(base)
                changed[i] = rng
                add(changed)
        filled = list(base)
        filled[i] = None
        add(filled)
    if ranges:  # trade: two neighbouring Δ steps full, one full step elsewhere whole-range Δ
        widest = max(ranges, key=lambda r: (r.length, -r.order))
        deltas = [i for i in range(1, steps) if base[i] is not None]
        for a, b in zip(deltas, deltas[1:]):
            for k in range(1, steps):
                if base[k] is None:
                    traded = list(base)
                    traded[a] = traded[b] = None
                    traded[k] = widest
                    add(traded)
    return out
