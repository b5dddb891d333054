"""SD3-class models: joint-attention blocks whose last block returns no text stream, CFG batched, flow matching."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange
from tests.conftest import make_schedule
from tests.factories import VAE
from tests.helpers import run_cli

LAYERS = 3


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    """A StableDiffusion3Pipeline with a random-weight 3-block SD3Transformer2DModel, no text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=LAYERS,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=24,
                                        caption_projection_dim=16, pooled_projection_dim=12,
                                        pos_embed_max_size=16).eval()
    vae = AutoencoderKL(**{**VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    folder = tmp_path_factory.mktemp("pipes") / "my-sd3"
    pipe.save_pretrained(folder)
    return folder


def test_the_sampler_is_the_pipeline_and_a_range_may_end_at_the_textless_last_block(sd3_folder):
    profile = load_profile(sd3_folder)
    assert profile.pipeline == "StableDiffusion3Pipeline" and profile.num_blocks == LAYERS and profile.cfg_factor == 2
    pipe = profile.load_pipeline()
    conditioning = profile.adapter.conditioning()
    profile.steps = 4
    with torch.no_grad():
        baseline = profile.adapter.call(pipe, [0, 1], [3, 4], 4, profile.guidance_scale, 16, conditioning).images
    sampler = profile.adapter.sampler(pipe, [0, 1], [3, 4], 16, conditioning)
    state = sampler.initial_state()
    while state.step < 3:
        state = sampler.step(state)
    assert torch.equal(sampler.decode(state), torch.from_numpy(baseline).permute(0, 3, 1, 2))
    with autodelta.apply(pipe, make_schedule([None] * 4, model=profile.name, num_blocks=LAYERS)), torch.no_grad():
        same = profile.adapter.call(pipe, [0, 1], [3, 4], 4, profile.guidance_scale, 16, conditioning).images
    assert (same == baseline).all()
    plan = [None, CachedRange(1, 2), None, CachedRange(0, 3, order=1)]  # both reach the last block (text None)
    with autodelta.apply(pipe, make_schedule(plan, model=profile.name, num_blocks=LAYERS)) as handle, torch.no_grad():
        cached = profile.adapter.call(pipe, [0, 1], [3, 4], 4, profile.guidance_scale, 16, conditioning).images
    assert handle.stats.blocks_skipped == 2 + 3 and not (cached == baseline).all()
    assert float(abs(cached - baseline).max()) < 0.5


@pytest.mark.slow
def test_search_then_apply_on_an_sd3_folder(capsys, sd3_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "s"
    code, _, err = run_cli(capsys, "search", "--model", str(sd3_folder), "--budget", "1.3x", "--trials", "4",
                           "--calib", "2", "--out", str(out), "--resolution", "16", "--device", "cpu")
    assert code == 0, err
    schedule = autodelta.load_schedule(out / "schedule.yaml")
    assert schedule.num_blocks == LAYERS and schedule.cost["speedup"] >= 1.3
    code, stdout, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--model", str(sd3_folder), "--compare",
                                "--resolution", "16", "--out", str(tmp_path / "a"), "--device", "cpu")
    assert code == 0, err
    assert "PSNR to full" in stdout

