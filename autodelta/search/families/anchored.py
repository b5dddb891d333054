"""Anchored: full steps at both ends (a head and a tail), an interval in between."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autodelta.plan.schedule import CachedRange, Step
from autodelta.search.families.base import SearchFamily, SeedContext, staged_plan


class Anchored(SearchFamily):
    """The first ``head`` and last ``tail`` steps full, every N-th step after the head; a Δ range per stage.

    With ``head=1, tail=0`` this is the Δ-DiT family.
    """

    name = "anchored"
    params = ("N", "head", "tail", "b", "n_early", "s_early", "n_late", "s_late")

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        v = values
        head, tail, interval = max(1, int(v["head"])), int(v["tail"]), int(v["N"])
        return staged_plan(v, steps, num_blocks, lambda i: i < head or i >= steps - tail or (i - (head - 1)) % interval == 0,
                           where="anchored plan")

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        """The Δ-DiT seeds, plus warm-up seeds shaped like cache-dit's DBCache when the budget is known.

        Warm-up seeds: the first steps full, then every other step computes the front
        blocks and replays the rest, with the fewest cached blocks that meet the budget.
        """
        n, n_c, n_b, b, steps = (context.rule.interval, context.rule.cached_blocks, context.num_blocks,
                                 context.boundary, context.steps)
        seeds: list[tuple[str, dict[str, Any]]] = [
            ("paper rule", {"N": n, "head": 1, "tail": 0, "b": context.rule.boundary, "n_early": n_c,
                            "s_early": n_b - n_c, "n_late": n_c, "s_late": 0}),
            ("whole-stack reuse", {"N": n, "head": 1, "tail": 0, "b": b, "n_early": n_b, "s_early": 0,
                                   "n_late": n_b, "s_late": 0}),
            ("middle-block cache", {"N": n, "head": 1, "tail": 0, "b": b, "n_early": n_c,
                                    "s_early": (n_b - n_c) // 2, "n_late": n_c, "s_late": (n_b - n_c) // 2}),
        ]
        if context.fits is None:
            return seeds
        for head in sorted({max(1, steps // 4), max(1, (2 * steps) // 5), max(1, steps // 2)}):
            for tail in (0, 1):
                for cached in range(1, n_b + 1):  # fewest cached rear blocks that meet the budget
                    values = {"N": 2, "head": head, "tail": tail, "b": 0, "n_early": cached,
                              "s_early": n_b - cached, "n_late": cached, "s_late": n_b - cached}
                    if context.fits(self.plan(values, steps, n_b)):
                        seeds.append((f"warm-up {head}, tail {tail}", values))
                        break
        return seeds
