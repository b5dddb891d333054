"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): joint-attention blocks, flow matching, batched CFG.

One block list (``transformer_blocks``) of MMDiT blocks that take the image and text streams
and return ``(text, image)``; the last returns ``(None, image)`` (its text output is never
used), which the runtime's stream tuples carry as a ``None`` Δ. Items name prompt-embedding
rows: the CLIP+T5 sequence (``joint_attention_dim`` wide) and the pooled CLIP vectors.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import ModelError
from autodelta.models.adapters.base import PromptConditioned
from autodelta.models.prompts import PromptEmbeddings
from autodelta.models.sampling import SamplerState, StepSampler


class StableDiffusion3(PromptConditioned):
    """``StableDiffusion3Pipeline`` with prompt and pooled embeddings, CFG batched in one call."""

    name = "SD3"
    pipelines = ("StableDiffusion3Pipeline",)
    transformers = ("SD3Transformer2DModel",)
    width_key = "joint_attention_dim"
    pooled_key = "pooled_projection_dim"

    def pipeline_components(self) -> dict[str, Any]:
        return {f"{part}{suffix}": None for part in ("tokenizer", "text_encoder") for suffix in ("", "_2", "_3")}

    def check_resolution(self, resolution: int | None) -> int:
        resolution = resolution or self.profile.resolution
        side = self.profile.latent_size(resolution)  # a multiple of the VAE's scale times the patch size
        patch = int(self.profile.transformer_config.get("patch_size", 1))
        grid = self.profile.transformer_config.get("pos_embed_max_size")
        if grid is not None and (not isinstance(grid, int) or grid < 1):
            raise ModelError(f"{self.profile.name}: pos_embed_max_size is {grid!r}; it must be a positive grid side "
                             "(SD3.5: 384) or null: fix the transformer config")
        if grid is not None and side // patch > grid:
            raise ModelError(f"{self.profile.name}: {resolution} px needs a {side // patch}-token side, more than its "
                             f"pos_embed_max_size {grid}; pick at most {grid * patch * self.profile.vae_scale_factor} px")
        return int(resolution)

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        profile = self.profile
        size = profile.latent_size(self.check_resolution(resolution))
        gen = torch.Generator().manual_seed(seed)
        embeddings = self.conditioning().pooled_kwargs(range(batch), dtype, negative=False)
        return {
            "hidden_states": torch.randn(batch, int(profile.transformer_config["in_channels"]), size, size,
                                         generator=gen).to(dtype),
            "encoder_hidden_states": embeddings["prompt_embeds"],
            "pooled_projections": embeddings["pooled_prompt_embeds"],
            "timestep": torch.full((batch,), 500.0, dtype=dtype),
        }

    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        """``pipe(prompt_embeds=…, pooled_prompt_embeds=…, negative_…)`` at ``resolution`` pixels."""
        resolution = resolution or self.profile.resolution
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        embeddings = (conditioning or self.conditioning()).pooled_kwargs(conditions, pipe.transformer.dtype,
                                                                         pipe._execution_device)
        return pipe(**embeddings, guidance_scale=guidance, generator=generators, num_inference_steps=steps,
                    height=resolution, width=resolution, output_type="np")

    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        resolution = resolution or self.profile.resolution
        return SD3Sampler(pipe, conditioning or self.conditioning(), conditions, seeds, self.profile.steps,
                          self.profile.guidance_scale, resolution)


class SD3Sampler(StepSampler):
    """``StableDiffusion3Pipeline``'s loop over (prompt embedding, seed) items, operation for operation."""

    def __init__(self, pipe: Any, conditioning: PromptEmbeddings, conditions: Sequence[int], seeds: Sequence[int],
                 steps: int, guidance_scale: float, resolution: int) -> None:
        if type(pipe).__name__ not in StableDiffusion3.pipelines:
            raise ModelError(f"{type(pipe).__name__} is not a StableDiffusion3Pipeline; use the adapter of its family")
        super().__init__(pipe, seeds, steps, guidance_scale, resolution // pipe.vae_scale_factor)
        emb = conditioning.pooled_kwargs(conditions, self.dtype, self.device)
        if self.cfg:
            self.prompt = torch.cat([emb["negative_prompt_embeds"], emb["prompt_embeds"]], dim=0)
            self.pooled = torch.cat([emb["negative_pooled_prompt_embeds"], emb["pooled_prompt_embeds"]], dim=0)
        else:
            self.prompt, self.pooled = emb["prompt_embeds"], emb["pooled_prompt_embeds"]

    def initial_state(self) -> SamplerState:
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
            calculate_shift,
            retrieve_timesteps,
        )
        from diffusers.utils.torch_utils import randn_tensor

        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        latents = randn_tensor((len(generators), self.channels, self.size, self.size), generator=generators,
                               device=self.device, dtype=self.dtype)
        scheduler = copy.deepcopy(self.pipe.scheduler)
        config = scheduler.config
        kwargs: dict[str, Any] = {}
        if config.get("use_dynamic_shifting", None):
            patch = int(self.transformer.config.patch_size)
            kwargs["mu"] = calculate_shift((self.size // patch) ** 2, config.get("base_image_seq_len", 256),
                                           config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                           config.get("max_shift", 1.16))
        retrieve_timesteps(scheduler, self.steps, self.device, sigmas=None, **kwargs)
        return SamplerState(step=-1, latents=latents, scheduler=scheduler, rng=None, deltas={})

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latents = state.latents
        model_input = torch.cat([latents] * 2) if self.cfg else latents
        noise_pred = self.transformer(hidden_states=model_input, timestep=t.expand(model_input.shape[0]),
                                      encoder_hidden_states=self.prompt, pooled_projections=self.pooled,
                                      joint_attention_kwargs=None, return_dict=False)[0]
        if self.cfg:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + self.guidance * (text - uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=None, deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        latents = (state.latents / vae.config.scaling_factor) + vae.config.shift_factor
        image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pt").float().cpu()
