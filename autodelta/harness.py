"""One harness for every caching method: real pipeline calls, item by item, blocks counted.

Schedules (autodelta's, the paper's, FORA, DeepCache) and dynamic hooks (diffusers'
FirstBlockCache, cache-dit's DBCache) decide differently what to skip, so the harness
does not ask them: it counts. A counting hook sits *innermost* on every block, so it
sees only blocks that really ran, whatever the method wraps around them. Items run one
at a time (batch 1, doubled by CFG), as users generate, because dynamic methods decide
per call from the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from tqdm.auto import tqdm

from autodelta.calibration import CalibrationSet
from autodelta.cost import CostModel
from autodelta.models import Profile
from autodelta.runtime import find_blocks
from autodelta.scoring import Scorer

_COUNTER = "autodelta_compute_counter"

# An installer puts a method on a pipeline and returns an object with ``reset()`` (called
# before each generation) and ``remove()``; an autodelta DeltaCacheHandle is one.
Installer = Callable[[Any], Any]


class _ComputeCounter(ModelHook):
    def __init__(self, counts: list[int], index: int) -> None:
        super().__init__()
        self.counts, self.index = counts, index

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.counts[self.index] += 1
        return self.fn_ref.original_forward(*args, **kwargs)  # type: ignore[misc]


@dataclass
class Run:
    """Images of the items with one method installed, and what it cost."""

    images: torch.Tensor  # [N, C, H, W] in [0, 1]
    macs: float  # per item (one generation), CFG included
    speedup: float  # full MACs / measured MACs
    seconds: float  # wall time of all items' pipeline calls


class ItemwiseRunner:
    """Generates ``items`` through the real pipeline with a method installed, counting computed blocks."""

    def __init__(self, profile: Profile, pipe: Any, items: CalibrationSet, cost: CostModel,
                 resolution: int | None = None, conditioning: Any = None, progress: bool = False) -> None:
        self.profile, self.pipe, self.items, self.cost = profile, pipe, items, cost
        self.resolution, self.conditioning, self.progress = resolution, conditioning, progress
        self.blocks = find_blocks(pipe.transformer, profile.blocks_attr)
        self.counts = [0] * len(self.blocks)
        self.calls = 0

    @contextmanager
    def _counting(self) -> Iterator[None]:
        """Counters innermost on every block: register before the method's own hooks."""
        self.counts[:] = [0] * len(self.blocks)
        self.calls = 0

        def count_call(*_: Any) -> None:
            self.calls += 1

        handle = self.pipe.transformer.register_forward_pre_hook(count_call)
        for index, block in enumerate(self.blocks):
            HookRegistry.check_if_exists_or_initialize(block).register_hook(_ComputeCounter(self.counts, index), _COUNTER)
        try:
            yield
        finally:
            handle.remove()
            for block in self.blocks:
                HookRegistry.check_if_exists_or_initialize(block).remove_hook(_COUNTER, recurse=False)

    def run(self, install: Installer | None = None, desc: str = "generate") -> Run:
        """Generate every item with ``install(pipe)`` in place (``None``: full compute)."""
        images: list[np.ndarray] = []
        with self._counting():
            installed = install(self.pipe) if install is not None else None
            try:
                seconds = 0.0
                for label, seed in tqdm(list(zip(self.items.labels, self.items.seeds)), desc=desc, leave=False,
                                        disable=not self.progress):
                    if installed is not None:
                        installed.reset()
                    start = time.perf_counter()
                    with torch.no_grad(), torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)  # DiTPipeline's stochastic schedulers use the global RNG
                        out = self.profile.adapter.call(self.pipe, [label], [seed], self.profile.steps,
                                                        self.profile.guidance_scale, self.resolution,
                                                        self.conditioning)
                    seconds += time.perf_counter() - start
                    images.append(np.asarray(out.images, dtype=np.float32))
            finally:
                if installed is not None:
                    installed.remove()
            macs = self._measured_macs()
        stacked = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).contiguous()
        full = self.cost.full_macs(self.profile.steps)
        return Run(images=stacked, macs=macs, speedup=full / macs if macs else float("inf"), seconds=seconds)

    def _measured_macs(self) -> float:
        """Per-item MACs from what ran: pre/post on every call, each block as often as it computed."""
        per_sample = self.calls * (self.cost.pre + self.cost.post)
        per_sample += sum(n * m for n, m in zip(self.counts, self.cost.blocks))
        return self.cost.cfg_factor * per_sample / max(len(self.items), 1)


def plan_installer(plan: Sequence[Any], profile: Profile, cost: CostModel) -> Installer:
    """Installs an explicit plan with :func:`autodelta.apply`."""
    from autodelta.runtime import apply
    from autodelta.schedule import Schedule

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


class Comparison:
    """Full compute once, then any schedule or baseline scored against it on the same items."""

    def __init__(self, profile: Profile, pipe: Any, items: CalibrationSet, cost: CostModel,
                 metrics: Sequence[str] | None = None, resolution: int | None = None, conditioning: Any = None,
                 progress: bool = False) -> None:
        self.profile, self.cost, self.items = profile, cost, items
        self.runner = ItemwiseRunner(profile, pipe, items, cost, resolution, conditioning, progress)
        self.scorer = Scorer(profile, metrics)
        self.reference = self.runner.run(None, desc="full compute")

    def _result(self, name: str, run: Run, detail: str) -> MethodResult:
        values, _ = self.scorer.score(run.images, self.reference.images, self.items.labels)
        return MethodResult(name=name, speedup=run.speedup, wall_speedup=self.reference.seconds / run.seconds,
                            metrics=values, images=run.images, detail=detail)

    def retime(self) -> None:
        """Time full compute again (same images), so wall speed-ups compare runs made close together."""
        again = self.runner.run(None, desc="full compute (re-timed)")
        if not torch.equal(again.images, self.reference.images):
            raise RuntimeError("full compute is not deterministic on this machine; wall speed-ups would mislead")
        self.reference = again

    def full(self) -> MethodResult:
        return self._result("full compute", self.reference, "")

    def plan(self, name: str, plan: Sequence[Any], detail: str = "") -> MethodResult:
        run = self.runner.run(plan_installer(plan, self.profile, self.cost), desc=name)
        return self._result(name, run, detail)

    def baseline(self, name: str, budget: Any, calibration: Callable[[], Any] | None = None) -> MethodResult:
        """Baseline ``name`` set to ``budget``: a plan resolved from the cost, a plan chosen on the
        calibration items (``calibration()`` gives their evaluator), or a threshold tuned on these items."""
        from autodelta.baselines import get_baseline, resolve_plan, tune_threshold

        if get_baseline(name).kind in ("schedule", "calibrated"):
            plan = resolve_plan(name, self.cost, self.profile.steps, budget, calibration)
            full_steps = sum(step is None for step in plan)
            return self.plan(name, plan, f"{full_steps} full steps of {len(plan)}")
        tuned = tune_threshold(name, lambda installer: self.runner.run(installer, desc=f"{name} tuning"), budget)
        return self._result(name, tuned.run, f"threshold {tuned.threshold:.4g}")
