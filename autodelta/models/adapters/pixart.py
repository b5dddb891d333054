"""PixArt-α, PixArt-α-LCM and PixArt-Σ (``PixArtAlphaPipeline``, ``PixArtSigmaPipeline``): prompt embeddings.

PixArt-Σ runs the same transformer class and loop, with 300-token T5 embeddings and
no resolution/aspect-ratio micro-conditions.

Items name prompt-embedding indices; the embeddings come from a file written where the
T5 encoder exists, or are seeded stand-ins (see :mod:`autodelta.models.prompts`). The pipeline
runs without its text encoder, at any resolution the VAE and patch size allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import ModelError
from autodelta.models.adapters.base import PromptConditioned
from autodelta.models.sampling import SamplerState, StepSampler, timesteps_for


class PixArt(PromptConditioned):
    """PixArt pipelines with prompt embeddings, CFG batched in one call (or none, for LCM)."""

    name = "PixArt"
    pipelines = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    transformers = ("PixArtTransformer2DModel",)

    def pipeline_components(self) -> dict[str, Any]:
        return {"tokenizer": None, "text_encoder": None}

    def check_resolution(self, resolution: int | None) -> int:
        if resolution is None or resolution == self.profile.resolution:
            return self.profile.resolution
        self.profile.latent_size(resolution)
        return int(resolution)

    def micro_conditions(self, resolution: int, batch: int, dtype: torch.dtype,
                         device: Any = "cpu") -> dict[str, torch.Tensor | None]:
        """PixArt's resolution/aspect-ratio conditions, exactly as ``PixArtAlphaPipeline`` builds them."""
        if self.profile.pipeline != "PixArtAlphaPipeline" or int(self.profile.transformer_config["sample_size"]) != 128:
            return {"resolution": None, "aspect_ratio": None}
        size = torch.tensor([resolution, resolution]).repeat(batch, 1).to(dtype=dtype, device=device)
        ratio = torch.tensor([1.0]).repeat(batch, 1).to(dtype=dtype, device=device)
        return {"resolution": size, "aspect_ratio": ratio}

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        profile = self.profile
        size = profile.latent_size(resolution)
        gen = torch.Generator().manual_seed(seed)
        embeddings = self.conditioning().pipeline_kwargs(range(batch), dtype)
        return {
            "hidden_states": torch.randn(batch, int(profile.transformer_config["in_channels"]), size, size,
                                         generator=gen).to(dtype),
            "timestep": torch.full((batch,), 500, dtype=torch.long),
            "encoder_hidden_states": embeddings["prompt_embeds"],
            "encoder_attention_mask": embeddings["prompt_attention_mask"],
            "added_cond_kwargs": self.micro_conditions(size * profile.vae_scale_factor, batch, dtype),
        }

    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        """``pipe(prompt_embeds=…)`` at ``resolution`` pixels, without resolution binning."""
        resolution = resolution or self.profile.resolution
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        # on the pipeline's device: PixArtAlphaPipeline moves the embeddings, not their attention masks
        embeddings = (conditioning or self.conditioning()).pipeline_kwargs(conditions, pipe.transformer.dtype,
                                                                           pipe._execution_device)
        return pipe(**embeddings, negative_prompt=None, guidance_scale=guidance, generator=generators,
                    num_inference_steps=steps, height=resolution, width=resolution, use_resolution_binning=False,
                    output_type="np")

    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        resolution = resolution or self.profile.resolution
        embeddings = (conditioning or self.conditioning()).pipeline_kwargs(conditions, pipe.transformer.dtype)
        micro = self.micro_conditions(resolution, len(seeds), pipe.transformer.dtype, pipe._execution_device)
        return PromptSampler(pipe, embeddings, seeds, self.profile.steps, self.profile.guidance_scale, resolution,
                             micro)


class PromptSampler(StepSampler):
    """The PixArt pipelines' loop over (prompt embedding, seed) items, at ``resolution`` pixels.

    Matches ``pipe(prompt_embeds=…, negative_prompt=None, negative_prompt_embeds=…,
    generator=[torch.Generator().manual_seed(s) for s in seeds], height=resolution,
    width=resolution, use_resolution_binning=False)``: one generator per item draws its
    noise and, for stochastic schedulers (LCM), its per-step noise.
    """

    def __init__(self, pipe: Any, embeddings: dict[str, torch.Tensor], seeds: Sequence[int], steps: int,
                 guidance_scale: float, resolution: int, micro_conditions: dict[str, Any]) -> None:
        if type(pipe).__name__ not in PixArt.pipelines:
            raise ModelError(f"{type(pipe).__name__} is not a PixArt pipeline; use the adapter of its family")
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
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor((len(generators), self.channels, self.size, self.size), generator=generators,
                             device=self.device, dtype=self.dtype)  # as the pipeline's prepare_latents
        latents = noise * scheduler.init_noise_sigma
        return SamplerState(step=-1, latents=latents, scheduler=scheduler, rng=[g.get_state() for g in generators],
                            deltas={})

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latents = state.latents
        latent_model_input = torch.cat([latents] * 2) if self.cfg else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        timesteps = timesteps_for(t, latent_model_input.shape[0], latent_model_input.device)
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
