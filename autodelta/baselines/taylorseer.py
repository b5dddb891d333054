"""diffusers' TaylorSeer: a first-order Taylor forecast of every block's attention and feed-forward outputs."""

from __future__ import annotations

from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installer, diffusers_installer


class TaylorSeer(RuntimeMethod):
    """Set by its cache interval (2–8) and warm-up steps: the least-skipping pair that meets the budget."""

    name = "taylorseer"
    description = "diffusers TaylorSeer (first order), interval and warm-up tuned to the budget"
    knob = "interval, warm-up"
    discrete = True

    def settings(self, steps: int) -> list[tuple[int, int]]:
        return [(interval, warmup) for interval in range(2, 9) for warmup in range(1, steps)]

    def extreme(self, steps: int) -> tuple[int, int]:
        return (8, 1)

    def installer(self, value: Any, extras: Any = None) -> Installer:
        import torch
        from diffusers.hooks import TaylorSeerCacheConfig

        interval, warmup = value
        # TaylorSeer forecasts the attention and feed-forward outputs of every block (its paper's DiT setting);
        # diffusers' default pattern ("…attn" matched whole) finds no module named attn1 in DiT or PixArt
        return diffusers_installer("apply_taylorseer_cache", lambda _pipe: TaylorSeerCacheConfig(
            cache_interval=interval, disable_cache_before_step=warmup, max_order=1, taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"^(transformer_blocks|single_transformer_blocks|blocks)\.\d+\.(attn\d*|ff|ff_context)$"]))
