"""PixArt-α and PixArt-LCM paths on the tiny ``pixart-test`` profile (28 blocks, random weights)."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.errors import ModelError, ScheduleError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.models.loading import load_profile
from autodelta.models.prompts import random_prompt_embeddings
from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import CachedRange
from tests.conftest import make_schedule
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def pixart():
    return load_profile("pixart-test")


def _lcm(pixart):
    """pixart-test as PixArt-LCM is set up: LCM scheduler, 4 steps, no guidance."""
    lcm = load_profile("pixart-test")
    lcm.scheduler, lcm.steps, lcm.guidance_scale = "LCMScheduler", 4, 0.0
    return lcm


def _sample(profile, pipe, conditions, seeds, plan=None):
    sampler = profile.adapter.sampler(pipe, conditions, seeds)
    schedule = make_schedule(plan or [None] * profile.steps, model=profile.name, scheduler=profile.scheduler)
    with autodelta.apply(sampler.transformer, schedule) as handle:
        state = sampler.initial_state()
        while state.step < profile.steps - 1:
            state = sampler.step(state)
    return sampler.decode(state), handle.stats


@pytest.mark.parametrize("variant", ["alpha", "lcm"])
def test_sampler_and_all_full_plan_are_bit_identical_to_the_pipeline(pixart, variant):
    profile = pixart if variant == "alpha" else _lcm(pixart)
    pipe = profile.load_pipeline()
    conditions, seeds = [0, 3], [0, 7]
    with torch.no_grad():
        expected = profile.adapter.call(pipe, conditions, seeds, profile.steps, profile.guidance_scale).images
    expected = torch.from_numpy(expected).permute(0, 3, 1, 2)
    images, stats = _sample(profile, pipe, conditions, seeds)
    assert torch.equal(images, expected)
    assert stats.steps == profile.steps and stats.blocks_skipped == 0
    schedule = make_schedule([None] * profile.steps, model=profile.name, scheduler=profile.scheduler)
    with autodelta.apply(pipe, schedule):  # on the pipeline itself, CFG batched (alpha) or not (LCM)
        with torch.no_grad():
            patched = profile.adapter.call(pipe, conditions, seeds, profile.steps, profile.guidance_scale).images
    assert torch.equal(torch.from_numpy(patched).permute(0, 3, 1, 2), expected)


def test_lcm_four_steps_with_the_papers_rule(pixart):
    from autodelta.plan.cost import CostModel

    lcm = _lcm(pixart)
    params = paper_rule(CostModel.uniform(28), 4, parse_budget("1.12x"))
    assert (params.interval, params.cached_blocks) == (2, 6)  # docs/design.md §1: N = 2, N_c = 6 for 4-step LCM
    real = load_profile("pixart-lcm")  # its embedding costs 0.5% of a call: N_c = 6 gives 1.1193x, so 7
    real_params = paper_rule(real.cost_model(), 4, parse_budget("1.12x"))
    assert (real_params.interval, real_params.cached_blocks) == (2, 7)
    plan = list(params.plan(4, 28))
    assert plan[0] is None and plan[2] is None and plan[1] == CachedRange(22, 6) and plan[3] == CachedRange(0, 6)
    pipe = lcm.load_pipeline()
    full, _ = _sample(lcm, pipe, [1], [5])
    cached, stats = _sample(lcm, pipe, [1], [5], plan)
    assert stats.steps == 4 and stats.blocks_skipped == 12
    assert not torch.equal(full, cached) and (full - cached).abs().max() < 0.5
    with pytest.raises(ScheduleError, match="step 0 must be full"):
        make_schedule([CachedRange(0, 6), None, None, None], model=lcm.name)
    with pytest.raises(ScheduleError, match=r"outside \[0, 28\)"):
        make_schedule([None, CachedRange(25, 6), None, None], model=lcm.name)
    with pytest.raises(ScheduleError, match="runs 20 steps but the schedule has 4"):
        with autodelta.apply(pipe, make_schedule(plan, model=lcm.name)), torch.no_grad():
            lcm.adapter.call(pipe, [1], [5], 20, 0.0)


def test_evaluator_with_prompt_embeddings_and_prefix_reuse(pixart, tmp_path):
    pipe = pixart.load_pipeline()
    calibration = CalibrationSet.from_profile(pixart, 3)
    plan = [None if i % 2 == 0 else CachedRange(0, 14) for i in range(20)]
    other = plan[:10] + [None if i % 3 == 0 else CachedRange(7, 14) for i in range(10, 20)]
    reuse = DiffusionEvaluator(pixart, pipe, calibration, cache_dir=tmp_path)
    fresh = DiffusionEvaluator(pixart, pixart.load_pipeline(), calibration, cache_dir=tmp_path,
                               prefix_reuse=False)
    assert torch.equal(reuse.reference, fresh.reference)
    first, second = reuse.evaluate(plan), reuse.evaluate(other)
    assert reuse.blocks_computed < reuse.blocks_naive  # the shared first ten steps ran once
    assert first.metrics["psnr"] == fresh.evaluate(plan).metrics["psnr"]
    assert second.metrics["psnr"] == fresh.evaluate(other).metrics["psnr"]
    assert 5 < first.metrics["psnr"] < 100 and first.speedup > 1.2


def test_prompt_embeddings_of_the_wrong_width_are_refused(pixart, tmp_path, capsys):
    from safetensors.torch import save_file

    wrong = random_prompt_embeddings(2, 16, 64)
    path = tmp_path / "wide.safetensors"
    save_file({"prompt_embeds": wrong.embeds, "prompt_attention_mask": wrong.mask}, str(path))
    with pytest.raises(ModelError, match="width 64 but pixart-test expects 32"):
        pixart.adapter.conditioning(path)
    code, _, err = run_cli(capsys, "search", "--model", "pixart-test", "--prompt-embeds", str(path),
                           "--out", str(tmp_path / "s"), "--trials", "1")
    assert_one_line_error(code, err, "width 64", "caption_channels")
    assert not (tmp_path / "s" / "study.db").exists()
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--prompt-embeds", str(path),
                           "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "class-conditional")
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--resolution", "512",
                           "--out", str(tmp_path / "s"))
    assert_one_line_error(code, err, "trained resolution")


def test_profiler_counts_pixart_blocks_and_micro_conditions(pixart):
    from autodelta.models.profiler import profile_macs

    measured = profile_macs(pixart.build_transformer(), pixart.example_inputs(batch=2))
    assert len(measured.blocks_macs) == 28 and len(set(measured.blocks_macs)) == 1
    assert measured.pre_macs > 0 and measured.post_macs > 0
    stored = pixart.cost_model()
    assert measured.blocks_macs[0] == pytest.approx(stored.blocks[0])
    big = load_profile("pixart-alpha")
    inputs = big.example_inputs(batch=2, resolution=256)
    assert inputs["hidden_states"].shape == (2, 4, 32, 32)
    assert inputs["added_cond_kwargs"]["resolution"].tolist() == [[256.0, 256.0]] * 2
    assert big.cost_model().call_full == pytest.approx(149.1e9, rel=1e-3)  # docs/design.md §8


def test_search_end_to_end_on_pixart_lcm(tmp_path, capsys, pixart):
    import yaml

    doc = dict(pixart.document, name="pixart-lcm-test", steps=4, guidance_scale=0.0,
               scheduler={"class": "LCMScheduler", "config": {"num_train_timesteps": 1000}})
    path = tmp_path / "pixart-lcm-test.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "search", "--model", str(path), "--budget", "1.12x", "--trials", "4",
                             "--calib", "1", "--space", "delta-dit", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "prompt embeddings from random embeddings" in out
    schedule = autodelta.load_schedule(tmp_path / "s" / "schedule.yaml")
    assert schedule.steps == 4 and schedule.plan[0] is None and schedule.cost["speedup"] >= 1.12


def test_apply_compare_on_pixart_from_the_cli(capsys, tmp_path, pixart):
    cost = pixart.cost_model()
    plan = list(paper_rule(cost, 20, parse_budget("1.6x")).plan(20, 28))
    path = tmp_path / "pixart.yaml"
    make_schedule(plan, model="pixart-test", cost=cost.summary(plan)).save(path)
    code, out, err = run_cli(capsys, "apply", str(path), "--compare", "--class-labels", "0,2",
                             "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "PSNR to full" in out and "prompt embeddings" not in err
    assert (tmp_path / "o" / "compare.png").exists()
    code, _, err = run_cli(capsys, "apply", str(path), "--resolution", "17", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "resolution 17")
