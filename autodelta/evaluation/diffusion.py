"""Evaluators: schedule plan → quality metrics and MACs, measured against full compute.

The search depends only on the :class:`Evaluator` protocol. :class:`DiffusionEvaluator`
generates the calibration set (conditions × seeds, fixed initial noise per item) with
the plan installed and compares with full-compute reference outputs, generated once
and cached on disk. Plans that share a prefix of steps resume from a saved state
(latents, scheduler, Δ-Cache, RNG) instead of recomputing it.
:class:`~autodelta.evaluation.synthetic.SyntheticEvaluator` is a closed-form stand-in for tests.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.calibration import CalibrationSet, item_set
from autodelta.evaluation.error_model import ErrorModel, Gains, fit_gains, probe_plans
from autodelta.evaluation.evaluator import Evaluation, Evaluator
from autodelta.evaluation.references import Reference, ReferenceStore
from autodelta.evaluation.scoring import Scorer
from autodelta.evaluation.trajectory import Trajectory, TrajectoryRecorder
from autodelta.evaluation.work import WorkExhausted, WorkMeter
from autodelta.models.loading import load_profile
from autodelta.models.profile import Profile
from autodelta.models.sampling import SamplerState, StepSampler
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import CachedRange, Schedule, Step, cache_needs
from autodelta.runtime.apply import apply

logger = logging.getLogger(__name__)


# --- the evaluator ------------------------------------------------------------------------
def _prefix_key(plan: tuple[Step, ...], k: int) -> tuple[Any, ...]:
    """Key of the state after step k: the plan so far and what its Δ-Cache must hold."""
    last_full = max(i for i in range(k + 1) if plan[i] is None)
    return plan[: k + 1], cache_needs(plan, last_full)


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
                 resolution: int | None = None, conditioning: Any = None, batch_size: int | None = None,
                 record: Sequence[CachedRange] = (), meter: WorkMeter | None = None,
                 reference_phase: str = "reference") -> None:
        self.profile, self.pipe, self.calibration = profile, pipe, calibration
        self.meter = meter if meter is not None else WorkMeter()
        self.item_indices = tuple(range(len(calibration)))  # positions in the trajectory's items
        self.steps, self.num_blocks = profile.steps, profile.num_blocks
        self.cost = cost or profile.require_cost()
        self.scorer = Scorer(profile, metrics)
        self.conditioning = conditioning if conditioning is not None else profile.adapter.conditioning()
        self.resolution = resolution or profile.resolution
        if batch_size is not None and batch_size < 1:
            raise AutodeltaError(f"--batch-size {batch_size} must be at least 1")
        self.batch_size = min(batch_size or len(calibration), len(calibration))
        self.requested_batch = self.batch_size  # the reference's key: an out-of-memory retry halves batch_size
        self.reference_phase = reference_phase
        self.samplers = self._make_samplers()
        self.prefix_reuse = prefix_reuse
        self.prefix = _PrefixCache(cache_bytes if prefix_reuse else 0)
        self.blocks_computed = 0
        self.blocks_naive = 0
        self.weights_id = weights_id or _weights_id(profile)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.record = tuple(dict.fromkeys(r.span for r in record))
        self.trajectory: Trajectory | None = None
        self.reference = self._load_or_generate_reference()

    def _make_samplers(self) -> list[StepSampler]:
        """One sampler per batch of items; each item keeps its own noise, so batching changes no image."""
        labels, seeds, size = self.calibration.labels, self.calibration.seeds, self.batch_size
        return [self.profile.adapter.sampler(self.pipe, labels[i : i + size], seeds[i : i + size], self.resolution,
                                             self.conditioning) for i in range(0, len(labels), size)]

    @property
    def items(self) -> int:
        return len(self.calibration)

    @property
    def probe_count(self) -> int:
        return 2 * self.steps - 3

    def error_model(self, probe: Evaluator | None, stored: Any) -> tuple[ErrorModel, Any]:
        """The trajectory error model; its gains from ``stored`` or, when absent, from probes run on ``probe``
        (``None``: no room to probe; equal gains at every step, until trials calibrate them)."""
        if self.trajectory is None:
            raise AutodeltaError("this evaluator recorded no trajectory; build it with record= the space's ranges")
        widest = max(self.trajectory.spans, key=lambda s: (s.length, -s.start))
        gains = Gains.from_dict(stored, self.steps) if stored is not None else None
        if gains is None and probe is None:
            gains = Gains.prior(self.steps)
        elif gains is None:
            if not isinstance(probe, DiffusionEvaluator):
                raise AutodeltaError("the error model probes on a subset of the same evaluator (evaluator.subset)")
            mse = [probe.evaluate(plan).item_mse() for plan in probe_plans(self.steps, widest)]
            gains = fit_gains(self.trajectory, widest, mse, probe.item_indices)
        return ErrorModel(self.trajectory, gains), gains.as_dict()

    def subset(self, count: int) -> DiffusionEvaluator:
        """An evaluator on ``count`` of these items, spread over them (conditions and seeds both vary).

        It shares the pipeline and slices the reference images (each item is generated
        from its own noise, so they are what full compute gives that subset); the cheap
        fidelity of the structure-aware search screens plans on it.
        """
        size = len(self.calibration)
        if not 1 <= count <= size:
            raise AutodeltaError(f"a screening subset of {count} items is out of range: use 1..{size}")
        picks = sorted({(j * size) // count for j in range(count)})
        other = copy.copy(self)
        other.calibration = CalibrationSet(labels=tuple(self.calibration.labels[i] for i in picks),
                                           seeds=tuple(self.calibration.seeds[i] for i in picks))
        other.batch_size = min(self.batch_size, len(picks))
        other.samplers = other._make_samplers()
        other.prefix = _PrefixCache(self.prefix.max_bytes)
        other.blocks_computed = other.blocks_naive = 0
        other.reference = self.reference[picks]
        other.item_indices = tuple(self.item_indices[i] for i in picks)
        other.__dict__.pop("_shape", None)
        return other

    # reference ------------------------------------------------------------------------
    def reference_key(self) -> dict[str, Any]:
        return {
            "model": self.profile.name, "weights": self.weights_id, "scheduler": type(self.pipe.scheduler).__name__,
            "steps": self.steps, "guidance_scale": self.profile.guidance_scale,
            "labels": list(self.calibration.labels), "seeds": list(self.calibration.seeds),
            "dtype": str(self.pipe.transformer.dtype), "device": self.pipe.transformer.device.type,
            "batch_size": self.requested_batch, "resolution": self.resolution,
            "conditions_source": self.profile.adapter.conditioning_id(self.conditioning),
        }

    def reference_path(self) -> Path | None:
        return ReferenceStore(self.cache_dir, self.profile.name).path(self.reference_key())

    def _load_or_generate_reference(self) -> torch.Tensor:
        store, key = ReferenceStore(self.cache_dir, self.profile.name), self.reference_key()
        cached = store.load(key, self._image_shape(), self.record, self.steps)
        if cached is not None:
            self.trajectory = cached.trajectory
            self.meter.cached(len(self.calibration))
            return cached.images
        with self.meter.during(self.reference_phase):
            images = self._generate([None] * self.steps, stats=False, record=bool(self.record))
        if not bool(torch.isfinite(images).all()):
            raise AutodeltaError(f"full compute of {self.profile.name} produced NaN or inf images; its weights or "
                                 "dtype are broken (try --dtype fp32), so no quality can be measured against it")
        if self.record:
            deltas: dict[CachedRange, torch.Tensor] = {}
            for recorder in self._recorders:
                recorder.collect(deltas, len(self.calibration))
            sketch = self._recorders[0].sketch_doc()
            del self._recorders
            self.trajectory = Trajectory(self.record, self.steps, len(self.calibration), sketch, deltas)
        store.save(key, Reference(images, self.trajectory))
        return images

    def _image_shape(self) -> tuple[int, ...]:
        """``[N, C, H, W]`` of the decoded calibration set (decoding the initial noise is cheap)."""
        if not hasattr(self, "_shape"):
            shapes = [s.decode(s.initial_state()).shape for s in self.samplers]
            self._shape = (sum(int(shape[0]) for shape in shapes), *tuple(shapes[0][1:]))
        return self._shape

    # evaluation -----------------------------------------------------------------------
    def evaluate(self, plan: Sequence[Step]) -> Evaluation:
        images = self._generate(plan)
        return self.score(plan, images)

    def score(self, plan: Sequence[Step], images: torch.Tensor) -> Evaluation:
        values, per_item = self.scorer.score(images, self.reference, self.calibration.labels)
        return Evaluation(metrics=values, macs=self.cost.plan_macs(plan), speedup=self.cost.speedup(plan),
                          per_item=per_item)

    def generate(self, plan: Sequence[Step]) -> torch.Tensor:
        """Images of the calibration set with ``plan`` installed, ``[N, C, H, W]`` in [0, 1]."""
        return self._generate(plan)

    def _generate(self, plan: Sequence[Step], stats: bool = True, record: bool = False) -> torch.Tensor:
        """Images of ``plan``, charged to the meter; ``record``: also keep the trajectory of ``self.record``
        (in ``self._recorders``); ``stats``: count its blocks in the prefix-reuse figures.

        Every item is charged before it is generated. Out of device memory, the batch is halved
        and the generation retried; the items the failed attempt finished are charged again.
        """
        items = len(self.calibration)
        self.meter.charge(items)
        while True:
            offsets = range(0, items, self.batch_size)
            self._recorders = [TrajectoryRecorder(self.record, self.steps, offset, len(sampler.seeds))
                               for offset, sampler in zip(offsets, self.samplers)] if record else []
            finished = 0
            try:
                parts = []
                for i, sampler in enumerate(self.samplers):
                    parts.append(self._generate_batch(i, sampler, tuple(plan), stats,
                                                      self._recorders[i] if record else None))
                    finished += len(sampler.seeds)
                return torch.cat(parts)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)  # as many items as fit: halve and retry
                logger.info("out of device memory: generating %d items at a time", self.batch_size)
                self.samplers, self.prefix = self._make_samplers(), _PrefixCache(self.prefix.max_bytes)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                try:
                    self.meter.charge(finished)  # the retry generates again what was finished
                except WorkExhausted:
                    self.meter.refund(items - finished)  # only the finished items were generated
                    raise

    def _generate_batch(self, index: int, sampler: StepSampler, plan: tuple[Step, ...], stats: bool,
                        observer: TrajectoryRecorder | None = None) -> torch.Tensor:
        start = sampler.initial_state()
        for k in range(len(plan) - 1, -1, -1):
            hit = self.prefix.get((index, *_prefix_key(plan, k)))
            if hit is not None:
                start = hit
                break
        schedule = Schedule(model=self.profile.name, num_blocks=self.num_blocks, scheduler=self.profile.scheduler,
                            steps=self.steps, plan=plan)
        with apply(sampler.transformer, schedule, cost=self.cost, observer=observer) as handle:
            state = start
            if state.step >= 0:
                handle.state.resume(state.step, sampler.timestep_key(state, state.step), state.deltas)
            while state.step < len(plan) - 1:
                state = sampler.step(state)
                state.deltas = dict(handle.state.deltas)
                self.prefix.put((index, *_prefix_key(plan, state.step)), state)
            computed = handle.stats.blocks_run
        if stats:
            self.blocks_computed += computed
            self.blocks_naive += sum(self.num_blocks - (0 if s is None else s.length) for s in plan)
        return sampler.decode(state)

    @property
    def reuse_ratio(self) -> float:
        return self.blocks_naive / self.blocks_computed if self.blocks_computed else 1.0


def _weights_id(profile: Profile) -> str:
    if profile.weights is None:
        return f"random-from-config:{profile.pretrained or profile.name}"
    path = profile.local_file(profile.weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "missing"
    return f"sha256:{digest}"




def default_cache_dir() -> str:
    """Where full-compute references are cached: ``$XDG_CACHE_HOME/autodelta/references``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "autodelta", "references")


