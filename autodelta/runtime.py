"""Δ-Cache runtime: installs a schedule on a diffusers transformer or pipeline.

Shaped like diffusers' own cache hooks (``diffusers/hooks/first_block_cache.py``): one
shared state object holds the step counter and Δ-Cache, one ``ModelHook`` on the
transformer tracks steps, one ``ModelHook`` per block executes the plan:

* full step: every block runs; for each range ``[s, s+n)`` a later Δ step will use,
  block ``s`` keeps its input ``h_s`` and block ``s+n-1`` stores ``Δ = h_{s+n} - h_s``;
* Δ step with range ``[s, s+n)``: block ``s`` returns ``h_s + Δ`` without computing,
  blocks ``s+1 … s+n-1`` pass their input through, everything else runs as usual;
* forecast step: the same, with ``Δ = Δ_a + w (Δ_a - Δ_b)`` extrapolated from the last two
  full steps ``a`` > ``b`` (``w`` = steps since ``a`` over ``a - b``), so a full step keeps
  the previous full step's Δ of the spans forecast after it.

Example::

    import autodelta
    with autodelta.apply(pipe, "schedule.yaml") as handle:
        image = pipe(class_labels=[207], num_inference_steps=20).images[0]
    print(handle.stats)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers.hooks import HookRegistry, ModelHook

from autodelta.cost import CostModel
from autodelta.errors import ScheduleError
from autodelta.schedule import CachedRange, Schedule, Step, cache_needs, forecast_weight, load_schedule

_STEP_HOOK = "autodelta_step_tracker"
_BLOCK_HOOK = "autodelta_delta_block"

# Per-step, per-block actions of the precomputed plan table.
_RUN, _SKIP, _REPLAY = 0, 1, 2
# Δ-Cache slots: the last full step's Δ, and the one before it (kept for forecasts).
_LATEST, _PREVIOUS = 0, 1


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
class _StepTable:
    """What each block does at one step; built once from the plan."""

    actions: tuple[int, ...]
    replay: CachedRange | None = None  # the span a Δ step replays or forecasts
    weight: float | None = None  # forecast steps: w of Δ_a + w (Δ_a - Δ_b)
    skipped: int = 0
    keep: frozenset[CachedRange] = frozenset()  # full steps: spans whose older Δ stays for forecasts
    record_in: dict[int, tuple[CachedRange, ...]] = field(default_factory=dict)
    record_out: dict[int, tuple[CachedRange, ...]] = field(default_factory=dict)
    needed: frozenset[CachedRange] = frozenset()  # full steps: spans the plan's later steps read (the rest are observed)


def _build_tables(plan: Sequence[Step], num_blocks: int, observed: Collection[CachedRange] = ()) -> list[_StepTable]:
    tables: list[_StepTable] = []
    for i, step in enumerate(plan):
        if step is None:
            needs = cache_needs(plan, i)
            rec_in: dict[int, list[CachedRange]] = {}
            rec_out: dict[int, list[CachedRange]] = {}
            for rng in sorted(needs.record | frozenset(observed)):
                rec_in.setdefault(rng.start, []).append(rng)
                rec_out.setdefault(rng.stop - 1, []).append(rng)
            tables.append(
                _StepTable(
                    actions=(_RUN,) * num_blocks,
                    keep=needs.keep,
                    record_in={k: tuple(v) for k, v in rec_in.items()},
                    record_out={k: tuple(v) for k, v in rec_out.items()},
                    needed=needs.record,
                )
            )
        else:
            actions = [_RUN] * num_blocks
            actions[step.start] = _REPLAY
            for k in range(step.start + 1, step.stop):
                actions[k] = _SKIP
            tables.append(_StepTable(actions=tuple(actions), replay=step.span, skipped=step.length,
                                     weight=forecast_weight(plan, i) if step.forecast else None))
    return tables


class DeltaCacheState:
    """Step counter and Δ-Cache shared by the hooks; Δ tensors live for one generation."""

    def __init__(self, schedule: Schedule, cost: CostModel | None, pipeline: Any | None,
                 observer: DeltaObserver | None = None) -> None:
        self.schedule = schedule
        self.observer = observer
        self.tables = _build_tables(schedule.plan, schedule.num_blocks, observer.spans if observer else ())
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
        self.deltas: dict[tuple[int, int, CachedRange], torch.Tensor] = {}  # (slot, call in step, span)
        self.inputs: dict[tuple[int, CachedRange], torch.Tensor] = {}

    def resume(self, step: int, timestep: float, deltas: dict[Any, torch.Tensor]) -> None:
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
        key = _timestep_key(timestep)
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
                self.deltas = {(_PREVIOUS, call, span): delta for (slot, call, span), delta in self.deltas.items()
                               if slot == _LATEST and span in keep}
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
    def table(self) -> _StepTable:
        return self.tables[self.step]


def _timestep_key(timestep: Any) -> float:
    if isinstance(timestep, torch.Tensor):
        return float(timestep.reshape(-1)[0].item())
    if timestep is None:
        raise ScheduleError("the transformer was called without a timestep; autodelta needs it to count steps")
    return float(timestep)


class _StepTrackerHook(ModelHook):
    """On every transformer call: advance the step when the timestep changes.

    Stateful in the diffusers sense: ``HookRegistry.reset_stateful_hooks()`` (or
    ``handle.reset()``) starts the next call as step 0 of a new generation.
    """

    _is_stateful = True

    def __init__(self, state: DeltaCacheState) -> None:
        super().__init__()
        self.state = state
        self._timestep_index: int | None = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        # where `timestep` sits positionally differs: DiT (hidden, timestep, …), PixArt (hidden, encoder, timestep, …)
        names = list(inspect.signature(type(module).forward).parameters)[1:]
        self._timestep_index = names.index("timestep") if "timestep" in names else None
        return module

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.reset()
        return module

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        index = self._timestep_index
        positional = args[index] if index is not None and len(args) > index else None
        timestep = kwargs.get("timestep", positional)
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        batch = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 1
        self.state.begin_call(timestep, batch)
        return args, kwargs


class _DeltaBlockHook(ModelHook):
    """Runs, skips or replays one block according to the current step's table."""

    def __init__(self, state: DeltaCacheState, index: int) -> None:
        super().__init__()
        self.state = state
        self.index = index

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        state, k = self.state, self.index
        table = state.table
        action = table.actions[k]
        if action == _RUN:
            records_in = table.record_in.get(k)
            if records_in:
                hidden = args[0] if args else kwargs["hidden_states"]
                for rng in records_in:
                    state.inputs[(state.call_in_step, rng)] = hidden
            out = self.fn_ref.original_forward(*args, **kwargs)  # type: ignore[misc]
            records_out = table.record_out.get(k)
            if records_out:
                for rng in records_out:
                    start = state.inputs.pop((state.call_in_step, rng))
                    delta = out - start
                    if rng in table.needed:
                        state.deltas[(_LATEST, state.call_in_step, rng)] = delta
                    if state.observer is not None and rng in state.observer.spans:
                        state.observer(state.step, state.call_in_step, rng, delta)
                held = sum(t.nbytes for t in state.deltas.values())
                state.stats.peak_cache_bytes = max(state.stats.peak_cache_bytes, held)
            return out
        hidden = args[0] if args else kwargs["hidden_states"]
        if action == _SKIP:
            return hidden
        try:
            assert table.replay is not None
            delta = state.deltas[(_LATEST, state.call_in_step, table.replay)]
            if table.weight is not None:
                older = state.deltas[(_PREVIOUS, state.call_in_step, table.replay)]
                return hidden + torch.lerp(delta, older, -table.weight)  # Δ_a + w (Δ_a - Δ_b)
        except KeyError:
            raise ScheduleError(
                f"step {state.step} replays blocks {table.replay} but no full step recorded it in this "
                "generation; start generations from step 0 (call handle.reset() after an aborted run)"
            ) from None
        return hidden + delta


