"""autodelta: automatic Δ-DiT cache schedules for Diffusion Transformers.

The public names are imported on first use (PEP 562), so ``import autodelta`` and the
CLI start without loading torch and diffusers until a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autodelta.version import __version__

_EXPORTS = {
    "AutodeltaError": "autodelta.errors",
    "Budget": "autodelta.plan.cost",
    "CachedRange": "autodelta.plan.schedule",
    "CostModel": "autodelta.plan.cost",
    "CostProfile": "autodelta.models.profiler",
    "DeltaCacheHandle": "autodelta.runtime.apply",
    "DeltaDiTParams": "autodelta.plan.schedule",
    "RuntimeStats": "autodelta.runtime.state",
    "Schedule": "autodelta.plan.schedule",
    "apply": "autodelta.runtime.apply",
    "load_profile": "autodelta.models.loading",
    "load_schedule": "autodelta.plan.schedule",
    "paper_rule": "autodelta.plan.cost",
    "parse_budget": "autodelta.plan.cost",
    "profile": "autodelta.models.profiler",
}

__all__ = [
    "__version__", "AutodeltaError", "Budget", "CachedRange", "CostModel", "CostProfile", "DeltaCacheHandle", "DeltaDiTParams",
    "RuntimeStats", "Schedule", "apply", "load_profile", "load_schedule", "paper_rule", "parse_budget", "profile",
]

if TYPE_CHECKING:
    from autodelta.errors import AutodeltaError
    from autodelta.models.loading import load_profile
    from autodelta.models.profiler import CostProfile, profile
    from autodelta.plan.cost import Budget, CostModel, paper_rule, parse_budget
    from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Schedule, load_schedule
    from autodelta.runtime.apply import DeltaCacheHandle, apply
    from autodelta.runtime.state import RuntimeStats


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autodelta' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