@dataclass(frozen=True)
class EvaluatorFactory:
    """Builds a :class:`DiffusionEvaluator` in any process (``--jobs`` workers pickle this)."""

    model: str
    random_weights: bool = False
    calib: int | None = None
    heldout: bool = False
    metrics: tuple[str, ...] | None = None
    cache_dir: str | None = field(default_factory=default_cache_dir)
    prefix_reuse: bool = True
    resolution: int | None = None
    prompt_embeds: str | None = None
    device: str = "cpu"  # resolved already (see autodelta.models.devices): workers get their own
    dtype: str = "fp32"
    batch_size: int | None = None  # None: every item in one batch
    record: tuple[CachedRange, ...] = ()  # spans whose trajectory the reference records (the error model's)
    steps: int | None = None  # sample this many steps instead of the profile's (benchmarks of search cost vs T)
    reference_phase: str = "reference"  # the ledger's phase for its reference ("report" for held-out items)

    def __call__(self, meter: WorkMeter | None = None) -> DiffusionEvaluator:
        """The evaluator; its reference (and every evaluation) is charged to ``meter`` (a fresh one if not given)."""
        from autodelta.models.devices import parse_dtype

        profile = load_profile(self.model)
        if self.steps is not None:
            profile.steps = self.steps
        pipe = profile.load_pipeline(random_weights=self.random_weights, dtype=parse_dtype(self.dtype),
                                     device=self.device)
        return DiffusionEvaluator(profile, pipe, item_set(profile, self.calib, self.heldout), metrics=self.metrics,
                                  cache_dir=self.cache_dir, prefix_reuse=self.prefix_reuse,
                                  resolution=profile.check_resolution(self.resolution),
                                  conditioning=profile.adapter.conditioning(self.prompt_embeds),
                                  batch_size=self.batch_size, record=self.record, meter=meter,
                                  reference_phase=self.reference_phase)
