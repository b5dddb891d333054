"""Step-addressable sampling loops, for evaluation with prefix reuse: the shared part.

A pipeline's ``__call__`` runs all steps in one go; a search needs to stop after step k,
save (latents, scheduler state, Δ-Cache, RNG), and resume other plans from there. Each
model family's adapter (:mod:`autodelta.models.adapters`) holds a copy of its pipeline's loop,
operation for operation, on top of :class:`StepSampler`, so an all-full plan gives
bit-identical images (tested for every family).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class SamplerState:
    """Everything a resumed run needs after step ``step`` (-1: before the first step)."""

    step: int
    latents: torch.Tensor
    scheduler: Any
    rng: Any
    deltas: dict[Any, tuple[torch.Tensor | None, ...]]  # the runtime's Δ-Cache: Δ per stream

    def nbytes(self) -> int:
        return self.latents.nbytes + sum(t.nbytes for d in self.deltas.values() for t in d if t is not None)


def timesteps_for(t: Any, batch: int, device: Any) -> torch.Tensor:
    """The pipelines' timestep broadcast: scalar or 0-d tensor → ``[batch]`` tensor."""
    timesteps = t
    if not torch.is_tensor(timesteps):
        dtype = torch.float64 if isinstance(timesteps, float) else torch.int64
        timesteps = torch.tensor([timesteps], dtype=dtype, device=device)
    elif len(timesteps.shape) == 0:
        timesteps = timesteps[None].to(device)
    return timesteps.expand(batch)


class StepSampler(ABC):
    """Shared part of the loops: fixed items (condition, seed), one step at a time, state in and out."""

    transformer: Any  # a diffusers transformer: its config and dtype are dynamic attributes

    def __init__(self, pipe: Any, seeds: Sequence[int], steps: int, guidance_scale: float, size: int) -> None:
        self.pipe, self.steps, self.guidance = pipe, steps, guidance_scale
        self.transformer = pipe.transformer
        self.channels = int(self.transformer.config.in_channels)
        self.device, self.dtype = pipe._execution_device, self.transformer.dtype
        self.seeds = [int(s) for s in seeds]
        self.size = size

    @property
    def cfg(self) -> bool:
        return self.guidance > 1

    def _new_scheduler(self, **kwargs: Any) -> Any:
        scheduler = copy.deepcopy(self.pipe.scheduler)
        scheduler.set_timesteps(self.steps, **kwargs)
        return scheduler

    @staticmethod
    def _next_step(state: SamplerState) -> tuple[int, Any, Any]:
        """Index, a private copy of the scheduler (the input state stays reusable) and timestep of the next step."""
        scheduler = copy.deepcopy(state.scheduler)
        return state.step + 1, scheduler, scheduler.timesteps[state.step + 1]

    def timestep_key(self, state: SamplerState, step: int) -> float:
        return float(state.scheduler.timesteps[step])

    @abstractmethod
    def initial_state(self) -> SamplerState:
        """State before step 0: initial noise, a fresh scheduler, the RNG state."""

    @abstractmethod
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1``; the input state is not modified."""

    @abstractmethod
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""


class PackedFlowSampler(StepSampler):
    """Shared part of the FLUX-style loops (FLUX, Qwen-Image): the transformer gets ``t / 1000``, and the
    scheduler takes the pipelines' linear sigmas shifted by ``mu`` for the image's token count."""

    flow_sigmas: bool = True
    """Whether the pipeline leaves the sigmas to a scheduler with ``use_flow_sigmas`` (FLUX does, Qwen-Image not)."""

    def __init__(self, pipe: Any, seeds: Sequence[int], steps: int, guidance_scale: float, resolution: int) -> None:
        super().__init__(pipe, seeds, steps, guidance_scale, 2 * (resolution // (pipe.vae_scale_factor * 2)))
        self.channels = int(self.transformer.config.in_channels) // 4  # packed: 2x2 latent pixels per token
        self.resolution = resolution

    def _unpacked(self, state: SamplerState) -> torch.Tensor:
        pipe = self.pipe
        return pipe._unpack_latents(state.latents, self.resolution, self.resolution, pipe.vae_scale_factor)

    def _postprocessed(self, image: torch.Tensor) -> torch.Tensor:
        return self.pipe.image_processor.postprocess(image, output_type="pt").float().cpu()

    def _timestep(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return t.expand(batch).to(self.dtype) / 1000  # as the pipelines pass it

    def timestep_key(self, state: SamplerState, step: int) -> float:
        return float(self._timestep(state.scheduler.timesteps[step], 1)[0])

    def _shifted_scheduler(self, tokens: int) -> Any:
        """A copy of the pipeline's scheduler, set as the pipelines set it for ``tokens`` image tokens."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        scheduler = copy.deepcopy(self.pipe.scheduler)
        config = scheduler.config
        own = self.flow_sigmas and getattr(config, "use_flow_sigmas", False)
        sigmas: Any = None if own else np.linspace(1.0, 1 / self.steps, self.steps)
        mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        retrieve_timesteps(scheduler, self.steps, self.device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        return scheduler
