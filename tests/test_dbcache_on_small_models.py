"""cache-dit's DBCache on a model with fewer blocks than its default F8: F shrinks to fit, instead of cache-dit's
AssertionError ("Fn_compute_blocks 8 must be less than the number of transformer blocks 4")."""

from __future__ import annotations

import torch

from autodelta.baselines.harness import ItemwiseRunner
from autodelta.baselines.hooks import cache_dit_installer, dbcache_front
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.models.loading import load_profile


def test_dbcache_runs_on_a_four_block_dit_with_its_front_halved(tmp_path):
    from diffusers import DiTPipeline, DiTTransformer2DModel

    from tests.factories import VAE

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=4, sample_size=8, patch_size=2, num_embeds_ada_norm=1000).eval()
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler

    DiTPipeline(transformer=transformer, vae=AutoencoderKL(**VAE).eval(),
                scheduler=DPMSolverMultistepScheduler()).save_pretrained(tmp_path / "dit4")
    profile = load_profile(tmp_path / "dit4")
    pipe = profile.load_pipeline()
    assert dbcache_front(pipe) == 2
    runner = ItemwiseRunner(profile, pipe, CalibrationSet.from_profile(profile, 1), profile.require_cost())
    full = runner.run()
    cached = runner.run(cache_dit_installer(10.0))  # every step after the warm-up skips blocks 2 and 3
    assert cached.speedup > 1.0 and runner.counts[0] > runner.counts[3]
    assert torch.equal(runner.run().images, full.images)
