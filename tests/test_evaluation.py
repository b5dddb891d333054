from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import CachedRange


@pytest.fixture()
def calib(profile):
    return CalibrationSet.from_profile(profile, 4)


def _calls(transformer):
    counter = []
    handle = transformer.register_forward_pre_hook(lambda m, a, k: counter.append(1), with_kwargs=True)
    return counter, handle


def test_sampler_reproduces_the_pipeline_bit_for_bit(profile, pipe, calib):
    evaluator = DiffusionEvaluator(profile, pipe, calib)
    generators = [torch.Generator().manual_seed(s) for s in calib.seeds]
    images = pipe(class_labels=list(calib.labels), generator=generators, num_inference_steps=profile.steps,
                  output_type="np", guidance_scale=profile.guidance_scale).images
    assert np.array_equal(images, evaluator.reference.permute(0, 2, 3, 1).numpy())


def test_all_full_plan_scores_exactly_the_reference(profile, pipe, calib):
    evaluator = DiffusionEvaluator(profile, pipe, calib)
    result = evaluator.evaluate([None] * profile.steps)
    assert result.metrics["psnr"] == math.inf and result.metrics["mse"] == 0.0
    assert result.speedup == pytest.approx(1.0)


def test_reference_cache_hits_misses_and_recovers(profile, pipe, calib, tmp_path, caplog):
    DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    files = list(tmp_path.glob("reference-*.pt"))
    assert len(files) == 1
    calls, handle = _calls(pipe.transformer)
    hit = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    assert calls == []  # a hit does not call the transformer
    other = DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 3), cache_dir=tmp_path)
    assert len(calls) == profile.steps and len(list(tmp_path.glob("reference-*.pt"))) == 2
    files[0].write_bytes(b"not a torch file")  # corrupt: detected, said, regenerated
    calls.clear()
    again = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    assert len(calls) == profile.steps and "is corrupt" in caplog.text
    assert torch.equal(again.reference, hit.reference)
    stale = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path, weights_id="other-weights")
    assert stale.reference_path() != hit.reference_path()
    torch.save({"key": {"model": "else"}, "images": hit.reference}, hit.reference_path())  # other weights
    calls.clear()
    DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    assert len(calls) == profile.steps and "made for other settings (" in caplog.text
    handle.remove()
    assert other.reference.shape[0] == 3


def test_prefix_reuse_is_bit_identical_and_saves_blocks(profile, pipe, calib):
    plan = list(paper_rule(profile.cost_model(), 20, parse_budget("1.6x")).plan(20, 28))
    variants = [plan, plan[:15] + [CachedRange(0, 28)] + plan[16:], plan[:17] + [CachedRange(3, 5)] + plan[18:]]
    reuse = DiffusionEvaluator(profile, pipe, calib)
    plain = DiffusionEvaluator(profile, pipe, calib, prefix_reuse=False)
    for v in variants:
        assert reuse.evaluate(v).metrics == plain.evaluate(v).metrics
    assert plain.reuse_ratio == 1.0
    assert reuse.reuse_ratio > 1.5
    assert reuse.blocks_naive == plain.blocks_computed


def test_calibration_size_is_checked(profile):
    with pytest.raises(AutodeltaError, match="calibration size 0 is out of range for dit-test: use 1..10"):
        CalibrationSet.from_profile(profile, 0)
    with pytest.raises(AutodeltaError, match="use 1..10"):
        CalibrationSet.from_profile(profile, 11)


def test_domain_metric_needs_a_judge(profile, pipe, calib):
    with pytest.raises(AutodeltaError, match="needs a judge"):
        DiffusionEvaluator(profile, pipe, calib, metrics=["classifier_accuracy"])
