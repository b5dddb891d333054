"""The schedule: an explicit per-step plan, the Δ-DiT family that generates one, and its file.

A plan is what the runtime executes: one entry per sampling step, ``None`` for a full
step or a :class:`CachedRange` ``[s, s+n)`` whose blocks are replaced by the Δ-Cache
recorded on the most recent full step (docs/design.md §1), or, with ``order=1``, by Δ
extrapolated linearly from the last two full steps (Δ forecasting, docs/design.md §1). The
Δ-DiT parameters that produced a plan travel beside it for provenance only.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autodelta.errors import ScheduleError
from autodelta.files import Fields, atomic_write, dump_yaml, read_yaml
from autodelta.version import __version__

FORMAT = "autodelta/schedule@2"
READS = ("autodelta/schedule@1", FORMAT)
"""@2 added ``{forecast: [start, length]}`` plan entries; @1 files (replay only) still load."""
MAX_BLOCKS = 4096
"""More transformer blocks than any DiT has; larger counts in a file are mistakes (or attacks)."""
MAX_STEPS = 10_000


@dataclass(frozen=True, order=True)
class CachedRange:
    """Blocks ``[start, start + length)`` skipped on a Δ step.

    ``order`` 0 replays the Δ recorded on the last full step; 1 forecasts it, extrapolating
    linearly (in step index) from the Δs of the last two full steps, TaylorSeer's idea
    applied to the Δ offset. Both cost the same MACs.
    """

    start: int
    length: int
    order: int = 0

    @property
    def stop(self) -> int:
        return self.start + self.length

    @property
    def span(self) -> CachedRange:
        """The blocks alone: what a full step records, whichever way a Δ step uses it."""
        return self if self.order == 0 else CachedRange(self.start, self.length)

    @property
    def forecast(self) -> bool:
        return self.order == 1

    def __str__(self) -> str:
        return f"{'forecast' if self.forecast else 'delta'} [{self.start}, {self.length}]"


Step = CachedRange | None
"""One plan entry: ``None`` is a full step, a :class:`CachedRange` is a Δ step."""


def previous_full(plan: Sequence[Step], step: int) -> list[int]:
    """The full steps before ``step``, latest first."""
    return [i for i in range(step - 1, -1, -1) if plan[i] is None]


def forecast_weight(plan: Sequence[Step], step: int) -> float:
    """``w`` of the forecast ``Δ = Δ_a + w (Δ_a - Δ_b)`` at ``step``, ``a`` > ``b`` its last two full steps."""
    a, b = previous_full(plan, step)[:2]
    return (step - a) / (a - b)


def canonical(plan: Sequence[Step]) -> tuple[Step, ...]:
    """``plan`` with forecasts that have only one full step before them turned into replays.

    Such a forecast has nothing to extrapolate from; the search's generators call this so
    that a plan file never holds one (:func:`validate_plan` refuses it).
    """
    out = list(plan)
    fulls = 0
    for i, step in enumerate(out):
        if step is None:
            fulls += 1
        elif step.forecast and fulls < 2:
            out[i] = step.span
    return tuple(out)


def validate_plan(plan: Sequence[Step], num_blocks: int, where: str = "plan") -> tuple[Step, ...]:
    """Check the invariants of docs/design.md §1; raise :class:`ScheduleError` naming the bad entry."""
    if len(plan) == 0:
        raise ScheduleError(f"{where} is empty; give one entry per sampling step")
    if plan[0] is not None:
        raise ScheduleError(
            f"{where}[0] is {plan[0]} but step 0 must be full (no Δ exists yet); make it 'full'"
        )
    for i, step in enumerate(plan):
        if step is None:
            continue
        if not isinstance(step, CachedRange):
            raise ScheduleError(f"{where}[{i}] is {step!r}; use 'full' or {{delta: [start, length]}}")
        if step.order not in (0, 1):
            raise ScheduleError(f"{where}[{i}] has order {step.order}; use 0 (replay) or 1 (linear forecast)")
        if step.forecast and len(previous_full(plan, i)) < 2:
            raise ScheduleError(
                f"{where}[{i}] forecasts Δ but only one full step precedes it; a forecast extrapolates from "
                "the last two full steps: make it a replay ({delta: [start, length]})"
            )
        if step.start < 0 or step.length < 1 or step.stop > num_blocks:
            raise ScheduleError(
                f"{where}[{i}] caches blocks [{step.start}, {step.stop}) which is outside "
                f"[0, {num_blocks}) for N_b={num_blocks}; use 0 <= start, 1 <= length, "
                f"start + length <= {num_blocks}"
            )
    return tuple(plan)


@dataclass(frozen=True)
class DeltaDiTParams:
    """The Δ-DiT family (docs/design.md §1): interval ``N``, cached blocks ``N_c``, boundary ``b``.

    Step ``i`` is full when ``i % N == 0``; otherwise it caches ``[s_early, s_early+N_c)``
    before the boundary (outline stage) and ``[s_late, s_late+N_c)`` from it on (detail).
    """

    interval: int
    cached_blocks: int
    boundary: int
    start_early: int
    start_late: int

    def plan(self, steps: int, num_blocks: int) -> tuple[Step, ...]:
        if self.interval < 1:
            raise ScheduleError(f"interval N={self.interval} must be >= 1")
        if not 1 <= self.cached_blocks <= num_blocks:
            raise ScheduleError(f"N_c={self.cached_blocks} must be in [1, {num_blocks}]")
        if not 0 <= self.boundary <= steps:
            raise ScheduleError(f"boundary b={self.boundary} must be in [0, {steps}]")
        early = CachedRange(self.start_early, self.cached_blocks)
        late = CachedRange(self.start_late, self.cached_blocks)
        plan: list[Step] = []
        for i in range(steps):
            if i % self.interval == 0:
                plan.append(None)
            else:
                plan.append(early if i < self.boundary else late)
        return validate_plan(plan, num_blocks, where="Δ-DiT plan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": "delta-dit",
            "N": self.interval,
            "N_c": self.cached_blocks,
            "b": self.boundary,
            "s_early": self.start_early,
            "s_late": self.start_late,
        }


def sampler_family(scheduler: str) -> str:
    """The kind of sampler a scheduler class is: a plan made for one kind means nothing for another."""
    name = scheduler.lower()
    if name.startswith(("lcm", "tcd")):
        return "consistency sampler"
    if "flowmatch" in name:
        return "flow-matching sampler"
    return "diffusion sampler"


def paper_boundary(steps: int) -> tuple[int, str]:
    """The paper's boundary: b=12 for T=20 (its PixArt-α setting), else round(0.6·T)."""
    if steps == 20:
        return 12, "b=12: the paper's setting for T=20"
    return round(0.6 * steps), f"b=round(0.6*T)={round(0.6 * steps)}: paper's b=12 at T=20 scaled to T={steps}"


