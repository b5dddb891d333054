"""The shipped tiny-dit model, its classifier and the script that trains them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.evaluation.digits import DigitClassifier, accuracy, load_digits
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():
    return load_profile("tiny-dit")


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-dit-p2"])
def test_shipped_weights_and_classifier_generate_the_asked_digit(name):
    from safetensors.torch import load_file

    tiny = load_profile(name)
    classifier = DigitClassifier()
    classifier.load_state_dict(load_file(str(tiny.path.parent / tiny.classifier)))
    splits = load_digits(seed=int(tiny.document["quality_gate"].get("seed", 0)))
    assert accuracy(classifier, splits.test_images, splits.test_labels) >= 0.95
    assert (tiny.path.parent / tiny.weights).stat().st_size <= 12 * 2**20
    evaluator = DiffusionEvaluator(tiny, tiny.load_pipeline(), CalibrationSet.from_profile(tiny, 10),
                                   metrics=["classifier_accuracy"])
    assert evaluator.calibration.labels == tuple(range(10))
    assert accuracy(classifier, evaluator.reference, torch.arange(10)) >= 0.9


def test_skipping_more_blocks_scores_worse_on_tiny_dit(tiny):
    evaluator = DiffusionEvaluator(tiny, tiny.load_pipeline(), CalibrationSet.from_profile(tiny, 10),
                                   metrics=["psnr", "ssim"])
    few = [None if i % 2 == 0 else CachedRange(20, 8) for i in range(tiny.steps)]
    many = [None if i % 2 == 0 else CachedRange(4, 24) for i in range(tiny.steps)]
    a, b = evaluator.evaluate(few), evaluator.evaluate(many)
    assert a.speedup < b.speedup
    assert a.metrics["psnr"] > b.metrics["psnr"] and a.metrics["ssim"] > b.metrics["ssim"]


@pytest.mark.slow
def test_training_script_runs_on_a_tiny_setting(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_tiny_dit.py"), "--quick", "--out-dir",
                           str(tmp_path), "--name", "smoke"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("smoke.safetensors", "smoke-classifier.safetensors", "smoke.yaml", "smoke-training.png"):
        assert (tmp_path / name).exists(), name
    profile = load_profile(tmp_path / "smoke.yaml")
    assert profile.quality_gate["samples"] == 20 and profile.cost_model().num_blocks == 28
    assert "quality gate:" in proc.stdout
