"""One harness for every caching method: real pipeline calls, item by item, computed work counted.

Schedules (autodelta's, the paper's, FORA, DeepCache) and run-time hooks (diffusers'
FirstBlockCache, TaylorSeer, MagCache, SeaCache, PAB; cache-dit's DBCache) decide
differently what to skip, so the harness does not ask them: it counts. A counting hook
sits *innermost* on every block and on its attention and feed-forward modules, so it sees only
the work that really ran, whatever the method wraps around it (PAB and TaylorSeer skip those
modules inside blocks that still run). Items run one at a time (batch 1, doubled by
CFG), as users generate, because dynamic methods decide per call from the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from tqdm.auto import tqdm

from autodelta.baselines.base import PlanBaseline, RuntimeMethod
from autodelta.baselines.hooks import Installer
from autodelta.baselines.registry import get_baseline
from autodelta.baselines.tuning import raise_until_met, tune
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.held_memory import HeldMemory
from autodelta.evaluation.scoring import Scorer
from autodelta.models.blocks import find_blocks
from autodelta.models.devices import inputs_on
from autodelta.models.profile import Profile
from autodelta.plan.cost import Budget, CostModel

_COUNTER = "autodelta_compute_counter"


class _ComputeCounter(ModelHook):
    def __init__(self, counts: dict[Any, int], key: Any) -> None:
        super().__init__()
        self.counts, self.key = counts, key

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.counts[self.key] += 1
        return self.fn_ref.original_forward(*args, **kwargs)  # type: ignore[misc]


@dataclass
class Run:
    """Images of the items with one method installed, and what it cost."""

    images: torch.Tensor  # [N, C, H, W] in [0, 1]
    macs: float  # per item (one generation), CFG included
    speedup: float  # full MACs / measured MACs
    seconds: float  # mean wall time of one item's pipeline call (the census item untimed; nan if none was timed)
    # CUDA: peak memory allocated during the calls; CPU, when asked: the most bytes live tensors held
    # after a transformer call of the first item (autodelta.evaluation.held_memory); else None
    peak_bytes: int | None = None


class ItemwiseRunner:
    """Generates ``items`` through the real pipeline with a method installed, counting computed blocks."""

    def __init__(self, profile: Profile, pipe: Any, items: CalibrationSet, cost: CostModel,
                 resolution: int | None = None, conditioning: Any = None, progress: bool = False) -> None:
        self.profile, self.pipe, self.items, self.cost = profile, pipe, items, cost
        self.resolution, self.conditioning, self.progress = resolution, conditioning, progress
        self.blocks = find_blocks(pipe.transformer, profile.blocks_attr)
        self.counts = [0] * len(self.blocks)
        self.calls = self.rows = 0  # transformer calls, and batch rows over them (CFG batched: 2 per call)
        self._module_macs: list[dict[str, float]] | None = None
        self._module_counts: dict[Any, int] = {}

    def with_items(self, items: CalibrationSet) -> ItemwiseRunner:
        """The same pipeline and counters' costs on other items."""
        other = ItemwiseRunner(self.profile, self.pipe, items, self.cost, self.resolution, self.conditioning,
                               self.progress)
        other._module_macs = self._module_macs
        return other

    def subset(self, size: int) -> ItemwiseRunner:
        """The first ``size`` items (for settings whose MACs do not depend on the item)."""
        return self.with_items(CalibrationSet(self.items.labels[:size], self.items.seeds[:size]))

    @property
    def module_counts(self) -> dict[Any, int]:
        """What the last run computed: ``("block", i)`` and ``("module", i, name)`` → calls, over all items."""
        return dict(self._module_counts)

    @property
    def module_macs(self) -> list[dict[str, float]]:
        """Per block, per-sample MACs of its attention and feed-forward modules (fvcore, on example inputs)."""
        if self._module_macs is None:
            from autodelta.models.profiler import module_macs

            transformer = self.pipe.transformer
            param = next(transformer.parameters())
            inputs = inputs_on(self.profile.example_inputs(batch=self.cost.cfg_factor, dtype=param.dtype,
                                                     resolution=self.resolution), param.device)
            self._module_macs = module_macs(transformer, inputs, self.profile.blocks_attr)
        return self._module_macs

    @contextmanager
    def _counting(self) -> Iterator[None]:
        """Counters innermost on every block and its attention and feed-forward modules: registered before
        the method's own hooks."""
        self.calls = self.rows = 0
        counted: list[tuple[torch.nn.Module, tuple[Any, ...]]] = [
            (block, ("block", index)) for index, block in enumerate(self.blocks)]
        counted += [(getattr(block, name), ("module", index, name))
                    for index, block in enumerate(self.blocks) for name in self.module_macs[index]]
        self._module_counts = {key: 0 for _, key in counted}

        def count_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.calls += 1
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            self.rows += int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 1

        handle = self.pipe.transformer.register_forward_pre_hook(count_call, with_kwargs=True)
        for module, key in counted:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(
                _ComputeCounter(self._module_counts, key), _COUNTER)
        try:
            yield
        finally:
            handle.remove()
            for module, _ in counted:
                HookRegistry.check_if_exists_or_initialize(module).remove_hook(_COUNTER, recurse=False)
            self.counts[:] = [self._module_counts[("block", i)] for i in range(len(self.blocks))]

    def run(self, install: Installer | None = None, desc: str = "generate", memory: bool = False) -> Run:
        """Generate every item with ``install(pipe)`` in place (``None``: full compute); ``memory``: on CPU,
        also count the bytes held between transformer calls on the first item (a census, ~0.3 s a call)."""
        images: list[np.ndarray] = []
        held = HeldMemory()
        with self._counting():
            installed = install(self.pipe) if install is not None else None
            device = next(self.pipe.transformer.parameters()).device
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds, timed = 0.0, 0
                census = memory and device.type != "cuda"
                for index, (label, seed) in enumerate(tqdm(list(zip(self.items.labels, self.items.seeds)), desc=desc,
                                                           leave=False, disable=None if self.progress else True)):
                    if installed is not None:
                        installed.reset()
                    counted = census and index == 0  # the census item goes untimed: a census is slow
                    start = time.perf_counter()
                    with held.watching(self.pipe.transformer) if counted else nullcontext():
                        out = self._generate(label, seed)
                    if not counted:
                        seconds += time.perf_counter() - start
                        timed += 1
                    images.append(np.asarray(out.images, dtype=np.float32))
                peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                        else held.peak if census else None)
            finally:
                if installed is not None:
                    installed.remove()
            macs = self._measured_macs()
        stacked = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()
        full = self.cost.full_macs(self.profile.steps)
        return Run(images=stacked, macs=macs, speedup=full / macs if macs else float("inf"),
                   seconds=seconds / timed if timed else float("nan"),
                   peak_bytes=peak)

    def _generate(self, label: Any, seed: int) -> Any:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # DiTPipeline's stochastic schedulers use the global RNG
            return self.profile.adapter.call(self.pipe, [label], [seed], self.profile.steps,
                                             self.profile.guidance_scale, self.resolution, self.conditioning)

    def _measured_macs(self) -> float:
        """Per-item MACs from what ran: pre/post on every call, each block's attention and feed-forward modules
        as often as they computed, the rest of the block as often as the block did; each call weighs its batch
        rows (items run one at a time: two rows with CFG batched, one per call with CFG as two calls, FLUX)."""
        counts = self._module_counts
        per_sample = self.calls * (self.cost.pre + self.cost.post)
        for index, block_macs in enumerate(self.cost.blocks):
            attention = self.module_macs[index]
            per_sample += counts[("block", index)] * (block_macs - sum(attention.values()))
            per_sample += sum(counts[("module", index, name)] * macs for name, macs in attention.items())
        rows_per_call = self.rows / self.calls if self.calls else float(self.cost.cfg_factor)
        return rows_per_call * per_sample / max(len(self.items), 1)


