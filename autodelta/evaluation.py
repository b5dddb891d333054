"""Evaluators: schedule plan → quality metrics and MACs, measured against full compute.

The search depends only on the :class:`Evaluator` protocol. :class:`DiffusionEvaluator`
generates the calibration set (conditions × seeds, fixed initial noise per item) with
the plan installed and compares with full-compute reference outputs, generated once
and cached on disk. Plans that share a prefix of steps resume from a saved state
(latents, scheduler, Δ-Cache, RNG) instead of recomputing it. :class:`SyntheticEvaluator`
is a closed-form stand-in that answers in microseconds, for tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from autodelta.cost import CostModel
from autodelta.errors import AutodeltaError
from autodelta.files import atomic_write
from autodelta.metrics import METRICS, aggregate, get_metric
from autodelta.models import Profile
from autodelta.runtime import apply
from autodelta.sampling import SamplerState, make_sampler
from autodelta.schedule import CachedRange, Schedule, Step


@dataclass
class Evaluation:
    """Quality and cost of one plan."""

    metrics: dict[str, float]
    macs: float
    speedup: float
    per_item: dict[str, list[float]] = field(default_factory=dict)


class Evaluator(Protocol):
    """What the search needs: a cost model and plan → :class:`Evaluation`."""

    cost: CostModel
    steps: int
    num_blocks: int

    def evaluate(self, plan: Sequence[Step]) -> Evaluation: ...


# --- calibration set ---------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationSet:
    """Items ``(condition, seed)``; the seed fixes each item's initial noise."""

    labels: tuple[int, ...]
    seeds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_profile(cls, profile: Profile, size: int | None = None, heldout: bool = False) -> "CalibrationSet":
        calib = profile.raw.get("calibration") or {}
        seeds = list(calib.get("heldout_seeds" if heldout else "seeds") or ([1000, 1001] if heldout else [0]))
        conditions = list(profile.conditions) or [0]
        capacity = len(conditions) * len(seeds)
        size = capacity if size is None else size
        if not 1 <= size <= capacity:
            raise AutodeltaError(
                f"calibration size {size} is out of range for {profile.name}: use 1..{capacity} "
                f"({len(conditions)} conditions x {len(seeds)} seeds)"
            )
        items = [(conditions[j % len(conditions)], seeds[j // len(conditions)]) for j in range(size)]
        return cls(labels=tuple(int(c) for c, _ in items), seeds=tuple(int(s) for _, s in items))


# --- the evaluator ------------------------------------------------------------------------
def needed_ranges(plan: Sequence[Step], k: int) -> frozenset[CachedRange]:
    """Ranges the Δ-Cache recorded at the last full step ≤ k must hold (the runtime records only those)."""
    last_full = max(i for i in range(k + 1) if plan[i] is None)
    needed = set()
    for step in plan[last_full + 1 :]:
        if step is None:
            break
        needed.add(step)
    return frozenset(needed)


class _PrefixCache:
    """LRU of sampler states after step k, keyed by the plan prefix and the Δ ranges it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Any, SamplerState] = OrderedDict()
        self.bytes = 0

    def get(self, key: Any) -> SamplerState | None:
        state = self.entries.get(key)
        if state is not None:
            self.entries.move_to_end(key)
        return state

    def put(self, key: Any, state: SamplerState) -> None:
        if key in self.entries or self.max_bytes <= 0:
            return
        self.entries[key] = state
        self.bytes += state.nbytes()
        while self.bytes > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.nbytes()


class DiffusionEvaluator:
    """Real generations of a calibration set with a plan installed, scored against full compute."""

    def __init__(self, profile: Profile, pipe: Any, calibration: CalibrationSet, cost: CostModel | None = None,
                 metrics: Sequence[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 weights_id: str | None = None, prefix_reuse: bool = True, cache_bytes: int = 512 * 2**20,
                 quiet: bool = False, resolution: int | None = None, prompt_embeds: Any = None) -> None:
        self.profile, self.pipe, self.calibration = profile, pipe, calibration
        self.steps, self.num_blocks = profile.steps, profile.num_blocks
        self.cost = cost or profile.cost_model()
        if self.cost is None:
            raise AutodeltaError(f"profile {profile.name} has no cost yet; run `autodelta profile --model {profile.name} --write`")
        self.metric_names = metric_names_for(profile, metrics)
        self.judge = judge_for(profile, self.metric_names)  # loads the classifier only when asked for
        self.prompt_embeds = None
        if profile.text_conditioned:
            self.prompt_embeds = prompt_embeds or profile.prompt_embeddings()
        self.resolution = resolution or profile.resolution
        self.sampler = make_sampler(pipe, profile, calibration.labels, calibration.seeds, self.resolution,
                                    self.prompt_embeds)
        self.prefix_reuse = prefix_reuse
        self.prefix = _PrefixCache(cache_bytes if prefix_reuse else 0)
        self.blocks_computed = 0
        self.blocks_naive = 0
        self.weights_id = weights_id or _weights_id(profile)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.quiet = quiet
        self.reference = self._load_or_generate_reference()

    # reference ------------------------------------------------------------------------
    def reference_key(self) -> dict[str, Any]:
        return {
            "model": self.profile.name, "weights": self.weights_id, "scheduler": type(self.pipe.scheduler).__name__,
            "steps": self.steps, "guidance_scale": self.profile.guidance_scale,
            "labels": list(self.calibration.labels), "seeds": list(self.calibration.seeds),
            "dtype": str(self.pipe.transformer.dtype), "resolution": self.resolution,
            "conditions_source": None if self.prompt_embeds is None else _embeddings_id(self.prompt_embeds),
        }

    def reference_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(self.reference_key(), sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"reference-{self.profile.name}-{digest}.pt"

    def _load_or_generate_reference(self) -> torch.Tensor:
        path = self.reference_path()
        if path is not None and path.exists():
            try:
                doc = torch.load(path, weights_only=True)
                if doc.get("key") == self.reference_key() and isinstance(doc.get("images"), torch.Tensor):
                    return doc["images"]
                reason = "it was made for other weights or settings"
            except Exception as exc:  # corrupt or truncated file: say so and regenerate
                reason = f"it is corrupt ({type(exc).__name__})"
            self._say(f"reference cache {path} is unusable: {reason}; regenerating it")
        images = self._generate([None] * self.steps, count=False)
        if path is not None:
            buffer = io.BytesIO()
            torch.save({"key": self.reference_key(), "images": images}, buffer)
            atomic_write(path, buffer.getvalue())
        return images

    # evaluation -----------------------------------------------------------------------
    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        images = self._generate(plan)
        return self.score(plan, images)

    def score(self, plan: Sequence[Step], images: torch.Tensor) -> Evaluation:
        values, per_item = score_images(self.metric_names, images, self.reference, self.calibration.labels, self.judge)
        return Evaluation(metrics=values, macs=self.cost.plan_macs(plan), speedup=self.cost.speedup(plan),
                          per_item=per_item)

    def generate(self, plan: Sequence[Step]) -> torch.Tensor:
        """Images of the calibration set with ``plan`` installed, ``[N, C, H, W]`` in [0, 1]."""
        return self._generate(plan)

    def _generate(self, plan: Sequence[Step], count: bool = True) -> torch.Tensor:
        plan = tuple(plan)
        start = self.sampler.initial_state()
        for k in range(len(plan) - 1, -1, -1):
            hit = self.prefix.get((plan[: k + 1], needed_ranges(plan, k)))
            if hit is not None:
                start = hit
                break
        schedule = Schedule(model=self.profile.name, num_blocks=self.num_blocks, scheduler=self.profile.scheduler,
                            steps=self.steps, plan=plan)
        with apply(self.sampler.transformer, schedule, cost=self.cost) as handle:
            state = start
            if state.step >= 0:
                handle.state.step = state.step
                handle.state.last_timestep = self.sampler.timestep_key(state, state.step)
                handle.state.deltas = dict(state.deltas)
            while state.step < len(plan) - 1:
                state = self.sampler.step(state)
                state.deltas = dict(handle.state.deltas)
                self.prefix.put((plan[: state.step + 1], needed_ranges(plan, state.step)), state)
            computed = handle.stats.blocks_run
        if count:
            self.blocks_computed += computed
            self.blocks_naive += sum(self.num_blocks - (0 if s is None else s.length) for s in plan)
        return self.sampler.decode(state)

    @property
    def reuse_ratio(self) -> float:
        return self.blocks_naive / self.blocks_computed if self.blocks_computed else 1.0

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(f"autodelta: {message}", file=sys.stderr)


def metric_names_for(profile: Profile, metrics: Sequence[str] | None) -> list[str]:
    """``metrics`` (default: every metric the profile can score), checked against what it can score."""
    has_judge = bool(profile.raw.get("classifier"))
    available = [m for m in METRICS if not METRICS[m].domain or has_judge]
    names = list(metrics or available)
    for name in names:
        if name not in available:
            get_metric(name)  # unknown names get the list of known ones
            raise AutodeltaError(f"metric {name!r} needs a judge that profile {profile.name} lacks; "
                                 f"available: {', '.join(available)}")
    return names


def judge_for(profile: Profile, metric_names: Sequence[str]) -> Any:
    """The profile's domain judge if a domain metric is asked for (loaded only then), else ``None``."""
    return _judge(profile) if any(METRICS[name].domain for name in metric_names) else None


def score_images(metric_names: Sequence[str], images: torch.Tensor, reference: torch.Tensor,
                 labels: Sequence[int], judge: Any = None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Aggregate and per-item values of each metric of ``images`` against ``reference`` (both ``[N, C, H, W]``)."""
    per_item: dict[str, list[float]] = {}
    values: dict[str, float] = {}
    domain = {}
    if judge is not None and any(METRICS[n].domain for n in metric_names):
        domain = judge.scores(images, torch.tensor(list(labels)))
    for name in metric_names:
        if METRICS[name].domain:
            items, values[name] = domain[name] if name in domain else (None, float("nan"))
            if items is not None:
                per_item[name] = items
            continue
        item_values = METRICS[name].per_item(images, reference)
        per_item[name] = [float(v) for v in item_values]
        values[name] = aggregate(name, item_values)
    return values, per_item


def _judge(profile: Profile) -> Any:
    """The profile's domain judge (tiny-dit's digit classifier), if it ships one."""
    name = profile.raw.get("classifier")
    if not name:
        return None
    from autodelta.digits import DigitJudge

    path = (profile.path.parent / name).resolve()
    if not path.exists():
        raise AutodeltaError(f"classifier {path} of profile {profile.name} is missing; restore it from git or "
                             "retrain with `python scripts/train_tiny_dit.py`")
    return DigitJudge.from_file(str(path))


def _embeddings_id(embeddings: Any) -> str:
    digest = hashlib.sha256()
    for tensor in (embeddings.embeds, embeddings.mask, embeddings.negative, embeddings.negative_mask):
        digest.update(tensor.contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def _weights_id(profile: Profile) -> str:
    if profile.weights is None:
        return f"random-from-config:{profile.pretrained or profile.name}"
    path = (profile.path.parent / profile.weights).resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "missing"
    return f"sha256:{digest}"


# --- synthetic evaluator --------------------------------------------------------------------
class SyntheticEvaluator:
    """Closed-form, deterministic quality of a plan, for tests that must run in milliseconds.

    Each Δ step loses quality in proportion to the staleness of its Δ (steps since the
    last full step) times the sensitivity of the blocks it skips, which depends on the
    stage: early steps tolerate skipping rear blocks, late steps front blocks. Quality is
    ``base − Σ loss`` in "dB", as a PSNR would read.
    """

    def __init__(self, cost: CostModel, steps: int, base: float = 40.0, metric: str = "psnr") -> None:
        self.cost, self.steps, self.num_blocks = cost, steps, cost.num_blocks
        self.base, self.metric = base, metric
        self.evaluations = 0

    def block_sensitivity(self, step: int, block: int) -> float:
        progress = step / max(self.steps - 1, 1)  # 0 = noisiest
        position = block / max(self.num_blocks - 1, 1)  # 0 = front
        return 0.02 + 0.1 * ((1 - progress) * (1 - position) + progress * position)

    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        self.evaluations += 1
        loss, since_full = 0.0, 0
        for i, step in enumerate(plan):
            if step is None:
                since_full = 0
                continue
            since_full += 1
            loss += since_full * sum(self.block_sensitivity(i, k) for k in range(step.start, step.stop))
        return Evaluation(metrics={self.metric: self.base - loss}, macs=self.cost.plan_macs(plan),
                          speedup=self.cost.speedup(plan))
