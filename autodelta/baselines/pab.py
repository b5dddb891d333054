"""diffusers' Pyramid Attention Broadcast: attention recomputed every N steps inside a timestep window."""

from __future__ import annotations

from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installed, Installer, TimestepTracker, diffusers_installer


class PyramidAttentionBroadcast(RuntimeMethod):
    """It skips attention modules inside blocks that still run, so it tops out well below block caches."""

    name = "pab"
    description = "diffusers Pyramid Attention Broadcast, skip range and window tuned to the budget"
    knob = "skip range, timestep window"
    discrete = True

    def settings(self, steps: int) -> list[tuple[int, tuple[int, int]]]:
        return [(skip, window) for skip in range(2, 7) for window in ((100, 800), (50, 900), (0, 1000))]

    def extreme(self, steps: int) -> tuple[int, tuple[int, int]]:
        return (6, (0, 1000))

    def installer(self, value: Any, extras: Any = None) -> Installer:
        skip, window = value

        def install(pipe: Any) -> Installed:
            from diffusers.hooks import PyramidAttentionBroadcastConfig

            tracker = TimestepTracker()
            handle = tracker.attach(pipe.transformer)
            inner = diffusers_installer("apply_pyramid_attention_broadcast", lambda _pipe: PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=skip, spatial_attention_timestep_skip_range=window,
                cross_attention_block_skip_range=skip, cross_attention_timestep_skip_range=window,
                current_timestep_callback=tracker))(pipe)

            def remove() -> None:
                inner.remove()
                handle.remove()

            return Installed(inner.reset, remove)

        return install
