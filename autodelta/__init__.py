"""autodelta: automatic Δ-DiT cache schedules for Diffusion Transformers."""

from __future__ import annotations

__version__ = "0.1.0"

from autodelta.cost import Budget, CostModel, paper_rule, parse_budget
from autodelta.errors import AutodeltaError
from autodelta.profiler import CostProfile, profile
from autodelta.runtime import DeltaCacheHandle, RuntimeStats, apply
from autodelta.schedule import CachedRange, DeltaDiTParams, Schedule, load_schedule

__all__ = [
    "AutodeltaError",
    "Budget",
    "CachedRange",
    "CostModel",
    "CostProfile",
    "DeltaCacheHandle",
    "DeltaDiTParams",
    "RuntimeStats",
    "Schedule",
    "apply",
    "load_schedule",
    "paper_rule",
    "parse_budget",
    "profile",
]
