"""Qwen-Image: dual-stream MMDiT blocks, a masked prompt, normalised true CFG, a video VAE decoding one frame."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange
from tests import factories
from tests.conftest import make_schedule
from tests.helpers import run_cli

LAYERS = 3


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    """A QwenImagePipeline with a random-weight 3-block transformer and a tiny video VAE, no text encoder."""
    return factories.qwen_image_folder(tmp_path_factory.mktemp("pipes") / "my-qwen", LAYERS)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0  # one prompt shorter than the others: the mask reaches the transformer
    path = tmp_path_factory.mktemp("prompts") / "prompts.safetensors"
    save_file({"prompt_embeds": torch.randn(4, 6, 16, generator=gen), "prompt_attention_mask": mask}, str(path))
    return path


def test_the_sampler_is_the_pipeline_and_a_schedule_runs_on_both_streams(qwen_folder, prompts_file):
    profile = load_profile(qwen_folder)
    assert profile.pipeline == "QwenImagePipeline" and profile.num_blocks == LAYERS and profile.vae_scale_factor == 4
    assert profile.resolution == 512 and profile.cfg_factor == 2  # 128-latent default side; true CFG 4
    pipe = profile.load_pipeline()
    conditioning = profile.adapter.conditioning(prompts_file)
    profile.steps = 4

    def generate():
        with torch.no_grad():
            return profile.adapter.call(pipe, [0, 1], [3, 4], 4, profile.guidance_scale, 32, conditioning).images

    baseline = generate()
    sampler = profile.adapter.sampler(pipe, [0, 1], [3, 4], 32, conditioning)
    state = sampler.initial_state()
    while state.step < 3:
        state = sampler.step(state)
    assert torch.equal(sampler.decode(state), torch.from_numpy(baseline).permute(0, 3, 1, 2))
    with autodelta.apply(pipe, make_schedule([None] * 4, model=profile.name, num_blocks=LAYERS)):
        assert (generate() == baseline).all()
    plan = [None, CachedRange(1, 2), None, CachedRange(0, 3, order=1)]
    with autodelta.apply(pipe, make_schedule(plan, model=profile.name, num_blocks=LAYERS)) as handle:
        cached = generate()
    assert handle.stats.blocks_skipped == 2 * (2 + 3) and not (cached == baseline).all()  # two calls per step
    assert (generate() == baseline).all()


@pytest.mark.slow
def test_search_then_apply_on_a_qwen_image_folder(capsys, qwen_folder, prompts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "s"
    common = ["--prompt-embeds", str(prompts_file), "--resolution", "32", "--device", "cpu"]
    code, _, err = run_cli(capsys, "search", "--model", str(qwen_folder), "--budget", "1.3x", "--trials", "4",
                           "--calib", "2", "--out", str(out), *common)
    assert code == 0, err
    assert autodelta.load_schedule(out / "schedule.yaml").num_blocks == LAYERS
    code, stdout, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--model", str(qwen_folder), "--compare",
                                "--out", str(tmp_path / "a"), *common)
    assert code == 0, err
    assert "PSNR to full" in stdout
