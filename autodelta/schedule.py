"""The schedule: an explicit per-step plan, the Δ-DiT family that generates one, and its file.

A plan is what the runtime executes: one entry per sampling step, ``None`` for a full
step or a :class:`CachedRange` ``[s, s+n)`` whose blocks are replaced by the Δ-Cache
recorded on the most recent full step (DESIGN §1). The Δ-DiT parameters that produced
a plan travel beside it for provenance only.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from autodelta.errors import ScheduleError
from autodelta.files import atomic_write, dump_yaml, read_yaml

FORMAT = "autodelta/schedule@1"


@dataclass(frozen=True, order=True)
class CachedRange:
    """Blocks ``[start, start + length)`` replayed from Δ-Cache on a Δ step."""

    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length

    def __str__(self) -> str:
        return f"delta [{self.start}, {self.length}]"


Step = CachedRange | None
"""One plan entry: ``None`` is a full step, a :class:`CachedRange` is a Δ step."""


def validate_plan(plan: Sequence[Step], num_blocks: int, where: str = "plan") -> tuple[Step, ...]:
    """Check the DESIGN §1 invariants; raise :class:`ScheduleError` naming the bad entry."""
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
        if step.start < 0 or step.length < 1 or step.stop > num_blocks:
            raise ScheduleError(
                f"{where}[{i}] caches blocks [{step.start}, {step.stop}) which is outside "
                f"[0, {num_blocks}) for N_b={num_blocks}; use 0 <= start, 1 <= length, "
                f"start + length <= {num_blocks}"
            )
    return tuple(plan)


@dataclass(frozen=True)
class DeltaDiTParams:
    """The Δ-DiT family (DESIGN §1): interval ``N``, cached blocks ``N_c``, boundary ``b``.

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
    """A plan for one model and sampler, with its cost, quality and provenance (DESIGN §4)."""

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

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ScheduleError(f"model.num_blocks={self.num_blocks} must be >= 1")
        if self.steps < 1:
            raise ScheduleError(f"sampler.steps={self.steps} must be >= 1")
        if len(self.plan) != self.steps:
            raise ScheduleError(
                f"plan has {len(self.plan)} steps but sampler.steps is {self.steps}; "
                "give exactly one plan entry per sampling step"
            )
        validate_plan(self.plan, self.num_blocks)

    @property
    def full_steps(self) -> int:
        return sum(step is None for step in self.plan)

    def with_updates(self, **changes: Any) -> "Schedule":
        return replace(self, **changes)

    # --- file format -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from autodelta import __version__

        provenance = {"autodelta": __version__, "study": None, "trial": None, "date": None}
        provenance.update(self.provenance)
        if provenance["date"] is None:
            provenance["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "format": FORMAT,
            "model": {"name": self.model, "pretrained": self.pretrained, "num_blocks": self.num_blocks},
            "sampler": {"scheduler": self.scheduler, "steps": self.steps},
            "guidance_scale": self.guidance_scale,
            "plan": [_step_to_yaml(step) for step in self.plan],
            "params": self.params,
            "cost": self.cost,
            "quality": self.quality,
            "provenance": provenance,
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "schedule") -> "Schedule":
        reader = _Fields(doc, source)
        fmt = reader.get("format", str)
        if fmt != FORMAT:
            raise ScheduleError(
                f"{source}: format is {fmt!r} but autodelta reads {FORMAT!r}; "
                "re-export the schedule with this autodelta version"
            )
        model = reader.section("model")
        sampler = reader.section("sampler")
        num_blocks = model.get("num_blocks", int)
        raw_plan = reader.get("plan", list)
        plan = tuple(_step_from_yaml(entry, i, source) for i, entry in enumerate(raw_plan))
        try:
            return cls(
                model=model.get("name", str),
                pretrained=model.get("pretrained", str, optional=True),
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


def _step_to_yaml(step: Step) -> Any:
    return "full" if step is None else {"delta": [step.start, step.length]}


def _step_from_yaml(entry: Any, index: int, source: str) -> Step:
    if entry == "full":
        return None
    if isinstance(entry, dict) and set(entry) == {"delta"}:
        value = entry["delta"]
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return CachedRange(value[0], value[1])
    raise ScheduleError(
        f"{source}: plan[{index}] is {entry!r}; write 'full' or {{delta: [start, length]}}"
    )


class _Fields:
    """Typed field access that names the exact path of a missing or mistyped field."""

    def __init__(self, doc: Any, path: str, prefix: str = "") -> None:
        if not isinstance(doc, dict):
            where = prefix.rstrip(".") or "the document"
            raise ScheduleError(f"{path}: {where} must be a mapping, got {type(doc).__name__}")
        self.doc, self.path, self.prefix = doc, path, prefix

    def get(self, key: str, kind: type, optional: bool = False) -> Any:
        name = f"{self.prefix}{key}"
        if key not in self.doc or self.doc[key] is None:
            if optional:
                return None
            raise ScheduleError(f"{self.path}: field '{name}' is missing; add it (see README, schedule format)")
        value = self.doc[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ScheduleError(
                f"{self.path}: field '{name}' is {value!r} ({type(value).__name__}); "
                f"it must be a {kind.__name__}"
            )
        return value

    def section(self, key: str) -> "_Fields":
        return _Fields(self.get(key, dict), self.path, prefix=f"{self.prefix}{key}.")
