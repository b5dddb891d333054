"""Qwen-Image (``QwenImagePipeline``): MMDiT blocks on packed latents, a masked prompt, normalised true CFG.

One block list (``transformer_blocks``) whose blocks take the image and text streams and
return ``(text, image)``, as FLUX's do. Items name prompt-embedding rows with their masks
(the Qwen2.5-VL hidden states); true CFG runs as a second call per step with the negative
prompt, and the pipeline rescales the guided prediction to the conditional one's norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import ModelError
from autodelta.models.adapters.base import PackedLatents
from autodelta.models.prompts import PromptEmbeddings
from autodelta.models.sampling import PackedFlowSampler, SamplerState, StepSampler


class QwenImage(PackedLatents):
    """``QwenImagePipeline`` with prompt embeddings and masks, true CFG as a second call."""

    name = "Qwen-Image"
    pipelines = ("QwenImagePipeline",)
    transformers = ("QwenImageTransformer2DModel",)
    width_key = "joint_attention_dim"

    def pipeline_components(self) -> dict[str, Any]:
        return {"tokenizer": None, "text_encoder": None}

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        side = self.token_side(resolution)
        gen = torch.Generator().manual_seed(seed)
        embeddings = self.conditioning().pipeline_kwargs(range(batch), dtype)
        channels = int(self.profile.transformer_config["in_channels"])
        return {
            "hidden_states": torch.randn(batch, side * side, channels, generator=gen).to(dtype),
            "encoder_hidden_states": embeddings["prompt_embeds"],
            "encoder_hidden_states_mask": embeddings["prompt_attention_mask"],
            "timestep": torch.full((batch,), 0.5, dtype=dtype),
            "img_shapes": [[(1, side, side)]] * batch,
        }

    def _kwargs(self, conditioning: PromptEmbeddings, conditions: Sequence[int], dtype: torch.dtype,
                device: Any, negative: bool) -> dict[str, torch.Tensor]:
        emb = conditioning.pipeline_kwargs(conditions, dtype, device)
        out = {"prompt_embeds": emb["prompt_embeds"], "prompt_embeds_mask": emb["prompt_attention_mask"]}
        if negative:
            out["negative_prompt_embeds"] = emb["negative_prompt_embeds"]
            out["negative_prompt_embeds_mask"] = emb["negative_prompt_attention_mask"]
        return out

    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        """``pipe(prompt_embeds=…, prompt_embeds_mask=…, true_cfg_scale=guidance)`` at ``resolution`` pixels."""
        resolution = resolution or self.profile.resolution
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        embeddings = self._kwargs(conditioning or self.conditioning(), conditions, pipe.transformer.dtype,
                                  pipe._execution_device, negative=guidance > 1)
        return pipe(**embeddings, true_cfg_scale=guidance, generator=generators, num_inference_steps=steps,
                    height=resolution, width=resolution, output_type="np")

    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        resolution = resolution or self.profile.resolution
        embeddings = self._kwargs(conditioning or self.conditioning(), conditions, pipe.transformer.dtype,
                                  pipe._execution_device, negative=self.profile.guidance_scale > 1)
        return QwenImageSampler(pipe, embeddings, seeds, self.profile.steps, self.profile.guidance_scale, resolution)


class QwenImageSampler(PackedFlowSampler):
    """``QwenImagePipeline``'s loop over (prompt embedding, seed) items, operation for operation; the prompts
    go through the pipeline's own ``encode_prompt`` (it drops an all-ones mask)."""

    flow_sigmas = False

    def __init__(self, pipe: Any, embeddings: dict[str, torch.Tensor], seeds: Sequence[int], steps: int,
                 guidance_scale: float, resolution: int) -> None:
        if type(pipe).__name__ not in QwenImage.pipelines:
            raise ModelError(f"{type(pipe).__name__} is not a QwenImagePipeline; use the adapter of its family")
        super().__init__(pipe, seeds, steps, guidance_scale, resolution)
        self.prompt, self.mask = pipe.encode_prompt(None, self.device, prompt_embeds=embeddings["prompt_embeds"],
                                                    prompt_embeds_mask=embeddings["prompt_embeds_mask"])
        if self.cfg:
            self.negative, self.negative_mask = pipe.encode_prompt(
                None, self.device, prompt_embeds=embeddings["negative_prompt_embeds"],
                prompt_embeds_mask=embeddings["negative_prompt_embeds_mask"])
        self.img_shapes = [[(1, self.size // 2, self.size // 2)]] * len(self.seeds)

    def initial_state(self) -> SamplerState:
        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        latents = self.pipe.prepare_latents(len(generators), self.channels, self.resolution, self.resolution,
                                            self.dtype, self.device, generators)
        return SamplerState(step=-1, latents=latents, scheduler=self._shifted_scheduler(latents.shape[1]), rng=None,
                            deltas={})

    def _predict(self, latents: torch.Tensor, timestep: torch.Tensor, prompt: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        return self.transformer(hidden_states=latents, timestep=timestep, guidance=None,
                                encoder_hidden_states_mask=mask, encoder_hidden_states=prompt,
                                img_shapes=self.img_shapes, attention_kwargs={}, return_dict=False)[0]

    @torch.no_grad()
    def step(self, state: SamplerState) -> SamplerState:
        """Run step ``state.step + 1`` and return the new state (the input state is not modified)."""
        i, scheduler, t = self._next_step(state)
        latents = state.latents
        timestep = self._timestep(t, latents.shape[0])
        noise_pred = self._predict(latents, timestep, self.prompt, self.mask)
        if self.cfg:
            negative = self._predict(latents, timestep, self.negative, self.negative_mask)
            combined = negative + self.guidance * (noise_pred - negative)
            scale = torch.norm(noise_pred, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True)
            noise_pred = combined * scale
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        return SamplerState(step=i, latents=latents, scheduler=scheduler, rng=None, deltas={})

    @torch.no_grad()
    def decode(self, state: SamplerState) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        latents = self._unpacked(state)
        latents = latents.to(vae.dtype)
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        image = vae.decode(latents / std + mean, return_dict=False)[0][:, :, 0]
        return self._postprocessed(image)
