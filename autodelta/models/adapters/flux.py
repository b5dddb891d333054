"""FLUX.1 (``FluxPipeline``: dev, schnell, tiny-flux): dual-stream blocks, flow matching, prompt embeddings.

The transformer's stack is its double-stream blocks, then its single-stream blocks
(:data:`autodelta.models.blocks.LAYOUTS`); both take the image and text streams and return
``(text, image)``. Items name prompt-embedding rows (T5 sequence plus pooled CLIP vector).
Guidance follows the pipeline: a guidance-distilled transformer (``guidance_embeds``, FLUX-dev)
takes the guidance scale as an input in one call; any other runs FLUX's true CFG, a second call
with the negative prompt, when the scale is above 1 (schnell and its 1.0 run none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import ModelError
from autodelta.models.adapters.base import PackedLatents
from autodelta.models.prompts import PromptEmbeddings
from autodelta.models.sampling import PackedFlowSampler, SamplerState, StepSampler


class Flux(PackedLatents):
    """``FluxPipeline`` with prompt and pooled embeddings, embedded guidance or true CFG."""

    name = "FLUX"
    pipelines = ("FluxPipeline",)
    transformers = ("FluxTransformer2DModel",)
    width_key = "joint_attention_dim"
    pooled_key = "pooled_projection_dim"

    @property
    def embedded_guidance(self) -> bool:
        """Guidance-distilled (FLUX-dev): the scale is a transformer input, one call per step."""
        return bool(self.profile.transformer_config.get("guidance_embeds", False))

    @property
    def cfg_factor(self) -> int:
        return 2 if self.profile.guidance_scale > 1.0 and not self.embedded_guidance else 1

    def pipeline_components(self) -> dict[str, Any]:
        return {"tokenizer": None, "text_encoder": None, "tokenizer_2": None, "text_encoder_2": None}

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        from diffusers import FluxPipeline

        config = self.profile.transformer_config
        side = self.token_side(resolution)
        gen = torch.Generator().manual_seed(seed)
        embeddings = self.conditioning().pooled_kwargs(range(batch), dtype, negative=False)
        inputs: dict[str, Any] = {
            "hidden_states": torch.randn(batch, side * side, int(config["in_channels"]), generator=gen).to(dtype),
            "encoder_hidden_states": embeddings["prompt_embeds"],
            "pooled_projections": embeddings["pooled_prompt_embeds"],
            "timestep": torch.full((batch,), 0.5, dtype=dtype),
            "img_ids": FluxPipeline._prepare_latent_image_ids(batch, side, side, "cpu", dtype),
            "txt_ids": torch.zeros(embeddings["prompt_embeds"].shape[1], 3, dtype=dtype),
        }
        if self.embedded_guidance:
            inputs["guidance"] = torch.full((batch,), self.profile.guidance_scale, dtype=torch.float32)
        return inputs

    def _guidance(self, guidance: float) -> dict[str, float]:
        if self.embedded_guidance:
            return {"guidance_scale": guidance, "true_cfg_scale": 1.0}
        return {"guidance_scale": 1.0, "true_cfg_scale": guidance}

    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        """``pipe(prompt_embeds=…, pooled_prompt_embeds=…)`` at ``resolution`` pixels."""
        resolution = resolution or self.profile.resolution
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        true_cfg = guidance > 1.0 and not self.embedded_guidance
        embeddings = (conditioning or self.conditioning()).pooled_kwargs(conditions, pipe.transformer.dtype,
                                                                         pipe._execution_device, negative=true_cfg)
        return pipe(**embeddings, **self._guidance(guidance), generator=generators, num_inference_steps=steps,
                    height=resolution, width=resolution, output_type="np")

    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        resolution = resolution or self.profile.resolution
        return FluxSampler(pipe, conditioning or self.conditioning(), conditions, seeds, self.profile.steps,
                           self.profile.guidance_scale, resolution, self.embedded_guidance)


class FluxSampler(PackedFlowSampler):
    """``FluxPipeline``'s loop over (prompt embedding, seed) items, at ``resolution`` pixels.

    Matches ``pipe(prompt_embeds=…, pooled_prompt_embeds=…, generator=[torch.Generator().manual_seed(s)
    for s in seeds], height=resolution, width=resolution)`` operation for operation: packed
    latents, the shifted flow-matching sigmas, and true CFG as a second call per step.
    """

    def __init__(self, pipe: Any, conditioning: PromptEmbeddings, conditions: Sequence[int], seeds: Sequence[int],
                 steps: int, guidance_scale: float, resolution: int, embedded_guidance: bool) -> None:
        if type(pipe).__name__ not in Flux.pipelines:
            raise ModelError(f"{type(pipe).__name__} is not a FluxPipeline; use the adapter of its family")
        self.embedded = embedded_guidance
        super().__init__(pipe, seeds, steps, guidance_scale, resolution)
        emb = conditioning.pooled_kwargs(conditions, self.dtype, self.device, negative=self.cfg)
        self.prompt, self.pooled = emb["prompt_embeds"], emb["pooled_prompt_embeds"]
        self.negative, self.negative_pooled = emb.get("negative_prompt_embeds"), emb.get("negative_pooled_prompt_embeds")
        self.txt_ids = torch.zeros(self.prompt.shape[1], 3).to(device=self.device, dtype=self.dtype)
        self.img_ids = pipe._prepare_latent_image_ids(len(self.seeds), self.size // 2, self.size // 2, self.device,
                                                      self.dtype)
        self.guidance_input = (torch.full([1], guidance_scale, device=self.device, dtype=torch.float32)
                               .expand(len(self.seeds)) if embedded_guidance else None)

    @property
    def cfg(self) -> bool:
        return self.guidance > 1 and not self.embedded

    def initial_state(self) -> SamplerState:
        from diffusers.utils.torch_utils import randn_tensor

        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        noise = randn_tensor((len(generators), self.channels, self.size, self.size), generator=generators,
                             device=self.device, dtype=self.dtype)
        latents = self.pipe._pack_latents(noise, len(generators), self.channels, self.size, self.size)
        return SamplerState(step=-1, latents=latents, scheduler=self._shifted_scheduler(latents.shape[1]), rng=None,
                            deltas={})

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latents = state.latents
        timestep = self._timestep(t, latents.shape[0])
        noise_pred = self.transformer(hidden_states=latents, timestep=timestep, guidance=self.guidance_input,
                                      pooled_projections=self.pooled, encoder_hidden_states=self.prompt,
                                      txt_ids=self.txt_ids, img_ids=self.img_ids, joint_attention_kwargs={},
                                      return_dict=False)[0]
        if self.cfg:
            negative = self.transformer(hidden_states=latents, timestep=timestep, guidance=self.guidance_input,
                                        pooled_projections=self.negative_pooled, encoder_hidden_states=self.negative,
                                        txt_ids=self.txt_ids, img_ids=self.img_ids, joint_attention_kwargs={},
                                        return_dict=False)[0]
            noise_pred = negative + self.guidance * (noise_pred - negative)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=None, deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        latents = self._unpacked(state)
        latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
        image = vae.decode(latents, return_dict=False)[0]
        return self._postprocessed(image)
