"""Stage-wise intervals: a separate interval and cached-block count before and after the boundary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autodelta.plan.schedule import CachedRange, Step, validate_plan
from autodelta.search.families.base import SearchFamily, SeedContext


class Stagewise(SearchFamily):
    """``N_early``/``Nc_early`` before ``b`` (outline stage), ``N_late``/``Nc_late`` from it on (detail)."""

    name = "stagewise"
    params = ("N_early", "N_late", "Nc_early", "Nc_late", "b", "s_early", "s_late")

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        v = values
        plan: list[Step] = []
        last_full = 0
        for i in range(steps):
            early = i < int(v["b"])
            interval = int(v["N_early"] if early else v["N_late"])
            if i == 0 or i - last_full >= interval:
                plan.append(None)
                last_full = i
            else:
                n = int(v["Nc_early"] if early else v["Nc_late"])
                plan.append(CachedRange(int(v["s_early"] if early else v["s_late"]), n))
        return validate_plan(plan, num_blocks, where="stagewise plan")

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        n, n_c, n_b = context.rule.interval, context.rule.cached_blocks, context.num_blocks
        return [
            ("paper rule", {"N_early": n, "N_late": n, "Nc_early": n_c, "Nc_late": n_c, "b": context.rule.boundary,
                            "s_early": n_b - n_c, "s_late": 0}),
            ("whole-stack reuse", {"N_early": n, "N_late": n, "Nc_early": n_b, "Nc_late": n_b,
                                   "b": context.boundary, "s_early": 0, "s_late": 0}),
        ]
