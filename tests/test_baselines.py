"""Baselines: plans at a budget, hooks tuned to it, and the harness that counts what really ran."""

from __future__ import annotations

import pytest
import torch

from autodelta.baselines.deepcache import DeepCache
from autodelta.baselines.fora import Fora
from autodelta.baselines.harness import Comparison, ItemwiseRunner, plan_installer
from autodelta.baselines.paper import Paper
from autodelta.baselines.registry import BASELINES, get_baseline
from autodelta.errors import BudgetError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.plan.schedule import CachedRange
from tests.helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize("budget", ["1.3x", "1.6x", "2.0x"])
def test_schedule_baselines_meet_the_budget_closely(budget):
    cost, b = CostModel.uniform(28, pre=0.01, post=0.01), parse_budget(budget)
    for baseline in (Paper(), Fora(), DeepCache()):
        plan = baseline.plan(cost, 20, b)
        share = cost.plan_macs(plan) / (cost.full_macs(20) / b.speedup)  # MACs relative to the budget's
        assert plan[0] is None and 0.9 < share <= 1.03, baseline.name  # equal MACs (±3%) or the nearest above


def test_fora_replays_the_whole_stack_and_deepcache_the_middle():
    cost, b = CostModel.uniform(28), parse_budget("1.6x")
    fora = Fora().plan(cost, 20, b)
    assert {s for s in fora if s is not None} == {CachedRange(0, 28)}
    assert sum(s is None for s in fora) == 12  # 20/12 = 1.667x; 13 full steps would give 1.538x
    deep = DeepCache().plan(cost, 20, b)
    ranges = {s for s in deep if s is not None}
    assert len(ranges) == 1
    (middle,) = ranges
    assert middle.start >= 1 and middle.stop <= 27 and abs(middle.start - (28 - middle.stop)) <= 1


def test_unreachable_budget_says_the_maximum(capsys):
    cost = CostModel.uniform(28)
    with pytest.raises(BudgetError, match=r"maximum here is \d+\.\d+x"):
        DeepCache().plan(cost, 4, parse_budget("3.9x"))
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "deepcache", "--model", "dit-test", "--budget", "25x")
    assert_one_line_error(code, err, "deepcache cannot reach budget 25x", "maximum")


def test_unknown_baseline_lists_the_known_ones(capsys):
    with pytest.raises(BudgetError):
        get_baseline("teacache")
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "teacache", "--model", "dit-test")
    assert_one_line_error(code, err, "unknown baseline 'teacache'", *BASELINES)
    code, _, err = run_cli(capsys, "evaluate", "--model", "dit-test")
    assert_one_line_error(code, err, "either a schedule file or --baseline")


@pytest.fixture()
def runner(profile):
    items = CalibrationSet.from_profile(profile, 3)
    return ItemwiseRunner(profile, profile.load_pipeline(), items, profile.cost_model())


@pytest.mark.slow
def test_harness_counts_exactly_what_a_plan_runs(profile, runner):
    full = runner.run()
    assert full.speedup == pytest.approx(1.0) and runner.counts == [3 * 20] * 28
    plan = Paper().plan(runner.cost, 20, parse_budget("1.6x"))
    run = runner.run(plan_installer(plan, profile, runner.cost))
    assert run.speedup == pytest.approx(runner.cost.speedup(plan), rel=1e-12)
    assert not torch.equal(run.images, full.images)


@pytest.mark.slow
def test_first_block_cache_is_tuned_to_the_budget_and_removed_cleanly(profile, runner):
    from autodelta.baselines.fbcache import FirstBlockCache

    full = runner.run()
    never = runner.run(FirstBlockCache().installer(0.0))  # threshold 0: every step computes every block
    assert never.speedup == pytest.approx(1.0) and torch.equal(never.images, full.images)
    comparison = Comparison(profile, runner.pipe, runner.items, runner.cost, metrics=["psnr"],
                            calibration_items=CalibrationSet.from_profile(profile, 3))
    result = comparison.baseline("fbcache", parse_budget("1.3x"))
    assert 1.3 * 0.995 <= result.speedup < 1.3 * 1.15 and "threshold" in result.detail
    assert torch.equal(runner.run().images, full.images)  # hooks gone: full compute again


