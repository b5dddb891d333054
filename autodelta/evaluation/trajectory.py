"""The full-compute trajectory as the error model reads it: every step's Δ of every span, per item, sketched.

While the reference is generated (once per study), each full step computes
``Δ_R(i) = h_{s+n} − h_s`` for the spans ``R`` of the search space anyway; an
:class:`~autodelta.runtime.DeltaObserver` keeps them. A Δ step's error is linear in
these (a replay uses ``Δ_R(a)``, a forecast ``Δ_R(a) + w (Δ_R(a) − Δ_R(b))``, both
against the true ``Δ_R(i)``), so a fixed random linear projection keeps what the model
needs: norms of differences, preserved in expectation (Johnson–Lindenstrauss).

The projection is Kronecker-structured, ``A · Δ_row · B`` with ``A`` (k₁×L) and ``B``
(C×k₂) Gaussian, so its matrices stay small for any token count ``L`` and width ``C``
(FLUX at 1024 px: 4096×3072 per row, 0.5 M numbers of matrices); a row small enough is
kept exactly. Memory: ``T × spans × items × rows per item × dim × 4`` bytes, with
``dim ≤ 4096`` — 26 MB for 20 steps, 4 spans, 20 items with CFG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autodelta.errors import AutodeltaError
from autodelta.plan.schedule import CachedRange

SKETCH_DIM = 4096
"""The most numbers kept per batch row of one Δ (exact below it)."""


@dataclass(frozen=True)
class Sketch:
    """The projection of one batch row's ``[L, C]`` Δ to ``rows × cols`` numbers (identity where it fits)."""

    tokens: int
    channels: int
    rows: int
    cols: int
    seed: int = 0

    @classmethod
    def for_shape(cls, tokens: int, channels: int, dim: int = SKETCH_DIM, seed: int = 0) -> Sketch:
        if tokens * channels <= dim:
            return cls(tokens, channels, tokens, channels, seed)
        rows = min(tokens, max(1, math.isqrt(dim)))
        return cls(tokens, channels, rows, min(channels, dim // rows), seed)

    @property
    def dim(self) -> int:
        return self.rows * self.cols

    def matrices(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gen = torch.Generator().manual_seed(self.seed)
        left = right = None
        if self.rows < self.tokens:
            left = (torch.randn(self.rows, self.tokens, generator=gen) / math.sqrt(self.rows)).to(device)
        if self.cols < self.channels:
            right = (torch.randn(self.channels, self.cols, generator=gen) / math.sqrt(self.cols)).to(device)
        return left, right

    def as_dict(self) -> dict[str, int]:
        return {"tokens": self.tokens, "channels": self.channels, "rows": self.rows, "cols": self.cols,
                "seed": self.seed}


def _rows(delta: torch.Tensor) -> torch.Tensor:
    """A Δ as ``[batch rows, tokens, channels]`` (image-shaped hidden states flatten their spatial axes)."""
    if delta.dim() == 2:
        return delta[:, None, :]
    return delta.reshape(delta.shape[0], -1, delta.shape[-1])


@dataclass
class Trajectory:
    """``deltas[span]``: ``[T, items, dim]`` float32 on the CPU, item ``j``'s Δ of ``span`` at every step.

    Each span has its own width: spans differ in shape where a block drops a stream (SD3's last
    block returns no text, so a span ending there has only image tokens). ``sketch`` holds, per
    span (``"start,length"``), the projection of each call in a step.
    """

    spans: tuple[CachedRange, ...]
    steps: int
    items: int
    sketch: dict[str, list[dict[str, int]]]
    deltas: dict[CachedRange, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.deltas.values())

    def mismatch(self) -> str | None:
        """Why the vectors do not fit what their projections say (a span's width is the sum over its calls of
        rows per item × the projection's size, each projection the one this version makes), or ``None``."""
        for span in self.spans:
            calls = self.sketch.get(span_key(span))
            width = int(self.deltas[span].shape[2])
            try:
                expected = sum(int(c["rows_per_item"]) * int(c["rows"]) * int(c["cols"]) for c in calls or ())
                made = all(Sketch.for_shape(int(c["tokens"]), int(c["channels"])).as_dict()
                           == {k: int(c[k]) for k in ("tokens", "channels", "rows", "cols", "seed")} for c in calls or ())
            except (KeyError, TypeError, ValueError):
                return f"blocks {span.start}-{span.stop - 1} have no readable projection record"
            if not calls or not made or width != expected:
                return f"the Δ of blocks {span.start}-{span.stop - 1} holds {width} numbers per item, its projections {expected}"
        return None

    def to_doc(self) -> dict[str, Any]:
        return {"spans": [[s.start, s.length] for s in self.spans], "steps": self.steps, "items": self.items,
                "sketch": {k: [dict(d) for d in v] for k, v in self.sketch.items()},
                "deltas": [self.deltas[s] for s in self.spans]}

    @classmethod
    def from_doc(cls, doc: Any) -> Trajectory | None:
        """The trajectory stored with a cached reference, or ``None`` when it is missing or malformed."""
        try:
            spans = tuple(CachedRange(int(s), int(n)) for s, n in doc["spans"])
            deltas = doc["deltas"]
            steps, items = int(doc["steps"]), int(doc["items"])
            if isinstance(deltas, torch.Tensor):  # written before spans had their own widths: one stacked tensor
                deltas = list(deltas) if deltas.dim() == 4 else []
            if not isinstance(deltas, (list, tuple)) or len(deltas) != len(spans):
                return None
            for d in deltas:
                if not isinstance(d, torch.Tensor) or d.dim() != 3 or tuple(d.shape[:2]) != (steps, items) \
                        or not bool(torch.isfinite(d).all()):
                    return None
            sketch = doc.get("sketch") or {}
            return cls(spans, steps, items, dict(sketch) if isinstance(sketch, dict) else {}, dict(zip(spans, deltas)))
        except (KeyError, TypeError, ValueError):
            return None


def span_key(span: CachedRange) -> str:
    return f"{span.start},{span.length}"


class TrajectoryRecorder:
    """A :class:`~autodelta.runtime.DeltaObserver` for one batch of items ``offset … offset+count-1``.

    Row ``r`` of a call belongs to item ``r % count`` (a CFG batch repeats the items), so an
    item's vector is its rows' sketches side by side, in row order, then call order. Each
    span, and each call in a step, has its own projection: their shapes may differ (SD3's last
    block drops the text stream; a true-CFG call's negative prompt may be another length).
    """

    def __init__(self, spans: Sequence[CachedRange], steps: int, offset: int, count: int, dim: int = SKETCH_DIM) -> None:
        self.spans = frozenset(spans)
        self.steps, self.offset, self.count, self.dim = steps, offset, count, dim
        self.sketches: dict[tuple[CachedRange, int], Sketch] = {}
        self.rows_per_item: dict[tuple[CachedRange, int], int] = {}  # a CFG-batched call has two per item
        self._matrices: dict[tuple[CachedRange, int], tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.parts: dict[tuple[CachedRange, int], list[torch.Tensor]] = {}

    def __call__(self, step: int, call: int, span: CachedRange, delta: torch.Tensor) -> None:
        rows = _rows(delta.detach()).float()
        key = (span, call)
        sketch = self.sketches.get(key)
        if sketch is None:
            sketch = self.sketches[key] = Sketch.for_shape(rows.shape[1], rows.shape[2], self.dim)
            self._matrices[key] = sketch.matrices(rows.device)
            self.rows_per_item[key] = rows.shape[0] // self.count
        elif (rows.shape[1], rows.shape[2]) != (sketch.tokens, sketch.channels):
            raise AutodeltaError(f"the Δ of blocks {span.start}-{span.stop - 1} changed shape between steps "
                                 f"({sketch.tokens}x{sketch.channels}, then {rows.shape[1]}x{rows.shape[2]}); "
                                 "the trajectory error model needs one shape per span and call")
        left, right = self._matrices[key]
        if left is not None:
            rows = left @ rows
        if right is not None:
            rows = rows @ right
        per_item = rows.reshape(-1, self.count, rows.shape[1] * rows.shape[2]).transpose(0, 1).reshape(self.count, -1)
        self.parts.setdefault((span, step), []).append(per_item.cpu())

    def sketch_doc(self) -> dict[str, list[dict[str, int]]]:
        """Each span's projections, one per call in a step (what the trajectory stores beside its vectors)."""
        out: dict[str, list[dict[str, int]]] = {}
        for (span, call), sketch in sorted(self.sketches.items(), key=lambda kv: (kv[0][0].start, kv[0][0].length,
                                                                                  kv[0][1])):
            out.setdefault(span_key(span), []).append({**sketch.as_dict(),
                                                       "rows_per_item": self.rows_per_item[(span, call)]})
        return out

    def collect(self, into: dict[CachedRange, torch.Tensor], items: int) -> None:
        """Write this batch's vectors into ``into[span]`` (``[T, items, dim]``, created on first use)."""
        for (span, step), parts in self.parts.items():
            vector = torch.cat(parts, dim=1)
            if span not in into:
                into[span] = torch.zeros(self.steps, items, vector.shape[1])
            if into[span].shape[2] != vector.shape[1]:
                raise AutodeltaError(f"the Δ of blocks {span.start}-{span.stop - 1} has {vector.shape[1]} numbers per "
                                     f"item in one batch and {into[span].shape[2]} in another; generate the reference "
                                     "in one batch (--batch-size)")
            into[span][step, self.offset : self.offset + self.count] = vector
