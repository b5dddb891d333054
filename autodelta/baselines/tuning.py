"""Setting a run-time method's knob to a budget: on the calibration items only, then checked on the scored ones.

The harness then runs the tuned method on the held-out items and counts what really ran
there (docs/design.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autodelta.baselines.base import RuntimeMethod, unreachable
from autodelta.baselines.hooks import Installer
from autodelta.plan.cost import Budget


@dataclass
class Tuned:
    """A method's knob value, its calibration extras and the speed-up it measured on the calibration items."""

    method: RuntimeMethod
    value: Any
    extras: Any
    speedup: float
    notes: list[str] = field(default_factory=list)

    def installer(self) -> Installer:
        return self.method.installer(self.value, self.extras)

    def describe(self) -> str:
        value = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.method.knob} {value}" + "".join(f"; {n}" for n in self.notes)


def tune(method: RuntimeMethod, runner: Any, budget: Budget, steps: int, iterations: int = 9) -> Tuned:
    """The least-skipping knob value whose speed-up, measured on ``runner``'s (calibration) items, meets ``budget``."""
    extras = method.calibrate(runner, steps)
    if method.discrete:
        return _tune_discrete(method, runner, budget, steps, extras)
    top = runner.run(method.installer(method.high, extras), desc=f"{method.name} tuning")
    if not budget.reached(top.speedup):
        raise unreachable(method.name, budget, top.speedup, f"{method.knob} {method.high:g}")
    best = Tuned(method, method.high, extras, top.speedup)
    lo, hi = math.log(method.low), math.log(method.high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        run = runner.run(method.installer(math.exp(mid), extras), desc=f"{method.name} tuning")
        if budget.reached(run.speedup):
            hi, best = mid, Tuned(method, math.exp(mid), extras, run.speedup)
            if budget.near(run.speedup):
                break
        else:
            lo = mid
    return best


def _tune_discrete(method: RuntimeMethod, runner: Any, budget: Budget, steps: int, extras: Any) -> Tuned:
    """Static settings: their MACs do not depend on the item, so each is measured on one item, the
    least-skipping one that meets the budget is confirmed on all items. The most-skipping setting goes
    first: a budget it cannot meet is refused after one generation, not after every setting's."""
    one = runner.subset(1)
    extreme = method.extreme(steps)
    top = one.run(method.installer(extreme, extras), desc=f"{method.name} settings").speedup
    if not budget.reached(top):
        raise unreachable(method.name, budget, top, f"{method.knob} {extreme}")
    measured = [(one.run(method.installer(s, extras), desc=f"{method.name} settings").speedup, i, s)
                for i, s in enumerate(method.settings(steps))]
    fitting = sorted((m, i, s) for m, i, s in measured if budget.reached(m))
    if not fitting:
        best, _, setting = max(measured)
        raise unreachable(method.name, budget, best, f"{method.knob} {setting}")
    for _, _, setting in fitting:
        run = runner.run(method.installer(setting, extras), desc=f"{method.name} tuning")
        if budget.reached(run.speedup):
            return Tuned(method, setting, extras, run.speedup)
    raise unreachable(method.name, budget, fitting[-1][0], f"{method.knob} {fitting[-1][2]}")


def raise_until_met(tuned: Tuned, run_items: Callable[[Installer], Any], budget: Budget, tries: int = 12) -> Any:
    """Run the tuned method on the scored items; a threshold method whose measured speed-up falls short
    there is made more aggressive (×1.2 per try) until it meets the budget: speed only, never quality."""
    run = run_items(tuned.installer())
    if budget.reached(run.speedup) or tuned.method.discrete:
        return run
    start = tuned.value
    for _ in range(tries):
        tuned.value = min(tuned.value * 1.2, tuned.method.high)
        run = run_items(tuned.installer())
        if budget.reached(run.speedup) or tuned.value >= tuned.method.high:
            break
    tuned.notes.append(f"raised from {start:.4g} on the scored items to meet the budget")
    return run
