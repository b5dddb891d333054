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

import os
from collections.abc import Sequence
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from autodelta.errors import ScheduleError
from autodelta.models.blocks import BlocksSpec, block_stack
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import Schedule, load_schedule
from autodelta.runtime.hooks import BLOCK_HOOK, STEP_HOOK, DeltaBlockHook, StepTrackerHook
from autodelta.runtime.state import DeltaCacheState, DeltaObserver, RuntimeStats


class DeltaCacheHandle:
    """An installed schedule. ``remove()`` (or leaving the ``with`` block) restores the model exactly."""

    def __init__(self, transformer: torch.nn.Module, blocks: Sequence[torch.nn.Module], state: DeltaCacheState,
                 pipeline: Any | None, compiled: Sequence[tuple[torch.nn.Module, Any]] = ()) -> None:
        self.transformer = transformer
        self.blocks = list(blocks)
        self.state = state
        self.pipeline = pipeline
        self._removed = False
        self._compiled = list(compiled)  # (block, its own forward before torch.compile, or None): restored on remove
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
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(BLOCK_HOOK, recurse=False)
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.remove_hook(STEP_HOOK, recurse=False)
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


def apply(
    pipe_or_transformer: Any,
    schedule: Schedule | str | os.PathLike[str],
    cost: CostModel | None = None,
    blocks_attr: BlocksSpec = None,
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

    ``blocks_attr`` names the block list(s) when the transformer's class is not one autodelta knows
    (:data:`~autodelta.models.blocks.LAYOUTS`); FLUX's two lists are one stack, indexed across them.

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
    stack = block_stack(type(transformer).__name__, blocks_attr)
    blocks = stack.blocks(transformer)
    if len(blocks) != schedule.num_blocks:
        raise ScheduleError(
            f"the model has N_b={len(blocks)} blocks but the schedule was made for N_b={schedule.num_blocks} "
            f"({schedule.model}); use a schedule made for this model"
        )
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(STEP_HOOK) is not None:
        raise ScheduleError("a schedule is already applied to this model; call .remove() on its handle first")
    if cost is None:
        cost = _profile_cost(schedule)
    state = DeltaCacheState(schedule, cost, pipeline, observer)
    compiled = [(block, vars(block).get("forward")) for block in blocks] if compile else []
    for block, _ in compiled:
        block.forward = torch.compile(block.forward)
    registry.register_hook(StepTrackerHook(state), STEP_HOOK)
    for index, block in enumerate(blocks):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(DeltaBlockHook(state, index, stack.streams),
                                                                          BLOCK_HOOK)
    _invalidate(registry)
    return DeltaCacheHandle(transformer, list(blocks), state, pipeline, compiled)


def _invalidate(registry: HookRegistry) -> None:
    if hasattr(registry, "invalidate_child_registries_cache"):
        registry.invalidate_child_registries_cache()


def _profile_cost(schedule: Schedule) -> CostModel | None:
    from autodelta.models.loading import known_profiles, load_profile

    if schedule.model not in known_profiles():
        return None
    profile = load_profile(schedule.model)
    cost = profile.cost_model()
    if cost is None or cost.num_blocks != schedule.num_blocks:
        return None
    return cost