class DeltaCacheHandle:
    """An installed schedule. ``remove()`` (or leaving the ``with`` block) restores the model exactly."""

    def __init__(self, transformer: torch.nn.Module, blocks: Sequence[torch.nn.Module], state: DeltaCacheState,
                 pipeline: Any | None) -> None:
        self.transformer = transformer
        self.blocks = list(blocks)
        self.state = state
        self.pipeline = pipeline
        self._removed = False
        self._compiled: list[tuple[torch.nn.Module, Any]] = []
        self._wrapped_free: Any = None
        if pipeline is not None and hasattr(pipeline, "maybe_free_model_hooks"):
            original = pipeline.maybe_free_model_hooks
            had_instance_attr = "maybe_free_model_hooks" in vars(pipeline)

            def free_after_generation() -> Any:
                state.reset()  # the generation is over: drop its Δ tensors now
                return original()

            pipeline.maybe_free_model_hooks = free_after_generation
            self._wrapped_free = (original, had_instance_attr)

    @property
    def schedule(self) -> Schedule:
        return self.state.schedule

    @property
    def stats(self) -> RuntimeStats:
        return self.state.stats

    def reset(self) -> None:
        """Start the next call as step 0 of a new generation and free cached Δ tensors."""
        self.state.reset()

    def reset_stats(self) -> None:
        """Count from zero again (after a warm-up call, say)."""
        self.state.reset_stats()

    def remove(self) -> None:
        if self._removed:
            return
        for block in self.blocks:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(_BLOCK_HOOK, recurse=False)
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.remove_hook(_STEP_HOOK, recurse=False)
        _invalidate(registry)
        if self._wrapped_free is not None and self.pipeline is not None:
            original, had_instance_attr = self._wrapped_free
            if had_instance_attr:
                self.pipeline.maybe_free_model_hooks = original
            else:
                del self.pipeline.maybe_free_model_hooks
        for block, saved in self._compiled:
            if saved is None:
                vars(block).pop("forward", None)  # back to the class's own forward
            else:
                block.forward = saved
        self.state.reset()
        self._removed = True

    def __enter__(self) -> DeltaCacheHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def find_blocks(transformer: torch.nn.Module, attr: str = "transformer_blocks") -> torch.nn.ModuleList:
    """The block list of a DiT-style transformer (``transformer_blocks`` in DiT and PixArt)."""
    blocks = getattr(transformer, attr, None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
        raise ScheduleError(
            f"{type(transformer).__name__} has no non-empty ModuleList '{attr}'; pass blocks_attr= "
            "with the name of its transformer block list"
        )
    return blocks


def apply(
    pipe_or_transformer: Any,
    schedule: Schedule | str | os.PathLike[str],
    cost: CostModel | None = None,
    blocks_attr: str = "transformer_blocks",
    compile: bool = False,
    observer: DeltaObserver | None = None,
) -> DeltaCacheHandle:
    """Install ``schedule`` on a diffusers pipeline (``pipe.transformer``) or a bare transformer.

    Checks that the model's block count matches the schedule now, and the pipeline's step
    count at the first call of each generation. ``cost`` enables MACs in ``handle.stats``;
    when omitted, the cost of the schedule's named profile is used if autodelta knows it.

    ``compile=True`` compiles each block's own forward with ``torch.compile`` (regional
    compilation) *before* the hooks wrap it, so the hooks stay in eager Python: a block the
    plan skips is never called, a computed block runs its compiled graph, and the graph
    does not depend on the step (no recompilation per step; identical blocks share it).
    ``remove()`` restores the blocks' eager forwards.

    ``observer`` (see :class:`DeltaObserver`) is handed the Δ of its spans on every full step,
    whether or not the plan replays them: that is how a full-compute run records its trajectory.
    """
    if not isinstance(schedule, Schedule):
        schedule = load_schedule(schedule)
    pipeline = None
    transformer = pipe_or_transformer
    if isinstance(getattr(pipe_or_transformer, "transformer", None), torch.nn.Module):
        pipeline, transformer = pipe_or_transformer, pipe_or_transformer.transformer
    if not isinstance(transformer, torch.nn.Module):
        raise ScheduleError(
            f"autodelta.apply needs a diffusers pipeline with a .transformer or a transformer module, "
            f"got {type(pipe_or_transformer).__name__}"
        )
    blocks = find_blocks(transformer, blocks_attr)
    if len(blocks) != schedule.num_blocks:
        raise ScheduleError(
            f"the model has N_b={len(blocks)} blocks but the schedule was made for N_b={schedule.num_blocks} "
            f"({schedule.model}); use a schedule made for this model"
        )
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(_STEP_HOOK) is not None:
        raise ScheduleError("a schedule is already applied to this model; call .remove() on its handle first")
    if cost is None:
        cost = _profile_cost(schedule)
    state = DeltaCacheState(schedule, cost, pipeline, observer)
    compiled = [(block, vars(block).get("forward")) for block in blocks] if compile else []
    for block, _ in compiled:
        block.forward = torch.compile(block.forward)
    registry.register_hook(_StepTrackerHook(state), _STEP_HOOK)
    for index, block in enumerate(blocks):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_DeltaBlockHook(state, index), _BLOCK_HOOK)
    _invalidate(registry)
    handle = DeltaCacheHandle(transformer, list(blocks), state, pipeline)
    handle._compiled = compiled
    return handle


def _invalidate(registry: HookRegistry) -> None:
    if hasattr(registry, "invalidate_child_registries_cache"):
        registry.invalidate_child_registries_cache()


def _profile_cost(schedule: Schedule) -> CostModel | None:
    from autodelta.models import known_profiles, load_profile

    if schedule.model not in known_profiles():
        return None
    profile = load_profile(schedule.model)
    cost = profile.cost_model()
    if cost is None or cost.num_blocks != schedule.num_blocks:
        return None
    return cost
