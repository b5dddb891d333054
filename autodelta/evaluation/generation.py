"""One timed generation through a profile's pipeline, with the transformer's own time split out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autodelta.models.devices import synchronize
from autodelta.models.profile import Profile


@dataclass
class Generation:
    images: np.ndarray  # [N, H, W, C] in [0, 1]
    pipeline_s: float
    transformer_s: float


class TransformerTimer:
    """Accumulates wall time spent inside ``transformer.forward`` (synchronising on a GPU)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._device = next(transformer.parameters()).device
        self._handles = [
            transformer.register_forward_pre_hook(self._before),
            transformer.register_forward_hook(self._after),
        ]

    def _sync(self) -> None:
        synchronize(self._device)

    def _before(self, *_: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def generate(pipe: Any, profile: Profile, conditions: Sequence[Any], seed: int, steps: int | None = None,
             guidance_scale: float | None = None, resolution: int | None = None,
             conditioning: Any = None) -> Generation:
    """Generate one image per condition (item i seeded ``seed + i``); returns images and timings."""
    steps = steps or profile.steps
    guidance = profile.guidance_scale if guidance_scale is None else guidance_scale
    seeds = [seed + i for i in range(len(conditions))]
    timer = TransformerTimer(pipe.transformer)
    try:
        start = time.perf_counter()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # DiTPipeline's stochastic schedulers (LCM) draw from the global generator
            out = profile.adapter.call(pipe, list(conditions), seeds, steps, guidance, resolution, conditioning)
            synchronize(pipe.transformer.device)
        elapsed = time.perf_counter() - start
    finally:
        timer.close()
    images = np.asarray(out.images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    return Generation(images=images, pipeline_s=elapsed, transformer_s=timer.seconds)
