"""Cost model (MACs of a plan), speed budgets and the paper's rule for N and N_c.

MACs follow docs/design.md §2: a call costs ``M_pre + Σ_{k run} M_b[k] + M_post`` for one
sample; a generation sums its steps and doubles when classifier-free guidance doubles
the batch. Speed-up is MACs(all full) / MACs(plan).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from autodelta.errors import BudgetError, ModelError
from autodelta.plan.schedule import DeltaDiTParams, Step, paper_params


@dataclass(frozen=True)
class CostModel:
    """Per-sample MACs of one transformer call, split into embedding, blocks and head."""

    blocks: tuple[float, ...]
    pre: float = 0.0
    post: float = 0.0
    cfg_factor: int = 1

    def __post_init__(self) -> None:
        # a negative or non-finite cost makes speed-ups no plan can give (skipping blocks that "cost" less than
        # nothing); every figure built on this model is only true when each part is a real, non-negative count
        parts = {"pre": self.pre, "post": self.post, **{f"block {k}": b for k, b in enumerate(self.blocks)}}
        bad = {name: value for name, value in parts.items() if not (math.isfinite(value) and value >= 0)}
        if bad or not self.blocks or sum(self.blocks) <= 0:
            what = ", ".join(f"{name} is {value!r}" for name, value in list(bad.items())[:3]) or "the blocks cost 0"
            raise ModelError(f"MACs must be finite and non-negative with blocks that cost something: {what}; "
                            "count them again with autodelta profile --write")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def call_full(self) -> float:
        return self.pre + sum(self.blocks) + self.post

    def call(self, step: Step) -> float:
        """MACs of one call (one sample) executing ``step``."""
        if step is None:
            return self.call_full
        skipped = sum(self.blocks[step.start : step.stop])
        return self.call_full - skipped

    def plan_macs(self, plan: Sequence[Step]) -> float:
        return self.cfg_factor * sum(self.call(step) for step in plan)

    def full_macs(self, steps: int) -> float:
        return self.cfg_factor * steps * self.call_full

    def speedup(self, plan: Sequence[Step]) -> float:
        return self.full_macs(len(plan)) / self.plan_macs(plan)

    def summary(self, plan: Sequence[Step]) -> dict[str, Any]:
        """The ``cost`` section of a schedule file."""
        return {
            "macs_full": float(self.full_macs(len(plan))),
            "macs_schedule": float(self.plan_macs(plan)),
            "speedup": round(self.speedup(plan), 4),
            "per_sample": True,
            "cfg_factor": self.cfg_factor,
        }

    # --- synthetic cost models, for tests and for reasoning without a profile -------------
    @classmethod
    def uniform(cls, num_blocks: int = 28, block: float = 1.0, pre: float = 0.0, post: float = 0.0) -> CostModel:
        return cls(blocks=(float(block),) * num_blocks, pre=pre, post=post)

    @classmethod
    def ramp(cls, num_blocks: int = 28, low: float = 1.0, high: float = 2.0) -> CostModel:
        step = (high - low) / max(num_blocks - 1, 1)
        return cls(blocks=tuple(low + k * step for k in range(num_blocks)))

    @classmethod
    def seeded(cls, num_blocks: int = 28, seed: int = 0, pre: float = 0.05, post: float = 0.05) -> CostModel:
        rng = random.Random(seed)
        return cls(blocks=tuple(rng.uniform(0.5, 1.5) for _ in range(num_blocks)), pre=pre, post=post)


@dataclass(frozen=True)
class Budget:
    """A speed budget: the plan's MACs speed-up must be at least ``speedup``."""

    speedup: float
    text: str

    # The tolerances of "meets the budget", defined once. A plan's speed-up under the cost model is
    # exact (only float rounding is forgiven); a speed-up *measured* by counting what ran (run-time
    # methods decide per item) may fall short by MEASURED_SLACK; NEAR is how close to the budget a
    # tuned knob or a discrete plan counts as "equal MACs".
    EXACT: ClassVar[float] = 1e-9
    MEASURED_SLACK: ClassVar[float] = 0.005
    NEAR: ClassVar[float] = 0.03

    def allows(self, speedup: float) -> bool:
        """Whether an exact (cost-model) speed-up meets this budget."""
        return speedup >= self.speedup - self.EXACT

    def reached(self, speedup: float) -> bool:
        """Whether a measured speed-up meets this budget, within :attr:`MEASURED_SLACK`."""
        return speedup >= self.speedup * (1 - self.MEASURED_SLACK)

    def near(self, speedup: float, both_sides: bool = False) -> bool:
        """Whether ``speedup`` is within :attr:`NEAR` of the budget: above it only, or (``both_sides``) either way."""
        if both_sides:
            return abs(self.speedup / speedup - 1) <= self.NEAR
        return speedup <= self.speedup * (1 + self.NEAR)

    def met_by(self, cost: CostModel, plan: Sequence[Step]) -> bool:
        """Whether ``plan``'s MACs speed-up under ``cost`` meets this budget."""
        return self.allows(cost.speedup(plan))

    def __str__(self) -> str:
        return self.text


