"""Class-conditional DiT (``DiTPipeline``: DiT-XL/2, tiny-dit): class labels are the conditions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import ModelError
from autodelta.models.adapters.base import ModelAdapter
from autodelta.models.sampling import SamplerState, StepSampler, timesteps_for


class ClassConditionalDiT(ModelAdapter):
    """``DiTPipeline``: fixed resolution, class labels, CFG against the null class 1000 in one batch."""

    name = "class-conditional DiT"
    pipelines = ("DiTPipeline",)
    transformers = ("DiTTransformer2DModel",)

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        cfg = self.profile.transformer_config
        size = int(cfg["sample_size"])
        gen = torch.Generator().manual_seed(seed)
        return {
            "hidden_states": torch.randn(batch, int(cfg["in_channels"]), size, size, generator=gen).to(dtype),
            "timestep": torch.full((batch,), 500, dtype=torch.long),
            "class_labels": torch.arange(batch, dtype=torch.long) % int(cfg.get("num_embeds_ada_norm", 1000)),
        }

    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        return pipe(class_labels=list(conditions), guidance_scale=guidance, generator=generators,
                    num_inference_steps=steps, output_type="np")

    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        return ClassConditionalSampler(pipe, conditions, seeds, self.profile.steps, self.profile.guidance_scale)


class ClassConditionalSampler(StepSampler):
    """DiTPipeline's loop over a fixed batch of (class label, initial noise) items."""

    def __init__(self, pipe: Any, labels: Sequence[int], seeds: Sequence[int], steps: int,
                 guidance_scale: float) -> None:
        if type(pipe).__name__ != "DiTPipeline":
            raise ModelError(f"{type(pipe).__name__} is not a DiTPipeline; use the adapter of its family")
        super().__init__(pipe, seeds, steps, guidance_scale, int(pipe.transformer.config.sample_size))
        # drawn as DiTPipeline draws them (diffusers' randn_tensor, in the model's dtype): fp16 noise is not
        # fp32 noise rounded on every CPU, and a sampler that differs from the pipeline scores other images
        from diffusers.utils.torch_utils import randn_tensor

        generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.latents0 = randn_tensor((len(generators), self.channels, self.size, self.size), generator=generators,
                                     device=self.device, dtype=self.dtype)
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
        timesteps = timesteps_for(t, latent_model_input.shape[0], latent_model_input.device)
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
