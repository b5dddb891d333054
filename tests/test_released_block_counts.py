"""Every family at its released block count and stream layout: the reference records the trajectory of every
span of the default space, and a plan replays every span once (no shape error, finite images, each span's Δ)."""

from __future__ import annotations

import pytest
import torch

import autodelta
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.evaluation.trajectory import TrajectoryRecorder
from autodelta.models.loading import load_profile
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import CachedRange, Schedule
from autodelta.search.spaces import load_space
from tests import factories

STEPS = 6


def _spans(num_blocks: int) -> list[CachedRange]:
    return list(dict.fromkeys(r.span for r in load_space("explicit", STEPS, num_blocks).range_set(num_blocks)))


def _plan(spans: list[CachedRange]) -> tuple:
    """Two full steps, each followed by replays of two spans: every span of the default space runs once."""
    assert len(spans) == 4
    return (None, spans[0], spans[1], None, spans[2], spans[3])


FOLDERS = {
    "flux-1 (19 + 38)": (lambda d: factories.flux_folder(d / "flux"), 57),
    "sd3.5-medium (24, 13 dual attention)": (lambda d: factories.sd3_folder(d / "sd35m", 24, 13), 24),
    "sd3.5-large (38)": (lambda d: factories.sd3_folder(d / "sd35l", 38), 38),
    "qwen-image (60)": (lambda d: factories.qwen_image_folder(d / "qwen"), 60),
}


def _check(profile, pipe, num_blocks: int, tmp_path, resolution: int | None = None) -> DiffusionEvaluator:
    profile.steps = STEPS
    spans = _spans(num_blocks)
    assert any(s.stop == num_blocks for s in spans) and any(s.stop < num_blocks for s in spans)
    evaluator = DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 1), cost=CostModel.uniform(num_blocks),
                                   record=spans, resolution=resolution, cache_dir=tmp_path / "cache")
    trajectory = evaluator.trajectory
    assert trajectory is not None and set(trajectory.spans) == set(spans)
    for span in spans:
        deltas = trajectory.deltas[span]
        assert deltas.shape[:2] == (STEPS, 1) and bool(torch.isfinite(deltas).all()) and float(deltas.abs().sum()) > 0
    images = evaluator.generate(_plan(spans))
    assert bool(torch.isfinite(images).all()) and not torch.equal(images, evaluator.reference)
    again = DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 1), cost=CostModel.uniform(num_blocks),
                               record=spans, resolution=resolution, cache_dir=tmp_path / "cache")
    assert again.meter.total == 0 and all(torch.equal(again.trajectory.deltas[s], trajectory.deltas[s]) for s in spans)
    return evaluator


@pytest.mark.parametrize("name", ["dit-test", "pixart-test"])
def test_dit_and_pixart_at_28_blocks_record_and_replay_every_span(name, tmp_path):
    profile = load_profile(name)
    assert profile.num_blocks == 28
    _check(profile, profile.load_pipeline(), 28, tmp_path)


@pytest.mark.parametrize("family", list(FOLDERS))
def test_pipeline_folders_at_released_block_counts_record_and_replay_every_span(family, tmp_path):
    build, num_blocks = FOLDERS[family]
    profile = load_profile(build(tmp_path))
    assert profile.num_blocks == num_blocks
    evaluator = _check(profile, profile.load_pipeline(), num_blocks, tmp_path, resolution=16)
    if "sd3" in family:  # the last block drops the text stream: spans ending there hold image tokens only
        spans = evaluator.trajectory.spans
        widths = {s: evaluator.trajectory.deltas[s].shape[2] for s in spans}
        assert len({widths[s] for s in spans if s.stop == num_blocks}) == 1
        assert min(widths[s] for s in spans if s.stop < num_blocks) > max(widths[s] for s in spans if s.stop == num_blocks)


def test_a_bare_wan_transformer_at_30_blocks_records_and_replays_every_span():
    transformer = factories.wan_transformer(30)
    spans = _spans(30)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 4, 3, 8, 8, generator=gen)
    text = torch.randn(1, 5, 16, generator=gen)
    recorder = TrajectoryRecorder(spans, STEPS, 0, 1)
    plan = _plan(spans)
    schedule = Schedule(model="wan", num_blocks=30, scheduler="UniPCMultistepScheduler", steps=STEPS, plan=plan)
    with autodelta.apply(transformer, schedule, observer=recorder) as handle, torch.no_grad():
        for t in range(STEPS):
            out = transformer(hidden_states=video, timestep=torch.tensor([900 - 100 * t]), encoder_hidden_states=text,
                              return_dict=False)[0]
            assert out.shape == video.shape and bool(torch.isfinite(out).all())
    assert handle.stats.blocks_skipped == sum(s.length for s in plan if s is not None)
    deltas: dict = {}
    recorder.collect(deltas, 1)
    assert set(deltas) == set(spans)
    assert all(bool(deltas[s][0].abs().sum() > 0) and bool(deltas[s][3].abs().sum() > 0) for s in spans)
