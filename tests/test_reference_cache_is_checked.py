"""The reference cache is checked field by field: a file that does not fit (images stored as integers, a trajectory
whose width is not what its projections give) is regenerated with a warning, and a folder where the file should be
sends the reference beside it, never into a discarded computation."""

from __future__ import annotations

import logging

import torch

from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.plan.schedule import CachedRange

SPANS = [CachedRange(0, 28), CachedRange(3, 25)]


def _evaluator(profile, pipe, tmp_path) -> DiffusionEvaluator:
    return DiffusionEvaluator(profile, pipe, CalibrationSet.from_profile(profile, 2), record=SPANS, cache_dir=tmp_path)


def _rewrite(path, change) -> None:
    doc = torch.load(path, weights_only=True)
    change(doc)
    torch.save(doc, path)


def test_images_stored_as_integers_are_regenerated_with_a_warning(profile, pipe, tmp_path, caplog):
    first = _evaluator(profile, pipe, tmp_path)
    _rewrite(first.reference_path(), lambda doc: doc.update(images=(doc["images"] * 255).to(torch.uint8)))
    with caplog.at_level(logging.WARNING):
        again = _evaluator(profile, pipe, tmp_path)
    assert "torch.uint8, not floating point" in caplog.text and again.meter.spent.get("reference") == 2
    assert torch.equal(again.reference, first.reference)


def test_a_trajectory_narrower_than_its_projections_is_regenerated(profile, pipe, tmp_path, caplog):
    first = _evaluator(profile, pipe, tmp_path)

    def narrow(doc):
        doc["trajectory"]["deltas"][0] = doc["trajectory"]["deltas"][0][:, :, :-8].clone()

    _rewrite(first.reference_path(), narrow)
    with caplog.at_level(logging.WARNING):
        again = _evaluator(profile, pipe, tmp_path)
    assert "numbers per item, its projections" in caplog.text and again.meter.spent.get("reference") == 2
    assert torch.equal(again.trajectory.deltas[SPANS[0]], first.trajectory.deltas[SPANS[0]])


def test_a_folder_at_the_cache_path_sends_the_reference_beside_it(profile, pipe, tmp_path, caplog):
    key_path = _evaluator(profile, pipe, tmp_path / "warm").reference_path()  # the name this key's file gets
    (tmp_path / key_path.name).mkdir()
    with caplog.at_level(logging.WARNING):
        first = _evaluator(profile, pipe, tmp_path)
    beside = first.reference_path()
    assert beside.is_file() and beside.name != key_path.name and "is not a file" in caplog.text
    again = _evaluator(profile, pipe, tmp_path)
    assert again.meter.total == 0 and torch.equal(again.reference, first.reference)
