"""The diffusers hooks: one on the transformer counts steps, one per block runs, skips or replays it."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.hooks import ModelHook

from autodelta.errors import ScheduleError
from autodelta.runtime.state import LATEST, PREVIOUS, RUN, SKIP, DeltaCacheState

STEP_HOOK = "autodelta_step_tracker"


BLOCK_HOOK = "autodelta_delta_block"


class StepTrackerHook(ModelHook):
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


class DeltaBlockHook(ModelHook):
    """Runs, skips or replays one block according to the current step's table."""

    def __init__(self, state: DeltaCacheState, index: int) -> None:
        super().__init__()
        self.state = state
        self.index = index

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        state, k = self.state, self.index
        table = state.table
        action = table.actions[k]
        if action == RUN:
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
                        state.deltas[(LATEST, state.call_in_step, rng)] = delta
                    if state.observer is not None and rng in state.observer.spans:
                        state.observer(state.step, state.call_in_step, rng, delta)
                held = sum(t.nbytes for t in state.deltas.values())
                state.stats.peak_cache_bytes = max(state.stats.peak_cache_bytes, held)
            return out
        hidden = args[0] if args else kwargs["hidden_states"]
        if action == SKIP:
            return hidden
        try:
            assert table.replay is not None
            delta = state.deltas[(LATEST, state.call_in_step, table.replay)]
            if table.weight is not None:
                older = state.deltas[(PREVIOUS, state.call_in_step, table.replay)]
                return hidden + torch.lerp(delta, older, -table.weight)  # Δ_a + w (Δ_a - Δ_b)
        except KeyError:
            raise ScheduleError(
                f"step {state.step} replays blocks {table.replay} but no full step recorded it in this "
                "generation; start generations from step 0 (call handle.reset() after an aborted run)"
            ) from None
        return hidden + delta
