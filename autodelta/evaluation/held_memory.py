"""What a caching method holds: bytes of live tensors between transformer calls.

A cache's cost in memory is the state it keeps from one sampling step to the next (Δ
offsets, TaylorSeer's derivatives, MagCache's residual). On CUDA the allocator's peak shows
it; CPU PyTorch keeps no allocator statistics, so here the live tensors are counted instead,
after every transformer call, when a step's activations are gone and only held state remains.
The garbage collector tracks every Python tensor; storages shared by views count once. A
census costs a collection and a walk of every object (~0.3 s), so the harness takes it on one item.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def live_tensor_bytes() -> int:
    """Bytes of the distinct storages behind every live Python tensor (parameters included).

    Collects first: tensors in unreachable reference cycles wait for the collector, and would make
    two censuses of the same state differ."""
    gc.collect()
    seen: set[tuple[str, int]] = set()
    total = 0
    for obj in gc.get_objects():
        if not issubclass(type(obj), torch.Tensor) or obj.is_meta or obj.is_sparse:
            continue
        storage = obj.untyped_storage()
        key = (str(obj.device), storage.data_ptr())
        if key[1] and key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


class HeldMemory:
    """The most bytes held by live tensors after any transformer call while :meth:`watching`."""

    def __init__(self) -> None:
        self.peak = 0

    @contextmanager
    def watching(self, transformer: torch.nn.Module) -> Iterator[None]:
        def after_call(*_: Any) -> None:
            self.peak = max(self.peak, live_tensor_bytes())

        handle = transformer.register_forward_hook(after_call)
        try:
            yield
        finally:
            handle.remove()
