"""The Δ-Cache state the hooks share: the plan as per-step tables, the step counter, the Δ tensors,
the stats."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from autodelta.errors import ScheduleError
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import CachedRange, Schedule, Step, cache_needs, forecast_weight

if TYPE_CHECKING:
    from autodelta.models.blocks import StreamTuple

# Per-step, per-block actions of the precomputed plan table.
RUN, SKIP, REPLAY = 0, 1, 2


# Δ-Cache slots: the last full step's Δ, and the one before it (kept for forecasts).
LATEST, PREVIOUS = 0, 1


@dataclass
class RuntimeStats:
    """What the schedule did, counted over every generation since ``apply`` (or ``reset_stats``)."""

    generations: int = 0
    steps: int = 0
    calls: int = 0
    blocks_run: int = 0
    blocks_skipped: int = 0
    macs_saved: float | None = None
    macs_run: float | None = None
    peak_cache_bytes: int = 0

    @property
    def skipped_share(self) -> float:
        total = self.blocks_run + self.blocks_skipped
        return self.blocks_skipped / total if total else 0.0

    def __str__(self) -> str:
        text = (
            f"{self.generations} generation(s), {self.steps} steps, {self.calls} transformer calls, "
            f"blocks run {self.blocks_run}, skipped {self.blocks_skipped} ({self.skipped_share:.1%})"
        )
        if self.macs_saved is not None and self.macs_run is not None:
            text += f", MACs saved {self.macs_saved / 1e9:.2f} G of {(self.macs_saved + self.macs_run) / 1e9:.2f} G"
        return text


class DeltaObserver(Protocol):
    """Receives every Δ a full step computes for ``spans`` (the trajectory error model records them).

    Called as ``observer(step, call, span, delta)``; ``delta`` is ``h_{s+n} - h_s`` of the whole
    call's batch. The observer must not keep a reference it modifies: the runtime may reuse it.
    """

    @property
    def spans(self) -> Collection[CachedRange]:
        """The spans whose Δ it wants on every full step."""

    def __call__(self, step: int, call: int, span: CachedRange, delta: torch.Tensor) -> None: ...


@dataclass
class StepTable:
    """What each block does at one step; built once from the plan."""

    actions: tuple[int, ...]
    replay: CachedRange | None = None  # the span a Δ step replays or forecasts
    weight: float | None = None  # forecast steps: w of Δ_a + w (Δ_a - Δ_b)
    skipped: int = 0
    keep: frozenset[CachedRange] = frozenset()  # full steps: spans whose older Δ stays for forecasts
    record_in: dict[int, tuple[CachedRange, ...]] = field(default_factory=dict)
    record_out: dict[int, tuple[CachedRange, ...]] = field(default_factory=dict)
    needed: frozenset[CachedRange] = frozenset()  # full steps: spans the plan's later steps read (the rest are observed)


def build_tables(plan: Sequence[Step], num_blocks: int, observed: Collection[CachedRange] = ()) -> list[StepTable]:
    tables: list[StepTable] = []
    for i, step in enumerate(plan):
        if step is None:
            needs = cache_needs(plan, i)
            rec_in: dict[int, list[CachedRange]] = {}
            rec_out: dict[int, list[CachedRange]] = {}
            for rng in sorted(needs.record | frozenset(observed)):
                rec_in.setdefault(rng.start, []).append(rng)
                rec_out.setdefault(rng.stop - 1, []).append(rng)
            tables.append(
                StepTable(
                    actions=(RUN,) * num_blocks,
                    keep=needs.keep,
                    record_in={k: tuple(v) for k, v in rec_in.items()},
                    record_out={k: tuple(v) for k, v in rec_out.items()},
                    needed=needs.record,
                )
            )
        else:
            actions = [RUN] * num_blocks
            actions[step.start] = REPLAY
            for k in range(step.start + 1, step.stop):
                actions[k] = SKIP
            tables.append(StepTable(actions=tuple(actions), replay=step.span, skipped=step.length,
                                     weight=forecast_weight(plan, i) if step.forecast else None))
    return tables


class DeltaCacheState:
    """Step counter and Δ-Cache shared by the hooks; Δ tensors live for one generation."""

    def __init__(self, schedule: Schedule, cost: CostModel | None, pipeline: Any | None,
                 observer: DeltaObserver | None = None) -> None:
        self.schedule = schedule
        self.observer = observer
        self.tables = build_tables(schedule.plan, schedule.num_blocks, observer.spans if observer else ())
        self.cost = cost
        self.pipeline = pipeline
        self.reset_stats()
        self.reset()

    def reset_stats(self) -> None:
        """Start counting anew (e.g. after a warm-up call)."""
        self.stats = RuntimeStats(macs_saved=0.0 if self.cost else None, macs_run=0.0 if self.cost else None)

    def reset(self) -> None:
        """Forget the generation in progress and free its Δ tensors."""
        self.step = -1
        self.call_in_step = 0
        self.last_timestep: float | None = None
        self.timesteps_ref: Any = None
        self.deltas: dict[tuple[int, int, CachedRange], StreamTuple] = {}  # (slot, call in step, span): Δ per stream
        self.inputs: dict[tuple[int, CachedRange], StreamTuple] = {}

    def resume(self, step: int, timestep: float, deltas: dict[Any, StreamTuple]) -> None:
        """Continue a generation after ``step`` (run with ``timestep``) from a saved Δ-Cache.

        The evaluator's prefix reuse restores saved sampler states through this, so the
        runtime's own counters never need setting by hand.
        """
        self.reset()
        self.step = step
        self.last_timestep = float(timestep)
        self.deltas = dict(deltas)

    # --- step tracking -----------------------------------------------------------------
    def begin_call(self, timestep: Any, batch: int) -> None:
        key = timestep_key(timestep)
        steps = self.schedule.steps
        if self.pipeline is not None:
            timesteps = getattr(getattr(self.pipeline, "scheduler", None), "timesteps", None)
            if timesteps is not None and timesteps is not self.timesteps_ref:
                if len(timesteps) != steps:
                    raise ScheduleError(
                        f"the pipeline runs {len(timesteps)} steps but the schedule has {steps}; "
                        f"call the pipeline with num_inference_steps={steps} or use a schedule made for "
                        f"{len(timesteps)} steps"
                    )
                self.reset()
                self.timesteps_ref = timesteps
        if key != self.last_timestep:
            if self.pipeline is None and self.last_timestep is not None and key > self.last_timestep:
                # bare transformer: samplers walk timesteps downwards, so a higher one starts a new
                # generation, also after a run that was aborted part-way (its Δ-Cache must not leak)
                self.reset()
            if self.step == steps - 1:
                if self.pipeline is not None and self.timesteps_ref is not None:
                    raise ScheduleError(
                        f"the transformer was called for more than the schedule's {steps} steps; "
                        "use a scheduler that makes one transformer step per timestep"
                    )
                self.reset()  # bare transformer: the next generation starts
            if self.step == -1:
                self.stats.generations += 1
            self.step += 1
            self.call_in_step = 0
            if self.schedule.plan[self.step] is None:
                # a full step replaces every Δ; the latest become the previous ones where a forecast needs them
                keep = self.tables[self.step].keep
                self.deltas = {(PREVIOUS, call, span): delta for (slot, call, span), delta in self.deltas.items()
                               if slot == LATEST and span in keep}
            self.last_timestep = key
            self.stats.steps += 1
        else:
            self.call_in_step += 1
        self.stats.calls += 1
        table = self.tables[self.step]
        self.stats.blocks_skipped += table.skipped
        self.stats.blocks_run += len(table.actions) - table.skipped
        if self.cost is not None and self.stats.macs_saved is not None and self.stats.macs_run is not None:
            run = self.cost.call(self.schedule.plan[self.step])
            self.stats.macs_saved += (self.cost.call_full - run) * batch
            self.stats.macs_run += run * batch

    @property
    def table(self) -> StepTable:
        return self.tables[self.step]


def timestep_key(timestep: Any) -> float:
    if isinstance(timestep, torch.Tensor):
        return float(timestep.reshape(-1)[0].item())
    if timestep is None:
        raise ScheduleError("the transformer was called without a timestep; autodelta needs it to count steps")
    return float(timestep)