@pytest.mark.slow
def test_dbcache_runs_through_cache_dit(profile, runner):
    from autodelta.baselines.hooks import cache_dit_installer

    full = runner.run()
    cached = runner.run(cache_dit_installer(10.0))  # caches every step after its 8 warm-up steps
    # F8B0: 8 warm-up steps of 28 blocks, then only the first 8 blocks
    assert runner.counts[0] == 3 * 20 and runner.counts[27] == 3 * 8
    cost = runner.cost  # per item: 20 calls, blocks 0-7 on every call, blocks 8-27 on the 8 warm-up calls only
    expected = cost.cfg_factor * (20 * (cost.pre + cost.post) + 20 * sum(cost.blocks[:8]) + 8 * sum(cost.blocks[8:]))
    assert cached.macs == pytest.approx(expected) and cached.speedup == pytest.approx(cost.full_macs(20) / expected)
    assert cached.speedup > 1.5
    assert torch.equal(runner.run().images, full.images)


@pytest.mark.slow
def test_evaluate_baseline_end_to_end(capsys, tmp_path):
    code, out, err = run_cli(capsys, "evaluate", "--baseline", "fora", "--model", "dit-test", "--budget", "2x",
                             "--calib", "2", "--out", str(tmp_path / "e"))
    assert code == 0, err
    assert "fora" in out and "psnr" in out and "MACs speed-up (measured)" in out
    assert (tmp_path / "e" / "evaluate.png").exists()


def test_greedy_replays_the_cheapest_step_each_round_until_the_budget():
    from autodelta.evaluation.synthetic import SyntheticEvaluator
    from autodelta.search.samplers.greedy import greedy_plan

    evaluator = SyntheticEvaluator(CostModel.uniform(28), 12)
    budget = parse_budget("1.5x")
    plan = greedy_plan(evaluator, budget)
    whole = CachedRange(0, 28)
    assert plan[0] is None and set(plan) <= {None, whole}
    assert budget.allows(evaluator.cost.speedup(plan))
    replayed = sum(s is not None for s in plan)
    one_fewer = [None] + [whole] * (replayed - 1) + [None] * (12 - replayed)  # equal blocks: only the count matters
    assert not budget.allows(evaluator.cost.speedup(one_fewer))  # it stopped as soon as the budget was met
    single = {i: evaluator.evaluate([None] * i + [whole] + [None] * (11 - i)).metrics["psnr"] for i in range(1, 12)}
    first = max(single, key=lambda i: (single[i], -i))
    assert plan[first] == whole  # round one took the step whose replay costs least


@pytest.mark.slow
def test_greedy_from_the_cli(capsys, tmp_path):
    code, out, err = run_cli(capsys, "evaluate", "--baseline", "greedy", "--model", "dit-test", "--budget", "1.3x",
                             "--calib", "2", "--heldout", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert "greedy (" in out and "MACs speed-up (measured)" in out
    speed = float(out.split("greedy (")[1].split("):")[1].split("x")[0])
    assert speed >= 1.3


@pytest.mark.slow
def test_pab_skips_attention_inside_blocks_and_the_harness_counts_it(profile, runner):
    """PAB leaves every block running; the counters on the attention modules see the skipped calls."""
    from autodelta.baselines.pab import PyramidAttentionBroadcast

    run = runner.run(PyramidAttentionBroadcast().installer((3, (0, 1000))))
    counts = runner.module_counts
    assert runner.counts == [3 * 20] * 28  # every block ran on every step
    attention = [counts[("module", i, "attn1")] for i in range(28)]
    assert all(0 < a < 3 * 20 for a in attention)
    ff = [counts[("module", i, "ff")] for i in range(28)]
    assert ff == [3 * 20] * 28
    cost, macs = runner.cost, runner.module_macs
    per_item = 20 * (cost.pre + cost.post) + sum(
        20 * (cost.blocks[i] - sum(macs[i].values())) + (attention[i] / 3) * macs[i]["attn1"] + 20 * macs[i]["ff"]
        for i in range(28))
    assert run.macs == pytest.approx(cost.cfg_factor * per_item)
    assert 1.0 < run.speedup < 1.6  # attention is about a third of a block here
    assert torch.equal(runner.run().images, runner.run().images)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["taylorseer", "magcache", "seacache", "dbcache-taylorseer"])