def plan_installer(plan: Sequence[Any], profile: Profile, cost: CostModel) -> Installer:
    """Installs an explicit plan with :func:`autodelta.apply`."""
    from autodelta.plan.schedule import Schedule
    from autodelta.runtime.apply import apply

    schedule = Schedule(model=profile.name, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
                        steps=profile.steps, plan=tuple(plan))

    def install(pipe: Any) -> Any:
        return apply(pipe, schedule, cost=cost, blocks_attr=profile.blocks_attr)

    return install


@dataclass
class MethodResult:
    """One method on the items: measured MACs and wall speed-ups and its quality against full compute."""

    name: str
    speedup: float
    wall_speedup: float
    metrics: dict[str, float]
    images: torch.Tensor
    detail: str = ""
    extra_bytes: int | None = None  # peak_bytes above full compute's: what the method holds (None: not measured)


class Comparison:
    """Full compute once, then any schedule or baseline scored against it on the same items.

    Run-time methods get their knob tuned on ``calibration_items`` (default: the profile's
    calibration seeds), never on the scored items, like the search. ``memory``: measure what each
    method holds on CPU too (a tensor census on the first item, which is then left out of the timing;
    full compute's census is taken again right before each method's).
    ``retime``: time full compute again right before every scored run, so each wall speed-up divides
    two runs made side by side (on a shared machine the load drifts over a long benchmark).
    """

    def __init__(self, profile: Profile, pipe: Any, items: CalibrationSet, cost: CostModel,
                 metrics: Sequence[str] | None = None, resolution: int | None = None, conditioning: Any = None,
                 progress: bool = False, calibration_items: CalibrationSet | None = None, memory: bool = False,
                 retime: bool = False) -> None:
        self.profile, self.cost, self.items, self.memory, self.retime_each = profile, cost, items, memory, retime
        self.runner = ItemwiseRunner(profile, pipe, items, cost, resolution, conditioning, progress)
        self.calibration_items = calibration_items or CalibrationSet.from_profile(profile, None)
        self.scorer = Scorer(profile, metrics)
        self._reference: Run | None = None

    @property
    def reference(self) -> Run:
        """Full compute on the scored items, run on first use (a baseline refused at once never pays for it)."""
        if self._reference is None:
            self._reference = self.runner.run(None, desc="full compute", memory=self.memory)
        return self._reference

    def _result(self, name: str, run: Run, detail: str) -> MethodResult:
        values, _ = self.scorer.score(run.images, self.reference.images, self.items.labels)
        extra = None
        if run.peak_bytes is not None and self.reference.peak_bytes is not None:
            extra = max(0, run.peak_bytes - self.reference.peak_bytes)
        return MethodResult(name=name, speedup=run.speedup, wall_speedup=self.reference.seconds / run.seconds,
                            metrics=values, images=run.images, detail=detail, extra_bytes=extra)

    def retime(self) -> None:
        """Run full compute again (same images), so wall speed-ups and memory compare runs made close
        together: what the process holds besides a method (earlier results, say) drifts over a benchmark."""
        again = self.runner.run(None, desc="full compute (re-timed)", memory=self.memory)
        if not torch.equal(again.images, self.reference.images):
            raise RuntimeError("full compute is not deterministic on this machine; wall speed-ups would mislead")
        self._reference = again

    def _scored(self, install: Installer, name: str) -> Run:
        if self.retime_each or self.memory:
            self.retime()
        return self.runner.run(install, desc=name, memory=self.memory)

    def full(self) -> MethodResult:
        return self._result("full compute", self.reference, "")

    def plan(self, name: str, plan: Sequence[Any], detail: str = "") -> MethodResult:
        return self._result(name, self._scored(plan_installer(plan, self.profile, self.cost), name), detail)

    def baseline(self, name: str, budget: Budget, calibration: Callable[[], Any] | None = None) -> MethodResult:
        """Baseline ``name`` set to ``budget``: a plan (from the cost, or chosen on the calibration items:
        ``calibration()`` gives their evaluator), or a run-time method whose knob is tuned on the
        calibration items and then run, and counted, on these items."""
        baseline = get_baseline(name)
        if isinstance(baseline, PlanBaseline):
            plan = baseline.plan(self.cost, self.profile.steps, budget, calibration)
            full_steps = sum(step is None for step in plan)
            return self.plan(name, plan, f"{full_steps} full steps of {len(plan)}")
        assert isinstance(baseline, RuntimeMethod)
        tuned = tune(baseline, self.runner.with_items(self.calibration_items), budget, self.profile.steps)
        run = raise_until_met(tuned, lambda installer: self._scored(installer, name), budget)
        return self._result(name, run, tuned.describe())
