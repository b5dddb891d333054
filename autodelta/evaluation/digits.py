"""The tiny-dit domain: scikit-learn's bundled handwritten digits and a small classifier.

The digits ship with scikit-learn (no download): 1,797 8×8 images, upscaled to 16×16.
The classifier's penultimate layer is the feature space of the offline Fréchet
distance that stands in for Inception-FID here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 16
NUM_CLASSES = 10


@dataclass
class DigitSplits:
    train_images: torch.Tensor  # [N, 1, 16, 16] in [0, 1]
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> DigitSplits:
    """Stratified train / held-out split of the bundled digits, upscaled to 16×16 in [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    data = sk_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=test_fraction, random_state=seed, stratify=labels.numpy()
    )
    return DigitSplits(images[idx_train], labels[idx_train], images[idx_test], labels[idx_test])


class DigitClassifier(nn.Module):
    """A ~40 k-parameter CNN on 16×16 digits; ``features`` gives its 64-d penultimate layer."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, self.num_features)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ClassifierFeatures(nn.Module):
    """Feature extractor for torchmetrics' Fréchet distance (images in [0, 1], NCHW)."""

    num_features = DigitClassifier.num_features

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


def frechet_distance(classifier: DigitClassifier, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between real and generated images in the classifier's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier).eval(), normalize=True)
    with torch.no_grad():
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return float(metric.compute())


def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((classifier(images).argmax(1) == labels).float().mean())


def train_classifier(splits: DigitSplits, epochs: int = 30, seed: int = 0) -> DigitClassifier:
    """Train on the training split with ±1 pixel shifts; deterministic for a given seed."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = splits.train_images, splits.train_labels
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            batch = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class DigitJudge:
    """tiny-dit's domain metrics: classifier accuracy on the asked labels, Fréchet distance to real digits."""

    def __init__(self, classifier: DigitClassifier, real_images: torch.Tensor) -> None:
        self.classifier, self.real = classifier.eval(), real_images

    @classmethod
    def from_file(cls, path: str) -> DigitJudge:
        from safetensors.torch import load_file

        classifier = DigitClassifier()
        classifier.load_state_dict(load_file(path))
        return cls(classifier, load_digits().test_images)

    def scores(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[list[float] | None, float]]:
        with torch.no_grad():
            correct = (self.classifier(images.float()).argmax(1) == labels).float()
        out: dict[str, tuple[list[float] | None, float]] = {
            "classifier_accuracy": ([float(c) for c in correct], float(correct.mean()))
        }
        if len(images) >= 2:
            out["frechet_distance"] = (None, frechet_distance(self.classifier, self.real, images.float()))
        return out
