"""Δ forecasting: the runtime's extrapolation, the schedule format, prefix reuse and the searched space."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import autodelta
from autodelta.errors import ScheduleError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.models.loading import load_profile
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.plan.schedule import CachedRange, cache_needs, canonical, load_schedule, validate_plan
from autodelta.search.families.explicit import plan_values
from autodelta.search.samplers.moves import neighbours
from autodelta.search.spaces import SpaceError, load_space
from tests.conftest import make_schedule
from tests.helpers import Recorder, delta_step_by_hand

W, WF = CachedRange(0, 28), CachedRange(0, 28, 1)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_forecast_step_extrapolates_the_last_two_full_steps_deltas():
    """Plan F d F D (full steps 0 and 2): step 3 uses Δ_2 + ½ (Δ_2 − Δ_0), computed here by hand."""
    profile = load_profile("dit-test")
    transformer = profile.build_transformer()
    blocks = transformer.transformer_blocks
    calls = [dict(profile.example_inputs(batch=2, seed=i), timestep=torch.full((2,), t))
             for i, t in enumerate((900, 700, 500, 300))]
    s, n = 4, 20
    rec = Recorder(blocks)
    with torch.no_grad():
        transformer(**calls[0])
        transformer(**calls[2])
    rec.close()
    d0 = rec.outputs[s + n - 1] - rec.inputs[s]
    d2 = rec.outputs[28 + s + n - 1] - rec.inputs[28 + s]
    delta = d2 + 0.5 * (d2 - d0)
    rec3 = Recorder(blocks)
    with torch.no_grad():
        transformer(**calls[3])
    rec3.close()
    h = delta_step_by_hand(blocks, rec3.inputs[0], rec3.kwargs[0], s, n, delta)
    schedule = make_schedule([None, CachedRange(s, n), None, CachedRange(s, n, 1)])
    with autodelta.apply(transformer, schedule) as handle:
        last = Recorder([blocks[27]])
        with torch.no_grad():
            for call in calls:
                transformer(**call)
        last.close()
        held = handle.stats.peak_cache_bytes
    torch.testing.assert_close(last.outputs[-1], h, rtol=1e-5, atol=1e-5)
    assert held == 2 * d0.nbytes  # the older Δ stays beside the latest one for the forecast


def test_schedule_format_2_round_trips_forecasts_and_format_1_files_still_load(tmp_path):
    plan = [None, W, None, WF, CachedRange(2, 20, 1), None]
    schedule = make_schedule(plan)
    schedule.save(tmp_path / "s.yaml")
    text = (tmp_path / "s.yaml").read_text()
    assert "format: autodelta/schedule@2" in text and "forecast:" in text
    assert load_schedule(tmp_path / "s.yaml").plan == tuple(plan)
    examples = sorted(EXAMPLES.glob("*.yaml"))
    old = [p for p in examples if "autodelta/schedule@1" in p.read_text()]
    assert len(old) >= 4  # the format-1 files shipped before forecasts, still loading as they are
    assert all(load_schedule(p).plan for p in examples)


def test_a_forecast_without_two_full_steps_before_it_is_refused_in_one_line_and_canonicalised():
    plan = [None, WF, None, WF]
    with pytest.raises(ScheduleError, match=r"plan\[1\] forecasts Δ but only one full step precedes it"):
        validate_plan(plan, 28)
    assert canonical(plan) == (None, W, None, WF)
    with pytest.raises(ScheduleError, match="order 2"):
        validate_plan([None, CachedRange(0, 28, 2)], 28)


def test_cache_needs_record_ahead_for_forecasts_and_keep_only_what_is_forecast():
    plan = (None, W, None, WF, CachedRange(3, 4), None, W)
    first = cache_needs(plan, 0)
    assert first.record == {W} and first.keep == frozenset()
    second = cache_needs(plan, 2)
    assert second.record == {W, CachedRange(3, 4)} and second.keep == {W}
    # a replay at step 1 records W at step 0 anyway; a forecast after step 2 also needs it from step 0
    assert cache_needs((None, CachedRange(3, 4), None, WF), 0).record == {CachedRange(3, 4), W}


def test_prefix_reuse_gives_the_images_of_a_fresh_run_for_forecast_plans(profile, pipe):
    """Plans that share prefixes but keep different Δs must never restore each other's states."""
    calib = CalibrationSet.from_profile(profile, 2)
    reused = DiffusionEvaluator(profile, pipe, calib)
    fresh = DiffusionEvaluator(profile, pipe, calib, prefix_reuse=False)
    plans = [
        (None, W, None, W, None, WF) + (None,) * 14,
        (None, W, None, WF, W, None, WF) + (None,) * 13,  # same prefix to step 2; step 2 keeps Δ_0 here
        (None, W, None, W, None, WF, WF, None, W) + (None,) * 11,
        (None, W, None, WF, WF, None, CachedRange(3, 20, 1)) + (None,) * 13,
    ]
    for plan in plans:
        assert torch.equal(reused.generate(plan), fresh.generate(plan))
    assert reused.reuse_ratio > 1.0


def test_spaces_name_forecast_choices_and_moves_toggle_them(tmp_path):
    path = tmp_path / "fc.yaml"
    path.write_text("family: explicit\nranges:\n  whole: [0, N_b]\n  rear: [4, N_b - 4]\nforecast: [whole]\n"
                    "params:\n  step: {int: [0, R]}\n")
    space = load_space(path, 20, 28)
    assert space.range_set(28) == (W, CachedRange(4, 24), WF)
    values = {f"step_{i}": 3 if i % 2 else 0 for i in range(1, 20)}
    plan = space.plan(values, 20, 28)
    assert plan[1] == W and plan[3] == WF  # step 1 has one full step before it: it replays
    values_back = plan_values(plan, space.range_set(28))
    assert values_back is not None and space.plan(values_back, 20, 28) == plan  # the values round-trip
    assert values_back["step_3"] == 3  # WF is the third choice
    cost = CostModel.seeded(28)
    budget = parse_budget("1.6x")
    hood = neighbours(plan, space.range_set(28), lambda p: budget.allows(cost.speedup(p)))
    assert any(p[3] == W and p[4:] == plan[4:] for p in hood)  # forecast → replay is one move
    for p in hood:
        assert validate_plan(p, 28) == tuple(p)  # raises on a broken plan
        assert budget.allows(cost.speedup(p)) and p != tuple(plan)
        assert all(s != WF or sum(t is None for t in p[:i]) >= 2 for i, s in enumerate(p))  # forecasts need two
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: explicit\nranges:\n  whole: [0, N_b]\nforecast: [front]\nparams:\n  step: {int: [0, R]}\n")
    with pytest.raises(SpaceError, match=r"'forecast' must list range names from \['whole'\]"):
        load_space(bad, 20, 28)
