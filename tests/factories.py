"""Builders of tiny pipelines at the released block counts and stream layouts (random weights, tiny widths).

Shape bugs hide in 3-block test models, where every cached range ends at the last block;
these have the block lists of the released checkpoints, so the default search space's
ranges start and end where they do on the real models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [8, 8],
       "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
       "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 16, "scaling_factor": 0.18215}
"""A two-level AutoencoderKL small enough for tests (8x down-sampling is not needed at 16 px)."""


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(**VAE).eval()


def tiny_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def save_tiny_dit(folder, num_layers: int, classes: int):
    """A tiny DiT pipeline (latent space, random weights, seed 0) saved with save_pretrained into ``folder``."""
    from diffusers import DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=num_layers, sample_size=8, patch_size=2,
                                        num_embeds_ada_norm=classes).eval()
    DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=tiny_scheduler()).save_pretrained(folder)
    return folder


def flux_folder(folder: Path, double: int = 19, single: int = 38, guidance: bool = False) -> Path:
    """A FluxPipeline folder (FLUX.1: 19 double- and 38 single-stream blocks), no text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=double, num_single_layers=single,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                         pooled_projection_dim=12, axes_dims_rope=[4, 6, 6],
                                         guidance_embeds=guidance).eval()
    vae = AutoencoderKL(**{**VAE, "latent_channels": 4, "scaling_factor": 0.3611, "shift_factor": 0.1159}).eval()
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae, text_encoder=None,
                 tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer).save_pretrained(folder)
    return folder


def sd3_folder(folder: Path, layers: int, dual_attention: int = 0) -> Path:
    """A StableDiffusion3Pipeline folder: SD3.5-medium is 24 joint blocks, the first 13 with a second
    attention; SD3.5-large is 38 without. The last block returns no text stream."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=layers,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=24,
                                        caption_projection_dim=16, pooled_projection_dim=12, pos_embed_max_size=16,
                                        dual_attention_layers=tuple(range(dual_attention)), qk_norm="rms_norm").eval()
    vae = AutoencoderKL(**{**VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}).eval()
    StableDiffusion3Pipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                             text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                             text_encoder_3=None, tokenizer_3=None).save_pretrained(folder)
    return folder


def qwen_image_folder(folder: Path, layers: int = 60) -> Path:
    """A QwenImagePipeline folder (Qwen-Image: 60 dual-stream blocks) with a tiny video VAE, no text encoder."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=layers,
                                              attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                              axes_dims_rope=(2, 2, 4)).eval()
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.1] * 4, latents_std=[2.0] * 4).eval()
    QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae, text_encoder=None,
                      tokenizer=None, transformer=transformer).save_pretrained(folder)
    return folder


def wan_transformer(layers: int = 30) -> Any:
    """A bare WanTransformer3DModel (Wan2.1-1.3B: 30 blocks in one ``blocks`` list, called positionally)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=layers,
                                 rope_max_seq_len=32).eval()


class ModelWorld:
    """A landscape whose truth is a trajectory error model with hidden gains, so a search is judged against
    an optimum that its own model does not know.

    Real scores come from ``truth`` (per-step gains spread over two orders of magnitude, drift that
    compounds); the search's model starts from equal gains (the prior a search without probes uses)
    and must learn the rest from its trials. A search that only evaluated its model's first plan
    would stay where the prior puts it.
    """

    def __init__(self, steps: int = 12, items: int = 4, num_blocks: int = 8, seed: int = 0) -> None:
        from autodelta.evaluation.error_model import ErrorModel, Gains
        from autodelta.evaluation.trajectory import Trajectory
        from autodelta.plan.cost import CostModel
        from autodelta.search.spaces import load_space

        gen = torch.Generator().manual_seed(seed)
        self.steps, self.items, self.num_blocks = steps, items, num_blocks
        self.cost = CostModel.uniform(num_blocks)
        self.space = load_space("explicit", steps, num_blocks)
        self.choices = self.space.range_set(num_blocks)
        spans = tuple(dict.fromkeys(c.span for c in self.choices))
        scale = torch.linspace(2.0, 0.5, steps)[:, None, None]
        deltas = {s: (torch.randn(steps, items, 16, generator=gen) * scale * (1 + s.length / num_blocks)).cumsum(0)
                  for s in spans}
        trajectory = Trajectory(spans, steps, items, {}, deltas)
        replay = tuple(float(g) for g in torch.exp(2.5 * torch.randn(steps, generator=gen)) * 1e-3)
        forecast = tuple(float(g) for g in torch.exp(2.5 * torch.randn(steps, generator=gen)) * 3e-3)
        self.truth = ErrorModel(trajectory, Gains(replay, forecast, compounding=0.3, mix=1.0))
        self.prior = ErrorModel(trajectory, Gains.prior(steps))

    def evaluator(self, meter: Any = None) -> Any:
        return WorldEvaluator(self, meter)


class WorldEvaluator:
    """The :class:`~autodelta.evaluation.evaluator.Evaluator` of a :class:`ModelWorld` (no probes, the prior model)."""

    probe_count = 0

    def __init__(self, world: ModelWorld, meter: Any = None) -> None:
        from autodelta.evaluation.work import WorkMeter

        self.world, self.cost, self.steps, self.num_blocks = world, world.cost, world.steps, world.num_blocks
        self.meter = meter if meter is not None else WorkMeter()

    @property
    def items(self) -> int:
        return self.world.items

    def evaluate(self, plan: Any) -> Any:
        from autodelta.evaluation.error_model import psnr_of_cost
        from autodelta.evaluation.evaluator import Evaluation

        self.meter.charge(self.items)
        errors = self.world.truth.item_errors(plan)
        return Evaluation(metrics={"psnr": psnr_of_cost(float(errors.sum()), self.items)},
                          macs=self.cost.plan_macs(plan), speedup=self.cost.speedup(plan),
                          per_item={"mse": [float(e) for e in errors]})

    def subset(self, count: int) -> WorldEvaluator:
        return self

    def error_model(self, probe: Any, stored: Any) -> tuple[Any, dict[str, Any]]:
        return self.world.prior, {}


def wan_folder(folder: Path, two_experts: bool = False) -> Path:
    """A WanPipeline folder exactly as diffusers saves it (``boundary_ratio`` and ``expand_timesteps`` are config
    values in model_index.json; Wan 2.2 adds ``transformer_2``), no text encoder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                           scale_factor_spatial=2, scale_factor_temporal=2).eval()
    second = wan_transformer(2) if two_experts else None
    WanPipeline(tokenizer=None, text_encoder=None, transformer=wan_transformer(2), vae=vae,
                scheduler=UniPCMultistepScheduler(), transformer_2=second,
                boundary_ratio=0.875 if two_experts else None).save_pretrained(folder)
    return folder
