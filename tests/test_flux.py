"""FLUX-class models: a dual-stream stack (double- then single-stream blocks), Δ over both streams, FluxPipeline folders."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.models.blocks import find_blocks
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange
from tests.conftest import make_schedule
from tests.factories import VAE
from tests.helpers import assert_one_line_error, run_cli

DOUBLE, SINGLE = 2, 4
TOKENS = 6  # text tokens of the prompt embeddings file


def tiny_flux_pipeline(guidance_embeds: bool = False):
    """FluxPipeline with a random-weight FluxTransformer2DModel (2 double + 4 single blocks), no text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=DOUBLE, num_single_layers=SINGLE,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                         pooled_projection_dim=12, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=[4, 6, 6]).eval()
    vae = AutoencoderKL(**{**VAE, "latent_channels": 4, "scaling_factor": 0.3611, "shift_factor": 0.1159}).eval()
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipes") / "my-flux"
    tiny_flux_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("prompts") / "prompts.safetensors"
    save_file({"prompt_embeds": torch.randn(4, TOKENS, 24, generator=gen),
               "pooled_prompt_embeds": torch.randn(4, 12, generator=gen)}, str(path))
    return path


def _generate(profile, pipe, conditioning, steps=4, guidance=None):
    with torch.no_grad():
        return profile.adapter.call(pipe, [0, 1], [3, 4], steps, profile.guidance_scale if guidance is None
                                    else guidance, 32, conditioning).images


def test_a_flux_folder_is_one_stack_across_both_block_lists(flux_folder, prompts_file):
    profile = load_profile(flux_folder)
    assert profile.pipeline == "FluxPipeline" and profile.text_conditioned
    assert profile.num_blocks == DOUBLE + SINGLE and profile.stack.boundaries(profile.transformer_config) == [DOUBLE]
    assert profile.resolution == 256  # FluxPipeline's default 128-latent side, at this VAE's scale 2
    pipe = profile.load_pipeline()
    blocks = find_blocks(pipe.transformer)
    assert blocks[:DOUBLE] == list(pipe.transformer.transformer_blocks)
    assert blocks[DOUBLE:] == list(pipe.transformer.single_transformer_blocks)
    conditioning = profile.adapter.conditioning(prompts_file)
    assert conditioning.pooled is not None and conditioning.pooled.shape == (4, 12)


def test_all_full_is_bit_identical_remove_restores_and_the_sampler_is_the_pipeline(flux_folder, prompts_file):
    profile = load_profile(flux_folder)
    pipe = profile.load_pipeline()
    conditioning = profile.adapter.conditioning(prompts_file)
    guidance = 2.5  # true CFG: a second transformer call per step, with the negative prompt
    baseline = _generate(profile, pipe, conditioning, guidance=guidance)
    with autodelta.apply(pipe, make_schedule([None] * 4, model=profile.name, num_blocks=6)):
        assert (_generate(profile, pipe, conditioning, guidance=guidance) == baseline).all()
    plan = [None, CachedRange(1, 4), None, CachedRange(0, 6, order=1)]
    with autodelta.apply(pipe, make_schedule(plan, model=profile.name, num_blocks=6)) as handle:
        cached = _generate(profile, pipe, conditioning, guidance=guidance)
    assert not (cached == baseline).all() and handle.stats.blocks_skipped == 2 * (4 + 6)  # two calls per step
    assert (_generate(profile, pipe, conditioning, guidance=guidance) == baseline).all()
    profile.steps, profile.guidance_scale = 4, guidance
    sampler = profile.adapter.sampler(pipe, [0, 1], [3, 4], 32, conditioning)
    state = sampler.initial_state()
    while state.step < 3:
        state = sampler.step(state)
    assert torch.equal(sampler.decode(state), torch.from_numpy(baseline).permute(0, 3, 1, 2))


class StreamRecorder:
    """Inputs (image, text) and outputs (text, image) of every block call of an unpatched stack."""

    def __init__(self, blocks):
        self.inputs, self.outputs, self.kwargs = [], [], []
        self.handles = [b.register_forward_pre_hook(self._pre, with_kwargs=True) for b in blocks]
        self.handles += [b.register_forward_hook(lambda m, a, out: self.outputs.append(out)) for b in blocks]

    def _pre(self, module, args, kwargs):
        self.inputs.append((kwargs["hidden_states"], kwargs["encoder_hidden_states"]))
        self.kwargs.append({k: v for k, v in kwargs.items() if k not in ("hidden_states", "encoder_hidden_states")})

    def close(self):
        for handle in self.handles:
            handle.remove()


