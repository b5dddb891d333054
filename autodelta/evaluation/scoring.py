"""The one way a method's images are scored against full compute.

The search's evaluator (batched, with prefix reuse) and the baselines' harness (real
pipeline calls, item by item) generate differently but score through the same
:class:`Scorer`: the same metrics, the same judge, the same aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.metrics import METRICS, aggregate, get_metric
from autodelta.models.profile import Profile


def metric_names_for(profile: Profile, metrics: Sequence[str] | None) -> list[str]:
    """``metrics`` (default: every metric the profile can score), checked against what it can score."""
    available = [m for m in METRICS if not METRICS[m].domain or profile.classifier]
    names = list(metrics or available)
    for name in names:
        if name not in available:
            get_metric(name)  # unknown names get the list of known ones
            raise AutodeltaError(f"metric {name!r} needs a judge that profile {profile.name} lacks; "
                                 f"available: {', '.join(available)}")
    return names


def load_judge(profile: Profile) -> Any:
    """The profile's domain judge (tiny-dit's digit classifier), if it ships one."""
    if not profile.classifier:
        return None
    from autodelta.evaluation.digits import DigitJudge

    path = profile.local_file(profile.classifier)
    if not path.exists():
        raise AutodeltaError(f"classifier {path.name} of profile {profile.name} is missing; reinstall autodelta or "
                             "retrain with `python scripts/train_tiny_dit.py`")
    return DigitJudge.from_file(str(path))


class Scorer:
    """Metrics of images against reference images, and the domain judge when a metric needs it."""

    def __init__(self, profile: Profile, metrics: Sequence[str] | None = None) -> None:
        self.metric_names = metric_names_for(profile, metrics)
        # the classifier is loaded only when a domain metric is asked for
        self.judge = load_judge(profile) if any(METRICS[n].domain for n in self.metric_names) else None

    def score(self, images: torch.Tensor, reference: torch.Tensor,
              labels: Sequence[int]) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Aggregate and per-item values of each metric (``images``/``reference`` ``[N, C, H, W]`` in [0, 1])."""
        per_item: dict[str, list[float]] = {}
        values: dict[str, float] = {}
        domain: dict[str, Any] = {}
        if self.judge is not None:
            domain = self.judge.scores(images, torch.tensor(list(labels)))
        for name in self.metric_names:
            metric = METRICS[name]
            if metric.domain:
                items, values[name] = domain[name] if name in domain else (None, float("nan"))
                if items is not None:
                    per_item[name] = items
                continue
            assert metric.per_item is not None
            item_values = metric.per_item(images, reference)
            per_item[name] = [float(v) for v in item_values]
            values[name] = aggregate(name, item_values)
        return values, per_item
