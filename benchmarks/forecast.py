"""Forecast benchmark: replaying Δ vs forecasting it, on fixed whole-stack plans, per model.

For plans of fixed shape (full steps spread evenly at about 1.6x, 2x, 2.2x and 2.8x, and
tiny-dit's greedy plan), three rows each: every Δ step replays; every Δ step forecasts
(extrapolated from the last two full steps, docs/design.md §1); and a greedy per-step
choice: each Δ step in turn becomes a forecast if that raises PSNR on the calibration
items. Every row is scored on the calibration and on the held-out items. It shows why
forecasting is a per-step choice the search makes, not a global switch.

    python benchmarks/forecast.py tiny-dit
"""

from __future__ import annotations

import sys
import time

from autodelta.evaluation.diffusion import EvaluatorFactory, default_cache_dir
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange, Step, canonical

PLANS = {
    "even2 (1.6x-ish) FFFdFdFdFdFdFdFdFdFF": "FFFdFdFdFdFdFdFdFdFF",
    "greedy-tiny FFFFdFFdFFddFddFddFF": "FFFFdFFdFFddFddFddFF",
    "2x FdFdFdFdFdFdFdFdFdFd": "FdFdFdFdFdFdFdFdFdFd",
    "2.5x FddFdFddFdFddFdFddFd": "FddFdFddFdFddFdFddFF",
    "3x FddFddFddFddFddFddFd": "FddFddFddFddFddFddFd",
}


def main(model: str) -> None:
    profile = load_profile(model)
    whole = CachedRange(0, profile.num_blocks)
    cal = EvaluatorFactory(model, cache_dir=default_cache_dir())()
    held = EvaluatorFactory(model, heldout=True, cache_dir=default_cache_dir())()

    def forecast(plan: tuple[Step, ...], mask: set[int] | None = None) -> tuple[Step, ...]:
        return canonical(tuple(s if s is None or (mask is not None and i not in mask)
                               else CachedRange(s.start, s.length, 1) for i, s in enumerate(plan)))

    def show(name: str, plan: tuple[Step, ...]) -> None:
        start = time.time()
        c, h = cal.evaluate(plan).metrics["psnr"], held.evaluate(plan).metrics["psnr"]
        print(f"{name:40s} {cal.cost.speedup(plan):.3f}x calib {c:.2f} held {h:.2f} ({time.time() - start:.0f}s)",
              flush=True)

    print(f"# forecast benchmark: {model}, {len(cal.calibration)} calibration / {len(held.calibration)} held-out items")
    for name, text in PLANS.items():
        plan = tuple(None if c == "F" else whole for c in text[: profile.steps])
        show("replay  " + name, plan)
        show("forecast " + name, forecast(plan))
        mask: set[int] = set()
        current = cal.evaluate(plan).metrics["psnr"]
        for i, step in enumerate(plan):
            if step is None:
                continue
            value = cal.evaluate(forecast(plan, mask | {i})).metrics["psnr"]
            if value > current:
                mask, current = mask | {i}, value
        show(f"toggle {sorted(mask)} " + name[:12], forecast(plan, mask))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny-dit")