def test_run_time_methods_are_tuned_on_calibration_items_to_the_budget(profile, name):
    """Each method's own knob meets the budget on the calibration items; the scored items are others."""
    from autodelta.baselines.tuning import tune

    pipe = profile.load_pipeline()
    calibration = ItemwiseRunner(profile, pipe, CalibrationSet.from_profile(profile, 2), profile.cost_model())
    budget = parse_budget("1.6x")
    tuned = tune(BASELINES[name], calibration, budget, profile.steps)
    assert budget.reached(tuned.speedup) and tuned.speedup < 1.6 * 1.35
    comparison = Comparison(profile, pipe, CalibrationSet.from_profile(profile, 2, heldout=True), profile.cost_model(),
                            metrics=["psnr"], calibration_items=calibration.items)
    result = comparison.baseline(name, budget)
    assert budget.reached(result.speedup) and result.metrics["psnr"] < float("inf")


def test_magcache_calibrates_one_ratio_per_step(profile):
    from autodelta.baselines.magcache import MagCache

    runner = ItemwiseRunner(profile, profile.load_pipeline(), CalibrationSet.from_profile(profile, 2),
                            profile.cost_model())
    steps, ratios = MagCache().calibrate(runner, profile.steps)
    assert steps == profile.steps and len(ratios) == profile.steps
    assert all(0.5 < r < 1.5 for r in ratios)  # magnitude ratios of consecutive residuals


def test_a_budget_beyond_a_methods_reach_names_its_maximum(capsys, profile):
    comparison = Comparison(profile, profile.load_pipeline(), CalibrationSet.from_profile(profile, 1, heldout=True),
                            profile.cost_model(), metrics=["psnr"], calibration_items=CalibrationSet.from_profile(profile, 1))
    with pytest.raises(BudgetError, match=r"pab cannot reach budget 3x: its maximum here is \d+\.\d+x"):
        comparison.baseline("pab", parse_budget("3x"))


@pytest.mark.slow
def test_extra_memory_on_cpu_is_the_delta_cache_a_plan_holds(profile):
    """The CPU census (autodelta.evaluation.held_memory) sees one Δ per replayed range and two per forecast one."""
    items = CalibrationSet.from_profile(profile, 1)
    comparison = Comparison(profile, profile.load_pipeline(), items, profile.cost_model(), metrics=["psnr"],
                            memory=True)
    config = comparison.runner.pipe.transformer.config
    tokens = (config.sample_size // config.patch_size) ** 2
    delta = 2 * tokens * config.num_attention_heads * config.attention_head_dim * 4  # [CFG 2, tokens, hidden] fp32
    full = comparison.plan("all full", [None] * 20)
    replay = comparison.plan("replay", [None, None] + [CachedRange(0, 28)] * 18)
    forecast = comparison.plan("forecast", [None, None, None] + [CachedRange(0, 28, 1)] * 17)
    assert comparison.full().extra_bytes == 0 and full.extra_bytes is not None and full.extra_bytes < delta
    assert replay.extra_bytes is not None and forecast.extra_bytes is not None
    assert delta <= replay.extra_bytes < 2 * delta
    assert delta <= forecast.extra_bytes - replay.extra_bytes < 2 * delta
    again = comparison.plan("replay", [None, None] + [CachedRange(0, 28)] * 18)  # more results alive now: no drift
    assert again.extra_bytes == replay.extra_bytes
