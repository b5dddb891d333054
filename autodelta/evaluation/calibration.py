"""The items quality is measured on: (condition, seed) pairs, calibration or held-out.

A condition is a class label (DiT) or a prompt-embedding index (PixArt); the seed fixes
the item's initial noise, so every method is scored on the same starting points.
"""

from __future__ import annotations

from dataclasses import dataclass

from autodelta.errors import AutodeltaError
from autodelta.models.profile import Profile


@dataclass(frozen=True)
class CalibrationSet:
    """Items ``(condition, seed)``; the seed fixes each item's initial noise."""

    labels: tuple[int, ...]
    seeds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_profile(cls, profile: Profile, size: int | None = None, heldout: bool = False) -> CalibrationSet:
        """The first ``size`` items of the profile's conditions × (calibration or held-out) seeds."""
        seeds = list(profile.calibration.heldout_seeds if heldout else profile.calibration.seeds)
        conditions = list(profile.conditions) or [0]
        capacity = len(conditions) * len(seeds)
        size = capacity if size is None else size
        if not 1 <= size <= capacity:
            raise AutodeltaError(
                f"calibration size {size} is out of range for {profile.name}: use 1..{capacity} "
                f"({len(conditions)} conditions x {len(seeds)} seeds)"
            )
        items = [(conditions[j % len(conditions)], seeds[j // len(conditions)]) for j in range(size)]
        return cls(labels=tuple(int(c) for c, _ in items), seeds=tuple(int(s) for _, s in items))


def item_set(profile: Profile, calib: int | None, heldout: bool) -> CalibrationSet:
    """Calibration or held-out items; ``calib`` also bounds the held-out set (slow models like DiT-XL on CPU)."""
    size = calib
    if heldout and size is not None:
        size = min(size, len(CalibrationSet.from_profile(profile, None, heldout=True)))
    return CalibrationSet.from_profile(profile, size, heldout=heldout)
