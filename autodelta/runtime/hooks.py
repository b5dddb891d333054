"""The diffusers hooks: one on the transformer counts steps, one per block runs, skips or replays it."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks import ModelHook

from autodelta.errors import ScheduleError
from autodelta.runtime.state import LATEST, PREVIOUS, RUN, SKIP, DeltaCacheState

if TYPE_CHECKING:
    from autodelta.models.blocks import Streams, StreamTuple

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
    """Runs, skips or replays one block according to the current step's table.

    Works on the block's streams (:class:`~autodelta.models.blocks.Streams`): a Δ is a tuple
    over them, so a range of FLUX blocks caches the image and the text stream alike.
    """

    def __init__(self, state: DeltaCacheState, index: int, streams: Streams) -> None:
        super().__init__()
        self.state = state
        self.index = index
        self.streams = streams

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        state, k = self.state, self.index
        table = state.table
        action = table.actions[k]
        if action == RUN:
            records_in = table.record_in.get(k)
            if records_in:
                inputs = self.streams.take(args, kwargs)
                for rng in records_in:
                    state.inputs[(state.call_in_step, rng)] = inputs
            out = self.fn_ref.original_forward(*args, **kwargs)  # type: ignore[misc]
            records_out = table.record_out.get(k)
            if records_out:
                outputs = self.streams.split(out)
                for rng in records_out:
                    delta = difference(outputs, state.inputs.pop((state.call_in_step, rng)))
                    if rng in table.needed:
                        state.deltas[(LATEST, state.call_in_step, rng)] = delta
                    if state.observer is not None and rng in state.observer.spans:
                        state.observer(state.step, state.call_in_step, rng, joined(delta))
                held = sum(streams_nbytes(d) for d in state.deltas.values())
                state.stats.peak_cache_bytes = max(state.stats.peak_cache_bytes, held)
            return out
        inputs = self.streams.take(args, kwargs)
        if action == SKIP:
            return self.streams.join(inputs)
        try:
            assert table.replay is not None
            delta = state.deltas[(LATEST, state.call_in_step, table.replay)]
            if table.weight is not None:
                older = state.deltas[(PREVIOUS, state.call_in_step, table.replay)]
                delta = extrapolated(delta, older, table.weight)
        except KeyError:
            raise ScheduleError(
                f"step {state.step} replays blocks {table.replay} but no full step recorded it in this "
                "generation; start generations from step 0 (call handle.reset() after an aborted run)"
            ) from None
        return self.streams.join(tuple(None if d is None or h is None else h + d for h, d in zip(inputs, delta)))


def difference(outputs: StreamTuple, inputs: StreamTuple) -> StreamTuple:
    """Δ per stream (``None`` where the last block returns no such stream: SD3's last block drops the text)."""
    return tuple(None if o is None or i is None else o - i for o, i in zip(outputs, inputs))


def extrapolated(latest: StreamTuple, older: StreamTuple, weight: float) -> StreamTuple:
    """``Δ_a + w (Δ_a - Δ_b)`` per stream."""
    return tuple(None if a is None or b is None else torch.lerp(a, b, -weight) for a, b in zip(latest, older))


def joined(delta: StreamTuple) -> torch.Tensor:
    """One tensor per Δ for observers: a single stream as it is, several as ``[batch, tokens, channels]``
    with the streams' tokens side by side (FLUX's text and image streams share their width)."""
    present = [d for d in delta if d is not None]
    if len(present) == 1:
        return present[0]
    return torch.cat([d.reshape(d.shape[0], -1, d.shape[-1]) for d in present], dim=1)


def streams_nbytes(delta: StreamTuple) -> int:
    return sum(d.nbytes for d in delta if d is not None)
