"""The Δ-DiT family (Chen et al. 2024): every N-th step full, one cached range per stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Step
from autodelta.search.families.base import SearchFamily, SeedContext


class DeltaDiT(SearchFamily):
    """Interval ``N``, cached blocks ``N_c``, boundary ``b``, range starts per stage (docs/design.md §1)."""

    name = "delta-dit"
    params = ("N", "N_c", "b", "s_early", "s_late")

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int,
             ranges: Sequence[CachedRange] = ()) -> tuple[Step, ...]:
        v = values
        return DeltaDiTParams(int(v["N"]), int(v["N_c"]), int(v["b"]), int(v["s_early"]), int(v["s_late"])).plan(
            steps, num_blocks)

    def seeds(self, context: SeedContext) -> list[tuple[str, dict[str, Any]]]:
        n, n_c, n_b, b = context.rule.interval, context.rule.cached_blocks, context.num_blocks, context.boundary
        return [
            ("paper rule", {"N": n, "N_c": n_c, "b": context.rule.boundary, "s_early": n_b - n_c, "s_late": 0}),
            ("whole-stack reuse", {"N": n, "N_c": n_b, "b": b, "s_early": 0, "s_late": 0}),
            ("middle-block cache", {"N": n, "N_c": n_c, "b": b, "s_early": (n_b - n_c) // 2,
                                    "s_late": (n_b - n_c) // 2}),
        ]