def test_a_delta_step_across_the_double_single_boundary_matches_the_hand_computation(flux_folder):
    profile = load_profile(flux_folder)
    transformer = profile.build_transformer()
    blocks = find_blocks(transformer)
    n = len(blocks)
    x0 = profile.example_inputs(batch=2, seed=1, resolution=32)
    x1 = dict(profile.example_inputs(batch=2, seed=2, resolution=32), timestep=torch.full((2,), 0.3))
    s, length = 1, 3  # blocks 1 (double) … 3 (single): the range spans the boundary at 2
    rec = StreamRecorder(blocks)
    with torch.no_grad():
        transformer(**x0)
        expected_out = transformer(**x1, return_dict=False)[0]
    rec.close()
    (h_in, c_in), (c_out, h_out) = rec.inputs[s], rec.outputs[s + length - 1]
    delta = (h_out - h_in, c_out - c_in)  # both streams' Δ at the full step
    with torch.no_grad():  # the Δ step by hand, from the second call's stack input
        h, c = rec.inputs[n]
        kwargs = rec.kwargs[n]
        for k in range(s):
            c, h = blocks[k](hidden_states=h, encoder_hidden_states=c, **kwargs)
        h, c = h + delta[0], c + delta[1]
        for k in range(s + length, n):
            c, h = blocks[k](hidden_states=h, encoder_hidden_states=c, **kwargs)
        hand = transformer.proj_out(transformer.norm_out(h, rec.kwargs[n]["temb"]))
    schedule = make_schedule([None, CachedRange(s, length)], model=profile.name, num_blocks=n)
    with autodelta.apply(transformer, schedule) as handle, torch.no_grad():
        transformer(**x0)
        got = transformer(**x1, return_dict=False)[0]
    assert handle.stats.blocks_skipped == length
    assert torch.equal(got, hand) and not torch.equal(got, expected_out)


@pytest.mark.slow
def test_search_then_apply_on_a_flux_folder(capsys, flux_folder, prompts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "s"
    common = ["--prompt-embeds", str(prompts_file), "--resolution", "32", "--device", "cpu"]
    code, _, err = run_cli(capsys, "search", "--model", str(flux_folder), "--budget", "1.6x", "--trials", "4",
                           "--calib", "2", "--out", str(out), *common)
    assert code == 0, err
    schedule = autodelta.load_schedule(out / "schedule.yaml")
    assert schedule.model == "my-flux" and schedule.num_blocks == DOUBLE + SINGLE and schedule.cost["speedup"] >= 1.6
    monkeypatch.chdir(flux_folder.parent)  # the schedule names its folder as given: show finds the stack there
    code, stdout, err = run_cli(capsys, "show", str(out / "schedule.yaml"))
    assert code == 0, err
    assert "blocks: transformer_blocks 0-1 | single_transformer_blocks 2-5" in stdout
    assert all(line.count("|") == 1 for line in stdout.splitlines()[-schedule.steps:])  # the boundary, every step
    code, stdout, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--model", str(flux_folder), "--compare",
                                "--out", str(tmp_path / "a"), *common)
    assert code == 0, err
    assert "PSNR to full" in stdout


def test_an_unsupported_pipeline_names_the_supported_ones(capsys, tmp_path):
    from diffusers import AuraFlowPipeline  # noqa: F401  (a real diffusers class, not one autodelta runs)

    folder = tmp_path / "aura"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "AuraFlowPipeline", "transformer": '
                                             '["diffusers", "AuraFlowTransformer2DModel"]}')
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text('{"_class_name": "AuraFlowTransformer2DModel", '
                                                        '"num_layers": 2}')
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "FlowMatchEulerDiscreteScheduler"}')
    code, _, err = run_cli(capsys, "search", "--model", str(folder), "--budget", "1.6x")
    assert_one_line_error(code, err, "AuraFlowPipeline", "FluxPipeline", "StableDiffusion3Pipeline", "DiTPipeline",
                          "PixArtSigmaPipeline")


def test_both_block_types_cost_what_their_matmuls_do(flux_folder):
    """MACs of a double- and a single-stream block, by hand: linears per token, attention over both streams."""
    from autodelta.models.profiler import profile_macs

    profile = load_profile(flux_folder)
    cost = profile_macs(profile.build_transformer(), profile.example_inputs(batch=1, resolution=32))
    d, image, text = 32, 64, 512  # width, image tokens at 32 px, stand-in prompt tokens
    tokens = image + text
    attention = 2 * tokens * tokens * d
    double = tokens * (4 * d * d + 8 * d * d) + 2 * d * 6 * d + attention  # q k v out + ff per stream, two adaLNs
    single = tokens * (3 * d * d + d * 4 * d + 5 * d * d) + d * 3 * d + attention  # q k v, mlp in, out over 5d
    norms = cost.blocks_macs[0] - double, cost.blocks_macs[-1] - single  # fvcore also counts layer norms
    assert 0 <= norms[0] < 0.02 * double and 0 <= norms[1] < 0.02 * single


def test_the_harness_counts_true_cfg_calls_as_one_row_each():
    """FLUX's true CFG is two transformer calls of one row per step: measured MACs match the plan's cost."""
    from autodelta.baselines.harness import ItemwiseRunner, plan_installer
    from autodelta.evaluation.calibration import CalibrationSet

    profile = load_profile("tiny-flux")
    assert profile.cfg_factor == 2
    cost = profile.require_cost()
    pipe = profile.load_pipeline()
    plan = [None, CachedRange(2, 8)] * 10
    runner = ItemwiseRunner(profile, pipe, CalibrationSet((3, 7), (0, 1)), cost)
    run = runner.run(plan_installer(plan, profile, cost))
    assert runner.calls == runner.rows == 2 * 2 * profile.steps  # items x calls per step x steps, one row each
    assert run.speedup == pytest.approx(cost.speedup(plan), rel=1e-9)
