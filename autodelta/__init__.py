"""autodelta: automatic Δ-DiT cache schedules for Diffusion Transformers.

The public names are imported on first use (PEP 562), so ``import autodelta`` and the
CLI start without loading torch and diffusers until a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AutodeltaError": "autodelta.errors",
    "Budget": "autodelta.cost",
    "CachedRange": "autodelta.schedule",
    "CostModel": "autodelta.cost",
    "CostProfile": "autodelta.profiler",
    "DeltaCacheHandle": "autodelta.runtime",
    "DeltaDiTParams": "autodelta.schedule",
    "RuntimeStats": "autodelta.runtime",
    "Schedule": "autodelta.schedule",
    "apply": "autodelta.runtime",
    "load_schedule": "autodelta.schedule",
    "paper_rule": "autodelta.cost",
    "parse_budget": "autodelta.cost",
    "profile": "autodelta.profiler",
}

__all__ = [
    "AutodeltaError", "Budget", "CachedRange", "CostModel", "CostProfile", "DeltaCacheHandle", "DeltaDiTParams",
    "RuntimeStats", "Schedule", "apply", "load_schedule", "paper_rule", "parse_budget", "profile",
]

if TYPE_CHECKING:
    from autodelta.cost import Budget, CostModel, paper_rule, parse_budget
    from autodelta.errors import AutodeltaError
    from autodelta.profiler import CostProfile, profile
    from autodelta.runtime import DeltaCacheHandle, RuntimeStats, apply
    from autodelta.schedule import CachedRange, DeltaDiTParams, Schedule, load_schedule


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autodelta' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
