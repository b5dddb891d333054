"""diffusers' FirstBlockCache: skip the rest of the stack while the first block's output barely changes."""

from __future__ import annotations

from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installer, diffusers_installer


class FirstBlockCache(RuntimeMethod):
    name = "fbcache"
    description = "diffusers FirstBlockCache, threshold tuned to the budget"
    knob = "threshold"

    def installer(self, value: Any, extras: Any = None) -> Installer:
        from diffusers.hooks import FirstBlockCacheConfig

        return diffusers_installer("apply_first_block_cache", lambda _pipe: FirstBlockCacheConfig(threshold=value))
