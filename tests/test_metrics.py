from __future__ import annotations

import math

import pytest
import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.metrics import METRICS, aggregate, average_gradient, get_metric, high_frequency_energy


def _ref():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 16, 16, generator=g) * 0.8 + 0.1


def test_identical_images_give_inf_psnr_and_perfect_scores():
    ref = _ref()
    assert aggregate("psnr", METRICS["psnr"].per_item(ref, ref)) == math.inf
    assert float(METRICS["ssim"].per_item(ref, ref).mean()) == pytest.approx(1.0)
    for name in ("mse", "sobel_rel_err", "dft_hf_rel_err"):
        assert float(METRICS[name].per_item(ref, ref).max()) == 0.0


def test_known_noise_gives_known_psnr():
    ref = _ref()
    shifted = ref + 0.1  # MSE 0.01 -> 20 dB exactly
    values = METRICS["psnr"].per_item(shifted, ref)
    assert values.tolist() == pytest.approx([20.0] * 4, abs=1e-4)
    assert aggregate("psnr", values) == pytest.approx(20.0, abs=1e-4)
    mixed = torch.cat([ref[:2], shifted[2:]])  # two identical items do not make the mean inf
    assert aggregate("psnr", METRICS["psnr"].per_item(mixed, ref)) == pytest.approx(23.0103, abs=1e-3)


def test_outline_and_detail_measures_respond_to_what_they_measure():
    flat = torch.full((1, 1, 16, 16), 0.5)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()[None, None]
    assert float(average_gradient(flat)) == pytest.approx(0.0, abs=1e-6)
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 8:] = 1.0
    assert float(average_gradient(edge)) == pytest.approx(2 * 4 * 16 / 256)  # |Sobel| = 4 on two columns
    assert float(high_frequency_energy(checker)) == pytest.approx(0.5)  # DC and Nyquist share the energy
    assert float(high_frequency_energy(flat)) == pytest.approx(0.0, abs=1e-9)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(AutodeltaError, match="unknown metric 'lpips'; known metrics: psnr, ssim"):
        get_metric("lpips")
