"""Step-addressable copies of the pipelines' sampling loops, for evaluation with prefix reuse.

``DiTPipeline.__call__`` and ``PixArtAlphaPipeline.__call__`` run all steps in one go; a
search needs to stop after step k, save (latents, scheduler state, Δ-Cache, RNG), and
resume other plans from there. The loops below are the pipelines' own, operation for
operation, so an all-full plan gives bit-identical images (tested for both).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
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
    rng: Any
    deltas: dict[Any, torch.Tensor]

    def nbytes(self) -> int:
        return self.latents.nbytes + sum(t.nbytes for t in self.deltas.values())


def _timesteps_for(t: Any, batch: int, device: Any) -> torch.Tensor:
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

    transformer: torch.nn.Module

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


class ClassConditionalSampler(StepSampler):
    """DiTPipeline's loop over a fixed batch of (class label, initial noise) items."""

    def __init__(self, pipe: Any, labels: Sequence[int], seeds: Sequence[int], steps: int,
                 guidance_scale: float) -> None:
        if type(pipe).__name__ != "DiTPipeline":
            raise ModelError(f"{type(pipe).__name__} is not a DiTPipeline; use PromptSampler for PixArt")
        super().__init__(pipe, seeds, steps, guidance_scale, int(pipe.transformer.config.sample_size))
        noise = [torch.randn((1, self.channels, self.size, self.size), generator=torch.Generator().manual_seed(s))
                 for s in self.seeds]
        self.latents0 = torch.cat(noise).to(device=self.device, dtype=self.dtype)
        labels_t = torch.tensor(list(labels), device=self.device).reshape(-1)
        null = torch.tensor([1000] * len(labels_t), device=self.device)
        self.class_input = torch.cat([labels_t, null], 0) if self.cfg else labels_t
        self.rng_seed = self.seeds[0] if self.seeds else 0

    def initial_state(self) -> SamplerState:
        latents = torch.cat([self.latents0] * 2) if self.cfg else self.latents0
        gen_state = torch.Generator().manual_seed(self.rng_seed).get_state()
        return SamplerState(step=-1, latents=latents, scheduler=self._new_scheduler(), rng=gen_state, deltas={})

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latent_model_input = state.latents
        if self.cfg:
            half = latent_model_input[: len(latent_model_input) // 2]
            latent_model_input = torch.cat([half, half], dim=0)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        timesteps = _timesteps_for(t, latent_model_input.shape[0], latent_model_input.device)
        noise_pred = self.transformer(latent_model_input, timestep=timesteps, class_labels=self.class_input).sample
        if self.cfg:
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
        torch.set_rng_state(state.rng)  # DiTPipeline gives stochastic schedulers no generator: global RNG
        try:
            latents = scheduler.step(model_output, t, latent_model_input).prev_sample
            new_rng = torch.get_rng_state()
        finally:
            torch.set_rng_state(rng)
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=new_rng, deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        latents = state.latents.chunk(2, dim=0)[0] if self.cfg else state.latents
        latents = 1 / self.pipe.vae.config.scaling_factor * latents
        samples = self.pipe.vae.decode(latents).sample
        return (samples / 2 + 0.5).clamp(0, 1).float().cpu()


class PromptSampler(StepSampler):
    """PixArtAlphaPipeline's loop over (prompt embedding, seed) items, at ``resolution`` pixels.

    Matches ``pipe(prompt_embeds=…, negative_prompt=None, negative_prompt_embeds=…,
    generator=[torch.Generator().manual_seed(s) for s in seeds], height=resolution,
    width=resolution, use_resolution_binning=False)``: one generator per item draws its
    noise and, for stochastic schedulers (LCM), its per-step noise.
    """

    def __init__(self, pipe: Any, embeddings: dict[str, torch.Tensor], seeds: Sequence[int], steps: int,
                 guidance_scale: float, resolution: int, micro_conditions: dict[str, Any]) -> None:
        if type(pipe).__name__ != "PixArtAlphaPipeline":
            raise ModelError(f"{type(pipe).__name__} is not a PixArtAlphaPipeline; use ClassConditionalSampler for DiT")
        super().__init__(pipe, seeds, steps, guidance_scale, resolution // pipe.vae_scale_factor)
        emb = {k: v.to(self.device) for k, v in embeddings.items()}
        if self.cfg:
            self.prompt_embeds = torch.cat([emb["negative_prompt_embeds"], emb["prompt_embeds"]], dim=0).to(self.dtype)
            self.prompt_mask = torch.cat([emb["negative_prompt_attention_mask"], emb["prompt_attention_mask"]], dim=0)
            self.added = {k: None if v is None else torch.cat([v, v], dim=0) for k, v in micro_conditions.items()}
        else:
            self.prompt_embeds, self.prompt_mask = emb["prompt_embeds"].to(self.dtype), emb["prompt_attention_mask"]
            self.added = dict(micro_conditions)
        self.resolution = resolution

    def initial_state(self) -> SamplerState:
        scheduler = self._new_scheduler(device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        noise = [torch.randn((1, self.channels, self.size, self.size), generator=g, dtype=self.dtype)
                 for g in generators]
        latents = torch.cat(noise).to(self.device) * scheduler.init_noise_sigma
        return SamplerState(step=-1, latents=latents, scheduler=scheduler, rng=[g.get_state() for g in generators],
                            deltas={})

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latents = state.latents
        latent_model_input = torch.cat([latents] * 2) if self.cfg else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        timesteps = _timesteps_for(t, latent_model_input.shape[0], latent_model_input.device)
        noise_pred = self.transformer(latent_model_input, encoder_hidden_states=self.prompt_embeds,
                                      encoder_attention_mask=self.prompt_mask, timestep=timesteps,
                                      added_cond_kwargs=self.added, return_dict=False)[0]
        if self.cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + self.guidance * (noise_pred_text - noise_pred_uncond)
        if self.transformer.config.out_channels // 2 == self.channels:
            noise_pred = noise_pred.chunk(2, dim=1)[0]
        generators = []
        for saved in state.rng:
            generator = torch.Generator()
            generator.set_state(saved)
            generators.append(generator)
        extra = self.pipe.prepare_extra_step_kwargs(generators, 0.0)
        out = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)
        latents = out[1] if self.steps == 1 else out[0]
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=[g.get_state() for g in generators],
                            deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        image = vae.decode(state.latents / vae.config.scaling_factor, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1).float().cpu()


def make_sampler(pipe: Any, profile: Any, conditions: Sequence[int], seeds: Sequence[int],
                 resolution: int | None = None, prompt_embeds: Any = None) -> StepSampler:
    """The step-addressable loop of ``profile``'s pipeline over items (condition, seed)."""
    if profile.text_conditioned:
        from autodelta.models import pixart_micro_conditions

        resolution = resolution or profile.resolution
        embeddings = (prompt_embeds or profile.prompt_embeddings()).pipeline_kwargs(conditions, pipe.transformer.dtype)
        micro = pixart_micro_conditions(profile, resolution, len(seeds), pipe.transformer.dtype)
        return PromptSampler(pipe, embeddings, seeds, profile.steps, profile.guidance_scale, resolution, micro)
    return ClassConditionalSampler(pipe, conditions, seeds, profile.steps, profile.guidance_scale)
