"""Quality metrics of generated images against the full-compute reference, by name.

Images are ``[N, C, H, W]`` tensors in [0, 1]. Each metric returns one value per item;
the search picks its objective by registered name (default ``psnr``). Besides PSNR and
SSIM (torchmetrics) it has the paper's two stage measures, computed on images: Sobel
average gradient (outline) and DFT high-frequency energy (detail), each as a relative
error to the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autodelta.errors import AutodeltaError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    per_item: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    description: str
    domain: bool = False  # needs the model's own judge (tiny-dit's digit classifier), not just the reference


def _psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return torch.stack([
        peak_signal_noise_ratio(x[None], r[None], data_range=1.0) for x, r in zip(images, reference)
    ])


def _ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(images.shape[-2:])
    kernel = max(3, min(11, side // 2 * 2 - 1))
    values = structural_similarity_index_measure(images, reference, data_range=1.0, kernel_size=kernel,
                                                 reduction="none")
    assert isinstance(values, torch.Tensor)
    return values


def _mse(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return ((images - reference) ** 2).flatten(1).mean(1)


def average_gradient(images: torch.Tensor) -> torch.Tensor:
    """Mean Sobel gradient magnitude per image: how much outline an image has."""
    import torch
    import torch.nn.functional as F

    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernel = torch.stack([kx, kx.T])[:, None].to(images)
    gray = images.mean(1, keepdim=True)
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernel)  # no false edges at the border
    return grad.pow(2).sum(1).sqrt().flatten(1).mean(1)


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Share of DFT energy above ``cutoff`` × the Nyquist radius: how much detail an image has."""
    import torch

    gray = images.mean(1)
    spectrum = torch.fft.fftshift(torch.fft.fft2(gray), dim=(-2, -1)).abs() ** 2
    h, w = gray.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    high = (yy**2 + xx**2).sqrt() > cutoff
    return spectrum[:, high].sum(1) / spectrum.flatten(1).sum(1).clamp_min(1e-12)


def _relative_error(measure: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def error(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        ref = measure(reference)
        return (measure(images) - ref).abs() / ref.abs().clamp_min(1e-8)
    return error


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("psnr", True, _psnr, "PSNR to full compute, dB (inf when identical)"),
        Metric("ssim", True, _ssim, "SSIM to full compute"),
        Metric("mse", False, _mse, "mean squared error to full compute, in the model's output space"),
        Metric("sobel_rel_err", False, _relative_error(average_gradient),
               "relative error of the Sobel average gradient (outline)"),
        Metric("dft_hf_rel_err", False, _relative_error(high_frequency_energy),
               "relative error of DFT high-frequency energy (detail)"),
        Metric("classifier_accuracy", True, None, "share of samples the digit classifier reads as the asked class",
               domain=True),
        Metric("frechet_distance", False, None, "Fréchet distance to real held-out digits in classifier features",
               domain=True),
    ]
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise AutodeltaError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def aggregate(name: str, values: torch.Tensor) -> float:
    """One number per metric: PSNR averages the MSE first (so one identical item is not inf)."""
    import torch

    if name == "psnr":
        finite = torch.isfinite(values)
        if not finite.any():
            return float("inf")
        mse = (10 ** (-values / 10)).mean()  # data range 1: PSNR = -10 log10(MSE)
        return float(-10 * torch.log10(mse)) if mse > 0 else float("inf")
    return float(values.mean())


def psnr_of_images(images: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``[N, H, W, C]`` arrays in [0, 1] (pooled over the batch); ``inf`` when identical."""
    import torch

    def to_nchw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2)

    return aggregate("psnr", _psnr(to_nchw(images), to_nchw(reference)))
