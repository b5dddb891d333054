"""The reference cache: a calibration set's full-compute images (and the trajectory the error model reads), kept on
disk between searches and checked field by field before use.

A cached reference is what every score is measured against, so a file that does not fit
its key in every respect (settings, image dtype, shape and range, the trajectory's spans,
step and item counts, each span's width against its projections) is regenerated, with a
warning saying which field did not fit. Where the cache path is taken by something that is
not a file (a folder), the reference is written beside it, and the warning says where.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autodelta.evaluation.trajectory import Trajectory
from autodelta.files import atomic_write
from autodelta.plan.schedule import CachedRange

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    """Full-compute images ``[N, C, H, W]`` in [0, 1], and the trajectory recorded with them (if any)."""

    images: torch.Tensor
    trajectory: Trajectory | None = None


class ReferenceStore:
    """References of one model in ``folder`` (``None``: no cache), one file per key."""

    def __init__(self, folder: str | Path | None, model: str) -> None:
        self.folder = Path(folder) if folder else None
        self.model = model

    def path(self, key: dict[str, Any]) -> Path | None:
        """The key's file; beside it (``-1.pt``, ``-2.pt`` …) where something that is not a file holds the name."""
        if self.folder is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.folder / f"reference-{self.model}-{digest}.pt"
        taken = path
        for n in range(1, 100):
            if not path.exists() or path.is_file():
                break
            path = taken.with_name(f"{taken.stem}-{n}.pt")
        if path != taken:
            logger.warning("reference cache path %s is not a file; the reference is kept in %s instead", taken, path)
        return path

    def load(self, key: dict[str, Any], shape: Sequence[int], spans: Sequence[CachedRange], steps: int
             ) -> Reference | None:
        """The cached reference of ``key``, or ``None`` (with a warning naming the field) when it does not fit."""
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            doc = torch.load(path, weights_only=True)
            reason = _unfit(doc, key, tuple(shape), spans, steps)
        except Exception as exc:  # corrupt or truncated file: say so and regenerate
            reason = f"it is corrupt ({type(exc).__name__})"
        if reason is None:
            trajectory = Trajectory.from_doc(doc.get("trajectory")) if spans else None
            return Reference(doc["images"], trajectory)
        logger.warning("reference cache %s is unusable: %s; regenerating it", path, reason)
        return None

    def save(self, key: dict[str, Any], reference: Reference) -> Path | None:
        path = self.path(key)
        if path is None:
            return None
        doc: dict[str, Any] = {"key": key, "images": reference.images}
        if reference.trajectory is not None:
            doc["trajectory"] = reference.trajectory.to_doc()
        buffer = io.BytesIO()
        torch.save(doc, buffer)
        return atomic_write(path, buffer.getvalue())


def _unfit(doc: Any, key: dict[str, Any], shape: tuple[int, ...], spans: Sequence[CachedRange], steps: int) -> str | None:
    """Why a loaded cache document does not fit (``None``: it fits)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), dict):
        return "it holds no key"
    other = [k for k in sorted(set(key) | set(doc["key"])) if key.get(k) != doc["key"].get(k)]
    if other:
        return f"it was made for other settings ({', '.join(other)})"
    images = doc.get("images")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        return f"its images are {getattr(images, 'dtype', type(images).__name__)}, not floating point"
    if tuple(images.shape) != shape:
        return f"its images have shape {tuple(images.shape)}, not {shape}"
    if not bool(torch.isfinite(images).all()) or float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3:
        return "its images are not finite values in [0, 1]"
    if not spans:
        return None
    trajectory = Trajectory.from_doc(doc.get("trajectory"))
    if trajectory is None:
        return "it holds no readable trajectory"
    if not set(spans) <= set(trajectory.spans):
        return "its trajectory lacks spans this search needs"
    if trajectory.steps != steps or trajectory.items != shape[0]:
        return f"its trajectory has {trajectory.steps} steps of {trajectory.items} items, not {steps} of {shape[0]}"
    return trajectory.mismatch()
