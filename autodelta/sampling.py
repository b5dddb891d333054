"""A step-addressable copy of DiTPipeline's sampling loop, for evaluation with prefix reuse.

``DiTPipeline.__call__`` runs all steps in one go; a search needs to stop after step k,
save (latents, scheduler state, Δ-Cache, RNG), and resume other plans from there. The
loop below is the pipeline's own, operation for operation, so an all-full plan gives
bit-identical images (tested).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from autodelta.errors import ModelError


@dataclass
class SamplerState:
    """Everything a resumed run needs after step ``step`` (-1: before the first step)."""

    step: int
    latents: torch.Tensor
    scheduler: Any
    rng: torch.Tensor
    deltas: dict[Any, torch.Tensor]

    def nbytes(self) -> int:
        return self.latents.nbytes + sum(t.nbytes for t in self.deltas.values())


class ClassConditionalSampler:
    """DiTPipeline's loop over a fixed batch of (class label, initial noise) items."""

    def __init__(self, pipe: Any, labels: Sequence[int], seeds: Sequence[int], steps: int,
                 guidance_scale: float) -> None:
        if type(pipe).__name__ != "DiTPipeline":
            raise ModelError(f"{type(pipe).__name__} is not supported by the sampler yet; use a DiTPipeline profile")
        self.pipe, self.steps, self.guidance = pipe, steps, guidance_scale
        self.transformer = pipe.transformer
        cfg = self.transformer.config
        self.channels = int(cfg.in_channels)
        device, dtype = pipe._execution_device, self.transformer.dtype
        size = int(cfg.sample_size)
        noise = [torch.randn((1, self.channels, size, size), generator=torch.Generator().manual_seed(int(s)))
                 for s in seeds]
        self.latents0 = torch.cat(noise).to(device=device, dtype=dtype)
        labels_t = torch.tensor(list(labels), device=device).reshape(-1)
        null = torch.tensor([1000] * len(labels_t), device=device)
        self.class_input = torch.cat([labels_t, null], 0) if guidance_scale > 1 else labels_t
        self.rng_seed = int(seeds[0]) if len(seeds) else 0

    def initial_state(self) -> SamplerState:
        scheduler = copy.deepcopy(self.pipe.scheduler)
        scheduler.set_timesteps(self.steps)
        latents = torch.cat([self.latents0] * 2) if self.guidance > 1 else self.latents0
        gen_state = torch.Generator().manual_seed(self.rng_seed).get_state()
        return SamplerState(step=-1, latents=latents, scheduler=scheduler, rng=gen_state, deltas={})

    def timestep_key(self, state: SamplerState, step: int) -> float:
        return float(state.scheduler.timesteps[step])

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i = state.step + 1
        scheduler = copy.deepcopy(state.scheduler)
        t = scheduler.timesteps[i]
        latent_model_input = state.latents
        if self.guidance > 1:
            half = latent_model_input[: len(latent_model_input) // 2]
            latent_model_input = torch.cat([half, half], dim=0)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        timesteps = t
        if not torch.is_tensor(timesteps):
            dtype = torch.float64 if isinstance(timesteps, float) else torch.int64
            timesteps = torch.tensor([timesteps], dtype=dtype, device=latent_model_input.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(latent_model_input.device)
        timesteps = timesteps.expand(latent_model_input.shape[0])
        noise_pred = self.transformer(latent_model_input, timestep=timesteps, class_labels=self.class_input).sample
        if self.guidance > 1:
            eps, rest = noise_pred[:, : self.channels], noise_pred[:, self.channels :]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + self.guidance * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            noise_pred = torch.cat([eps, rest], dim=1)
        if self.transformer.config.out_channels // 2 == self.channels:
            model_output, _ = torch.split(noise_pred, self.channels, dim=1)
        else:
            model_output = noise_pred
        rng = torch.get_rng_state()
        torch.set_rng_state(state.rng)  # stochastic schedulers (LCM) draw from the global generator
        try:
            latents = scheduler.step(model_output, t, latent_model_input).prev_sample
            new_rng = torch.get_rng_state()
        finally:
            torch.set_rng_state(rng)
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=new_rng, deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        latents = state.latents.chunk(2, dim=0)[0] if self.guidance > 1 else state.latents
        latents = 1 / self.pipe.vae.config.scaling_factor * latents
        samples = self.pipe.vae.decode(latents).sample
        return (samples / 2 + 0.5).clamp(0, 1).float().cpu()
