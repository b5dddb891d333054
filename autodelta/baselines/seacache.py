"""diffusers' SeaCache (residual order 1): a spectrally filtered change of the input decides when to recompute."""

from __future__ import annotations

from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installer, diffusers_installer


def image_latents(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """SeaCache's raw vision input for image models: each item's latent as one frame, ``[C, 1, H, W]``."""
    latents = kwargs.get("hidden_states", args[0] if args else None)
    if latents is None or latents.ndim != 4:
        return None
    return [latent.unsqueeze(1) for latent in latents]


class SeaCache(RuntimeMethod):
    """DiT and PixArt loops do not attach the step index and sigma SeaCache reads, so the installer re-enters
    the cache context per call with them (``step_context``)."""

    name = "seacache"
    description = "diffusers SeaCache (residual order 1), threshold tuned to the budget"
    knob = "threshold"

    def installer(self, value: Any, extras: Any = None) -> Installer:
        from diffusers.hooks import SeaCacheConfig

        return diffusers_installer("apply_sea_cache", lambda _pipe: SeaCacheConfig(
            threshold=value, raw_vision_callback=image_latents), step_context=True)
