"""The real-user path on CPU: devices, batching, pipeline folders (DiT, PixArt-Σ), torch.compile."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.errors import ModelError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.models.devices import resolve
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange
from tests.conftest import make_schedule
from tests.factories import save_tiny_dit, tiny_scheduler, tiny_vae
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    """A tiny DiT-XL/2-shaped pipeline (28 blocks) saved with save_pretrained."""
    return save_tiny_dit(tmp_path_factory.mktemp("pipes") / "my-dit", num_layers=28, classes=1000)


@pytest.fixture(scope="module")
def sigma_folder(tmp_path_factory):
    """A tiny PixArt-Σ pipeline (no text encoder) saved with save_pretrained."""
    from diffusers import PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                           num_layers=28, sample_size=8, patch_size=2, cross_attention_dim=16,
                                           caption_channels=32, norm_type="ada_norm_single",
                                           num_embeds_ada_norm=1000).eval()
    folder = tmp_path_factory.mktemp("pipes") / "my-sigma"
    PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=transformer,
                        scheduler=tiny_scheduler()).save_pretrained(folder)
    return folder


# --- devices -------------------------------------------------------------------------------------------
def test_devices_resolve_and_refuse_cleanly(capsys, tmp_path):
    assert (resolve("cpu").device, resolve("cpu").dtype) == ("cpu", "fp32")
    if not torch.cuda.is_available():
        assert resolve("auto").device in ("cpu", "mps") and resolve("auto", "auto").dtype in ("fp32", "fp16")
        with pytest.raises(ModelError, match="no CUDA GPU is visible"):
            resolve("cuda:1")
        code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--device", "cuda", "--out", str(tmp_path))
        assert_one_line_error(code, err, "--device cuda", "no CUDA GPU")
    for device, dtype, needle in [("tpu", "auto", "--device 'tpu'"), ("cpu:1", "auto", "--device 'cpu:1'"),
                                  ("cpu", "int8", "--dtype 'int8'")]:
        code, _, err = run_cli(capsys, "apply", "x.yaml", "--device", device, "--dtype", dtype)
        assert_one_line_error(code, err, needle)


def test_reference_key_holds_dtype_device_and_batch(profile, pipe, tmp_path):
    calib = CalibrationSet.from_profile(profile, 4)
    whole = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    ones = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path, batch_size=1)
    key = whole.reference_key()
    assert key["dtype"] == "torch.float32" and key["device"] == "cpu" and key["batch_size"] == 4
    assert whole.reference_path() != ones.reference_path()  # never compared across batchings or dtypes
    half = DiffusionEvaluator(profile, profile.load_pipeline(dtype=torch.bfloat16), calib, cache_dir=tmp_path)
    assert half.reference_key()["dtype"] == "torch.bfloat16" and half.reference_path() != whole.reference_path()


def test_batch_size_does_not_change_the_images(profile, pipe):
    calib = CalibrationSet.from_profile(profile, 5)
    plan = [None if i % 2 == 0 else CachedRange(0, 20) for i in range(20)]
    whole = DiffusionEvaluator(profile, pipe, calib)
    pieces = DiffusionEvaluator(profile, pipe, calib, batch_size=2)  # batches of 2, 2 and 1
    assert len(pieces.samplers) == 3
    assert torch.allclose(whole.reference, pieces.reference, atol=1e-5)
    # Δ replays carry the batch-size-dependent float rounding of the full steps forward: 6e-5 at most here
    assert torch.allclose(whole.generate(plan), pieces.generate(plan), atol=1e-4)
    assert pieces.evaluate(plan).metrics["psnr"] == pytest.approx(whole.evaluate(plan).metrics["psnr"], abs=0.05)


# --- pipeline folders -----------------------------------------------------------------------------------
def test_a_saved_dit_pipeline_folder_is_a_model(dit_folder):
    profile = load_profile(dit_folder)
    assert profile.pipeline == "DiTPipeline" and profile.num_blocks == 28 and profile.source == str(dit_folder)
    assert (profile.steps, profile.guidance_scale) == (50, 4.0)  # DiTPipeline's own defaults
    assert profile.resolution == 16 and len(profile.conditions) == 10 and profile.conditions[1] == 100
    cost = profile.require_cost()  # counted on first use
    assert cost.num_blocks == 28 and cost.blocks[0] > 0


@pytest.mark.slow
def test_search_and_apply_on_a_pipeline_folder(capsys, dit_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "s"
    code, stdout, err = run_cli(capsys, "search", "--model", str(dit_folder), "--budget", "1.6x", "--trials", "4",
                                "--calib", "2", "--out", str(out), "--device", "cpu")
    assert code == 0, err
    schedule = autodelta.load_schedule(out / "schedule.yaml")
    assert schedule.model == "my-dit" and schedule.steps == 50 and schedule.cost["speedup"] >= 1.6
    assert schedule.source == "my-dit" and str(tmp_path) not in (out / "schedule.yaml").read_text()
    code, _, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "unknown model 'my-dit'", "--model")
    code, stdout, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--model", str(dit_folder), "--compare",
                                "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "PSNR to full" in stdout and (tmp_path / "a" / "compare.png").exists()


def test_profile_of_a_folder_is_written_and_loads(capsys, dit_folder, tmp_path):
    target = tmp_path / "my.yaml"
    code, _, err = run_cli(capsys, "profile", "--model", str(dit_folder), "--write", "--repeats", "1")
    assert_one_line_error(code, err, "--out my.yaml")
    code, _, err = run_cli(capsys, "profile", "--model", str(dit_folder), "--out", str(target), "--repeats", "1",
                           "--device", "cpu")
    assert code == 0, err
    written = load_profile(target)
    assert written.cost_model() == load_profile(dit_folder).require_cost()
    assert written.pretrained == str(dit_folder) and written.steps == 50


def test_pixart_sigma_folder_runs_through_the_pixart_adapter(sigma_folder):
    profile = load_profile(sigma_folder)
    assert profile.pipeline == "PixArtSigmaPipeline" and profile.text_conditioned
    embeddings = profile.adapter.conditioning()
    assert embeddings.embeds.shape[1:] == (300, 32)  # Σ's 300-token T5 length, the transformer's width
    pipe = profile.load_pipeline()
    profile.steps = 6
    conditions, seeds = [0, 2], [3, 4]
    with torch.no_grad():
        expected = torch.from_numpy(profile.adapter.call(pipe, conditions, seeds, 6, profile.guidance_scale).images)
    sampler = profile.adapter.sampler(pipe, conditions, seeds)
    state = sampler.initial_state()
    while state.step < 5:
        state = sampler.step(state)
    assert torch.equal(sampler.decode(state), expected.permute(0, 3, 1, 2))  # the loop is Σ's, bit for bit
    plan = [None, CachedRange(0, 20), None, CachedRange(8, 20), None, CachedRange(0, 28)]
    with autodelta.apply(pipe, make_schedule(plan, model=profile.name)) as handle, torch.no_grad():
        profile.adapter.call(pipe, conditions, seeds, 6, profile.guidance_scale)
    assert handle.stats.blocks_skipped == 20 + 20 + 28


# --- torch.compile ----------------------------------------------------------------------------------------
def test_compiled_blocks_match_eager_and_still_skip(profile):
    import torch._dynamo

    transformer = profile.build_transformer()
    inputs = [dict(profile.example_inputs(batch=2, seed=0), timestep=torch.full((2,), t)) for t in (900, 700, 500)]
    plan = [None, CachedRange(4, 20), CachedRange(0, 28)]
    with torch.no_grad():
        with autodelta.apply(transformer, make_schedule(plan)) as eager:
            expected = [transformer(**x).sample for x in inputs]
        torch._dynamo.reset()
        with autodelta.apply(transformer, make_schedule(plan), compile=True) as compiled:
            got = [transformer(**x).sample for x in inputs]
            frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            again = [transformer(**x).sample for x in inputs]  # a second generation compiles nothing new
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(expected, got, strict=True))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got, again, strict=True))
    assert compiled.stats.blocks_skipped == 2 * eager.stats.blocks_skipped == 2 * (20 + 28)
    block = transformer.transformer_blocks[0]
    assert getattr(block.forward, "__func__", None) is type(block).forward  # removal restores the eager forward


def test_apply_compile_from_the_cli_compares_like_with_like(capsys, tmp_path):
    from autodelta.plan.cost import paper_rule, parse_budget

    profile = load_profile("dit-test")
    plan = paper_rule(profile.cost_model(), 20, parse_budget("1.6x")).plan(20, 28)
    path = tmp_path / "paper.yaml"
    make_schedule(list(plan)).save(path)
    code, out, err = run_cli(capsys, "apply", str(path), "--compare", "--compile", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "blocks compiled" in out and "compiling the blocks" in out
    code, eager, err = run_cli(capsys, "apply", str(path), "--compare", "--out", str(tmp_path / "e"))
    assert code == 0, err

    def psnr(text: str) -> float:
        return float(text.split("PSNR to full:")[1].split("dB")[0])

    assert psnr(out) == pytest.approx(psnr(eager), abs=0.05)  # compiled schedule vs compiled full = eager vs eager


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_step_sampler_draws_the_pipelines_noise_in_half_precision(dtype, monkeypatch):
    """DiTPipeline draws noise in the model's dtype; a sampler that rounds fp32 noise scores other images on
    machines whose half-precision randn differs (seen on a GPU host: 15 dB apart)."""
    profile = load_profile("tiny-dit")
    pipe = profile.load_pipeline(dtype=dtype)
    first: list[torch.Tensor] = []
    handle = pipe.transformer.register_forward_pre_hook(lambda _m, args: first.append(args[0].clone()) if not first else None)
    real_randn = torch.randn

    def randn(*args, **kwargs):  # a half-precision randn unlike rounded fp32 (as on that host)
        out = real_randn(*args, **{**kwargs, "dtype": torch.float32})
        return (out.flip(-1) if kwargs.get("dtype") in (torch.float16, torch.bfloat16) else out).to(kwargs.get("dtype"))

    monkeypatch.setattr(torch, "randn", randn)
    try:
        profile.adapter.call(pipe, [3, 7], [11, 12], steps=1, guidance=profile.guidance_scale)
        sampler = profile.adapter.sampler(pipe, [3, 7], [11, 12])
    finally:
        handle.remove()
    assert sampler.latents0.dtype == dtype
    assert torch.equal(torch.cat([sampler.latents0] * 2), first[0])