def paper_params(steps: int, num_blocks: int, interval: int, cached_blocks: int) -> DeltaDiTParams:
    """The paper's hand-set positions: rear blocks cached early, front blocks late."""
    boundary, _ = paper_boundary(steps)
    return DeltaDiTParams(
        interval=interval,
        cached_blocks=cached_blocks,
        boundary=boundary,
        start_early=num_blocks - cached_blocks,
        start_late=0,
    )


@dataclass(frozen=True)
class Schedule:
    """A plan for one model and sampler, with its cost, quality and provenance (docs/design.md §4)."""

    model: str
    num_blocks: int
    scheduler: str
    steps: int
    plan: tuple[Step, ...]
    guidance_scale: float | None = None
    pretrained: str | None = None
    params: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # where the model came from when it is not a shipped profile (YAML, folder, hub id)

    def __post_init__(self) -> None:
        if not 1 <= self.num_blocks <= MAX_BLOCKS:
            raise ScheduleError(f"model.num_blocks={self.num_blocks} must be in [1, {MAX_BLOCKS}]")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ScheduleError(f"sampler.steps={self.steps} must be in [1, {MAX_STEPS}]")
        if self.guidance_scale is not None and not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ScheduleError(f"guidance_scale={self.guidance_scale} must be a finite number >= 0 (1 or less: no CFG)")
        if len(self.plan) != self.steps:
            raise ScheduleError(
                f"plan has {len(self.plan)} steps but sampler.steps is {self.steps}; "
                "give exactly one plan entry per sampling step"
            )
        validate_plan(self.plan, self.num_blocks)

    @property
    def full_steps(self) -> int:
        return sum(step is None for step in self.plan)

    def with_updates(self, **changes: Any) -> Schedule:
        return replace(self, **changes)

    # --- file format -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        provenance = {"autodelta": __version__, "study": None, "trial": None, "date": None}
        provenance.update(self.provenance)
        if provenance["date"] is None:
            provenance["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "format": FORMAT,
            "model": {"name": self.model, "pretrained": self.pretrained, "num_blocks": self.num_blocks,
                      **({"source": self.source} if self.source else {})},
            "sampler": {"scheduler": self.scheduler, "steps": self.steps},
            "guidance_scale": self.guidance_scale,
            "plan": encode_plan(self.plan),
            "params": self.params,
            "cost": self.cost,
            "quality": self.quality,
            "provenance": provenance,
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "schedule") -> Schedule:
        reader = Fields(doc, source, ScheduleError, hint=" (see README, schedule format)")
        fmt = reader.get("format", str)
        if fmt not in READS:
            raise ScheduleError(
                f"{source}: format is {fmt!r} but autodelta reads {' and '.join(map(repr, READS))}; "
                "re-export the schedule with this autodelta version"
            )
        model = reader.section("model")
        sampler = reader.section("sampler")
        num_blocks = model.get("num_blocks", int)
        raw_plan = reader.get("plan", list)
        if len(raw_plan) > MAX_STEPS:  # before decoding a million entries one by one
            raise ScheduleError(f"{source}: plan has {len(raw_plan)} entries; autodelta runs at most {MAX_STEPS} "
                                "steps, so this is not a schedule it made")
        plan = decode_plan(raw_plan, source)
        try:
            return cls(
                model=model.get("name", str),
                pretrained=model.get("pretrained", str, optional=True),
                source=model.get("source", str, optional=True),
                num_blocks=num_blocks,
                scheduler=sampler.get("scheduler", str),
                steps=sampler.get("steps", int),
                guidance_scale=reader.get("guidance_scale", float, optional=True),
                plan=plan,
                params=reader.get("params", dict, optional=True),
                cost=reader.get("cost", dict, optional=True),
                quality=reader.get("quality", dict, optional=True),
                provenance=reader.get("provenance", dict, optional=True) or {},
            )
        except ScheduleError as exc:
            raise ScheduleError(f"{source}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the schedule atomically (temp file + rename): a crash never leaves half a file."""
        atomic_write(path, dump_yaml(self.to_dict()))


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read and validate a schedule file; every problem is a one-line :class:`ScheduleError`."""
    try:
        doc = read_yaml(path, "schedule")
    except ScheduleError:
        raise
    except Exception as exc:  # AutodeltaError from read_yaml: keep the message, narrow the type
        raise ScheduleError(str(exc)) from None
    return Schedule.from_dict(doc, source=str(path))


# --- the one plan codec: schedule files, study attributes and Pareto files all use it ----------
def encode_plan(plan: Sequence[Step]) -> list[Any]:
    """A plan as YAML/JSON-ready entries: ``"full"``, ``{"delta": [start, length]}`` or ``{"forecast": …}``."""
    return ["full" if step is None else {"forecast" if step.forecast else "delta": [step.start, step.length]}
            for step in plan]


def decode_plan(entries: Sequence[Any], source: str = "plan") -> tuple[Step, ...]:
    """The inverse of :func:`encode_plan`; a bad entry is a one-line :class:`ScheduleError`."""
    return tuple(_decode_step(entry, i, source) for i, entry in enumerate(entries))


def _decode_step(entry: Any, index: int, source: str) -> Step:
    if entry == "full":
        return None
    if isinstance(entry, dict) and len(entry) == 1 and set(entry) <= {"delta", "forecast"}:
        ((kind, value),) = entry.items()
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return CachedRange(value[0], value[1], 1 if kind == "forecast" else 0)
    if isinstance(entry, list) and len(entry) == 2 and all(type(v) is int for v in entry):
        return CachedRange(entry[0], entry[1])  # studies written by autodelta 0.1.0 stored [start, length]
    text = repr(entry)
    raise ScheduleError(
        f"{source}: plan[{index}] is {text if len(text) <= 80 else text[:77] + '...'}; "
        "write 'full', {delta: [start, length]} or {forecast: [start, length]}"
    )


@dataclass(frozen=True)
class CacheNeeds:
    """What the full step ``f`` must leave in Δ-Cache for the steps after it.

    ``record``: the spans whose Δ it records, those its Δ steps use, plus those forecast
    after the next full step (a forecast reads Δ from both). ``keep``: the spans whose Δ
    from the full step before it stays, as the older point of a forecast before the next
    full step. The runtime records exactly these and the evaluator's prefix cache keys
    saved states by them, so the two never disagree about what a saved Δ-Cache holds.
    """

    record: frozenset[CachedRange]
    keep: frozenset[CachedRange]


def cache_needs(plan: Sequence[Step], full_step: int) -> CacheNeeds:
    """What the full step ``full_step`` of ``plan`` records and keeps (:class:`CacheNeeds`)."""
    segment = _segment(plan, full_step)
    after = _segment(plan, full_step + 1 + len(segment))  # the next full step's segment (empty past the end)
    keep = frozenset(s.span for s in segment if s.forecast)
    record = frozenset(s.span for s in segment) | frozenset(s.span for s in after if s.forecast)
    return CacheNeeds(record=record, keep=keep)


def _segment(plan: Sequence[Step], full_step: int) -> list[CachedRange]:
    """The Δ steps after the full step ``full_step``, up to the next full one."""
    out: list[CachedRange] = []
    for step in plan[full_step + 1 :]:
        if step is None:
            break
        out.append(step)
    return out