_BUDGET = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>x|%)\s*$", re.IGNORECASE)


def parse_budget(text: str) -> Budget:
    """``"1.6x"`` (speed-up at least 1.6) or ``"62.5%"`` (at most that share of full MACs)."""
    match = _BUDGET.match(str(text))
    if not match:
        raise BudgetError(
            f"budget {text!r} is not understood; write a speed-up like '1.6x' or a MACs share like '62.5%'"
        )
    value = float(match["value"])
    if match["unit"].lower() == "x":
        if value < 1.0:
            raise BudgetError(f"budget {text!r} is a slow-down; a speed-up budget must be at least 1.0x, e.g. '1.6x'")
        return Budget(speedup=value, text=f"{value:g}x")
    if not 0.0 < value <= 100.0:
        raise BudgetError(f"budget {text!r} is not a share of full MACs; use a value in (0%, 100%], e.g. '62.5%'")
    return Budget(speedup=100.0 / value, text=f"{value:g}%")


def parse_budgets(text: str) -> list[Budget]:
    """``"1.3x,1.6x,2x"``: several budgets, loosest first, each parsed by :func:`parse_budget`. Two spellings of
    one value (``2x``, ``2.0x``, ``50%``) are one budget, under the first spelling (:func:`repeated_budgets`)."""
    budgets: dict[float, Budget] = {}
    for budget in (parse_budget(part) for part in str(text).split(",") if part.strip()):
        budgets.setdefault(round(budget.speedup, 9), budget)
    if not budgets:
        raise BudgetError(f"budgets {text!r} name no budget; write e.g. '1.3x,1.6x,2x'")
    return [budgets[k] for k in sorted(budgets)]


def repeated_budgets(text: str) -> list[tuple[str, str]]:
    """``(dropped spelling, kept spelling)`` for each budget of ``text`` that repeats an earlier one's value."""
    kept: dict[float, str] = {}
    out = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        key = round(parse_budget(part).speedup, 9)
        if key in kept:
            out.append((part, kept[key]))
        else:
            kept[key] = parse_budget(part).text
    return out


def paper_rule(cost: CostModel, steps: int, budget: Budget) -> DeltaDiTParams:
    """The paper's rule: ``N = ⌈T·ΣM_b / M_g⌉``, then the smallest ``N_c`` that fits.

    ``M_g`` is what the budget leaves for the blocks over the whole generation. The fit
    is checked on the exact plan (rear blocks early, front blocks late, real per-block
    costs, T not necessarily a multiple of N); if no N_c fits at that N, N grows.
    """
    full_blocks = steps * sum(cost.blocks)
    overhead = steps * (cost.pre + cost.post)
    allowed_blocks = cost.full_macs(steps) / cost.cfg_factor / budget.speedup - overhead
    if allowed_blocks <= 0:
        raise BudgetError(
            f"budget {budget} leaves no MACs for the blocks (embedding and head alone exceed it); "
            f"the best reachable speed-up is {_best_reachable(cost, steps):.3f}x"
        )
    interval = max(1, math.ceil(full_blocks / allowed_blocks - 1e-9))
    for n in range(interval, steps + 1):
        for n_c in range(1, cost.num_blocks + 1):
            params = paper_params(steps, cost.num_blocks, n, n_c)
            if budget.met_by(cost, params.plan(steps, cost.num_blocks)):
                return params
    raise BudgetError(
        f"budget {budget} is out of reach for T={steps}: the best reachable speed-up is "
        f"{_best_reachable(cost, steps):.3f}x (one full step, the whole stack replayed on the rest)"
    )


def _best_reachable(cost: CostModel, steps: int) -> float:
    from autodelta.plan.schedule import CachedRange

    plan: list[Step] = [None] + [CachedRange(0, cost.num_blocks)] * (steps - 1)
    return cost.speedup(plan)
