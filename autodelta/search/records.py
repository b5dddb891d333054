"""Completed trials as the outputs read them: records, the Pareto front, the best within a budget."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autodelta.plan.cost import Budget
from autodelta.plan.schedule import Step, decode_plan

QUALITY_CAP = 100.0  # PSNR of identical images is +inf; Optuna objectives must be finite


@dataclass
class TrialRecord:
    """One completed trial as the report needs it."""

    number: int
    params: dict[str, Any]
    plan: tuple[Step, ...]
    quality: float
    macs: float
    speedup: float
    metrics: dict[str, float]
    feasible: bool
    label: str | None = None
    screen: float | None = None  # its score on the screening items, when the sampler screened it


def finite_or_none(value: float) -> float | None:
    if math.isnan(value):
        return None
    return QUALITY_CAP if value == math.inf else (-QUALITY_CAP if value == -math.inf else value)


def records(study: optuna.Study, budget: Budget, metric: str) -> list[TrialRecord]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "plan" not in t.user_attrs:
            continue
        speedup = float(t.user_attrs["speedup"])
        out.append(TrialRecord(
            number=t.number, params=dict(t.params), plan=decode_plan(t.user_attrs["plan"], f"trial {t.number}"),
            quality=float(t.values[0]), macs=float(t.values[1]), speedup=speedup,
            metrics=dict(t.user_attrs["metrics"]), feasible=budget.allows(speedup),
            label=t.user_attrs.get("seed_label"), screen=t.user_attrs.get("screen"),
        ))
    return out


def pareto_front(items: Sequence[TrialRecord], higher_is_better: bool = True) -> list[TrialRecord]:
    """Non-dominated trials (quality vs MACs), one per distinct plan, sorted by MACs."""
    unique: dict[tuple[Step, ...], TrialRecord] = {}
    for r in items:
        unique.setdefault(r.plan, r)
    sign = 1.0 if higher_is_better else -1.0

    def dominates(a: TrialRecord, b: TrialRecord) -> bool:
        qa, qb = sign * a.quality, sign * b.quality
        return qa >= qb and a.macs <= b.macs and (qa > qb or a.macs < b.macs)

    front = [r for r in unique.values() if not any(dominates(o, r) for o in unique.values() if o is not r)]
    return sorted(front, key=lambda r: r.macs)


def best_within_budget(items: Sequence[TrialRecord], higher_is_better: bool = True) -> TrialRecord | None:
    feasible = [r for r in items if r.feasible]
    if not feasible:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(feasible, key=lambda r: (sign * r.quality, -r.macs, -r.number))


def rank_correlation(pairs: Sequence[tuple[float, float]]) -> tuple[float, int] | None:
    """Spearman rank correlation of the pairs' two values (finite pairs only), and how many; ``None`` below 3."""
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic), len(pairs)
