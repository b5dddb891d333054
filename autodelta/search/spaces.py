"""Search spaces: which schedule parameters a search varies, and the plans they make.

A space file (shipped in ``autodelta/search_spaces/``, or any path) names a *family* and its
parameters, each with a range written as an expression in ``T``, ``N_b`` and earlier
parameters::

    family: delta-dit
    params:
      N:       {int: [1, 4]}
      N_c:     {int: [1, N_b]}
      s_early: {int: [0, N_b - N_c]}
      s_late:  {fixed: 0}

Expressions are evaluated by :mod:`autodelta.search.expressions` (bounded, no code runs). The
family itself — what its parameters mean — is an object in :mod:`autodelta.search.families`.

A per-step family (``explicit``) also names its Δ ranges, ``name: [start, length]`` in
``N_b``, and which of them a step may also *forecast* (Δ extrapolated from the last two
full steps, docs/design.md §1); its one parameter ``step`` repeats as ``step_1`` …
``step_{T-1}``, ranging over 0 (full) to ``R`` (the number of choices: the ranges, then
their forecasts)::

    family: explicit
    ranges:
      whole: [0, N_b]
      rear:  [N_b // 4, N_b - N_b // 4]
    forecast: [whole]
    params:
      step: {int: [0, R]}
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from autodelta.errors import AutodeltaError, ScheduleError
from autodelta.files import read_yaml, shipped_dir
from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Step, validate_plan
from autodelta.search.expressions import ExpressionError, evaluate_expression
from autodelta.search.families import FAMILIES, SearchFamily, SeedContext, get_family


def space_dir() -> Path:
    """Where spaces are found by name: ``$AUTODELTA_SPACES`` if set, else the shipped ones."""
    return Path(os.environ.get("AUTODELTA_SPACES") or shipped_dir("search_spaces"))

class SpaceError(AutodeltaError):
    """A search space file is malformed."""


class ParamKind(StrEnum):
    """How a parameter is drawn; the value is the key a space file writes (``N: {int: [1, 4]}``)."""

    INT = "int"
    FLOAT = "float"  # optionally ``log: true``
    FIXED = "fixed"


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) parameter."""

    name: str
    kind: ParamKind
    low: Any = None
    high: Any = None
    log: bool = False
    line: int | None = None

    def bounds(self, names: Mapping[str, float]) -> tuple[float, float]:
        low, high = evaluate_expression(self.low, names), evaluate_expression(self.high, names)
        if self.kind is ParamKind.INT:
            low, high = math.ceil(low), math.floor(high)
        return low, high


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str
    params: tuple[Param, ...]
    description: str = ""
    ranges: tuple[tuple[str, Any, Any], ...] = ()  # (name, start, length) expressions, per-step families
    forecast: tuple[str, ...] = ()  # names of ranges a step may also forecast

    def range_set(self, num_blocks: int) -> tuple[CachedRange, ...]:
        """The Δ choices for N_b = ``num_blocks``: the named ranges in file order, then the
        forecasts of those ``forecast`` names; duplicates dropped.

        Evaluated once per space and N_b: every plan of a per-step space reads them.
        """
        return _range_set(self.name, self.ranges, self.forecast, num_blocks)

    def expanded(self, steps: int) -> tuple[Param, ...]:
        """The parameters a trial draws: a per-step family's one parameter once per step 1..T-1."""
        family = self.family_impl
        return tuple(Param(name, p.kind, p.low, p.high, p.log, p.line) if name != p.name else p
                     for p in self.params for name in family.expand(p.name, steps))

    def names(self, steps: int, num_blocks: int) -> dict[str, Any]:
        """The names range expressions may use: ``T``, ``N_b`` and, with ranges, their count ``R``."""
        names: dict[str, Any] = {"T": steps, "N_b": num_blocks}
        if self.ranges:
            names["R"] = len(self.range_set(num_blocks))
        return names

    def sample(self, suggest: Callable[[Param, float, float], Any], steps: int, num_blocks: int) -> dict[str, Any]:
        """Draw parameters in order; ``suggest(param, low, high)`` picks a value (Optuna or a test)."""
        names = self.names(steps, num_blocks)
        values: dict[str, Any] = {}
        for param in self.expanded(steps):
            if param.kind is ParamKind.FIXED:
                value = evaluate_expression(param.low, names)
            else:
                low, high = param.bounds(names)
                if low > high:
                    raise SpaceError(f"space {self.name}: range of {param.name} is empty here ({low} > {high})")
                value = suggest(param, low, high)
            names[param.name] = values[param.name] = value
        return values

    def contains(self, values: Mapping[str, Any], steps: int, num_blocks: int) -> bool:
        """Whether ``values`` lie inside this space's ranges (fixed parameters must match)."""
        names = self.names(steps, num_blocks)
        for param in self.expanded(steps):
            if param.name not in values:
                return False
            value = values[param.name]
            if param.kind is ParamKind.FIXED:
                if value != evaluate_expression(param.low, names):
                    return False
            else:
                low, high = param.bounds(names)
                if not low <= value <= high:
                    return False
            names[param.name] = value
        return True

    @property
    def family_impl(self) -> SearchFamily:
        return get_family(self.family)

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int) -> tuple[Step, ...]:
        family = self.family_impl
        if family.uses_ranges():
            return family.plan(values, steps, num_blocks, ranges=self.range_set(num_blocks))
        return family.plan(values, steps, num_blocks)


@functools.lru_cache(maxsize=64)
def _range_set(space: str, ranges: tuple[tuple[str, Any, Any], ...], forecast: tuple[str, ...],
               num_blocks: int) -> tuple[CachedRange, ...]:
    out: list[CachedRange] = []
    named: dict[str, CachedRange] = {}
    for name, start, length in ranges:
        names = {"N_b": num_blocks}
        rng = CachedRange(int(evaluate_expression(start, names)), int(evaluate_expression(length, names)))
        try:
            validate_plan([None, rng], num_blocks, where=f"space {space}, range {name}")
        except ScheduleError as exc:
            raise SpaceError(str(exc)) from None
        named[name] = rng
        if rng not in out:
            out.append(rng)
    for name in forecast:
        rng = CachedRange(named[name].start, named[name].length, 1)
        if rng not in out:
            out.append(rng)
    return tuple(out)


def _parse_param(name: str, spec: Any, space: str, line: int | None) -> Param:
    where = f"space {space}, line {line}" if line else f"space {space}"
    if not isinstance(spec, dict) or len({kind.value for kind in ParamKind} & set(spec)) != 1:
        raise SpaceError(f"{where}: parameter {name!r} must be {{int: [low, high]}}, {{float: [low, high]}} or {{fixed: expr}}")
    if ParamKind.FIXED in spec:
        return Param(name, ParamKind.FIXED, low=spec["fixed"], line=line)
    kind = ParamKind.INT if "int" in spec else ParamKind.FLOAT
    bounds = spec[kind.value]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SpaceError(f"{where}: parameter {name!r} range must be [low, high]")
    return Param(name, kind, low=bounds[0], high=bounds[1], log=bool(spec.get("log", False)), line=line)


def load_space(name_or_path: str | os.PathLike[str], steps: int = 20, num_blocks: int = 28) -> SearchSpace:
    """A space by name (``search_spaces/<name>.yaml``) or path; checked against ``T`` and ``N_b``."""
    candidate = Path(name_or_path)
    folder = space_dir()
    is_path = candidate.suffix in {".yaml", ".yml"} or os.sep in str(name_or_path)
    path = candidate if is_path else folder / f"{name_or_path}.yaml"
    if not os.path.lexists(path):
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise SpaceError(f"unknown search space {str(name_or_path)!r}; known spaces: {known} (or give a YAML path)")
    doc = read_yaml(path, "search space")
    lines = _param_lines(path)
    if not isinstance(doc, dict) or "family" not in doc or not isinstance(doc.get("params"), dict):
        raise SpaceError(f"search space {path}: needs 'family' and a 'params' mapping")
    family = doc["family"]
    if not isinstance(family, str):
        raise SpaceError(f"search space {path}: family is {family!r}; it must be one name, one of {', '.join(FAMILIES)}")
    if family not in FAMILIES:
        raise SpaceError(f"search space {path}: unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    names = FAMILIES[family].params
    ranges = _parse_ranges(doc.get("ranges"), FAMILIES[family], str(path))
    forecast = _parse_forecast(doc.get("forecast"), ranges, str(path))
    params = []
    for pname, spec in doc["params"].items():
        if pname not in names:
            raise SpaceError(f"search space {path}, line {lines.get(pname, '?')}: unknown parameter {pname!r} for "
                             f"family {family}; its parameters are {', '.join(names)}")
        params.append(_parse_param(pname, spec, str(path), lines.get(pname)))
    missing = set(names) - {p.name for p in params}
    if missing:
        raise SpaceError(f"search space {path}: parameters {', '.join(sorted(missing))} are missing")
    space = SearchSpace(name=doc.get("name", path.stem), family=family, params=tuple(params),
                        description=str(doc.get("description", "")), ranges=ranges, forecast=forecast)
    _check_ranges(space, steps, num_blocks, lines)
    return space


def _parse_ranges(doc: Any, family: SearchFamily, space: str) -> tuple[tuple[str, Any, Any], ...]:
    if not family.uses_ranges():
        if doc is not None:
            raise SpaceError(f"search space {space}: 'ranges' is for per-step families (explicit), not {family.name}")
        return ()
    if not isinstance(doc, dict) or not doc:
        raise SpaceError(f"search space {space}: family {family.name} needs 'ranges', e.g. ranges: {{whole: [0, N_b]}}")
    out = []
    for name, spec in doc.items():
        if not isinstance(spec, list) or len(spec) != 2 or not all(isinstance(v, (int, str)) for v in spec):
            raise SpaceError(f"search space {space}: range {name!r} must be [start, length], e.g. [0, N_b]")
        out.append((str(name), spec[0], spec[1]))
    return tuple(out)


def _parse_forecast(doc: Any, ranges: tuple[tuple[str, Any, Any], ...], space: str) -> tuple[str, ...]:
    if doc is None:
        return ()
    names = [name for name, _, _ in ranges]
    if not ranges:
        raise SpaceError(f"search space {space}: 'forecast' names ranges, so it needs a per-step family with 'ranges'")
    if not isinstance(doc, list) or not all(isinstance(v, str) and v in names for v in doc):
        raise SpaceError(f"search space {space}: 'forecast' must list range names from {names}, e.g. forecast: "
                         f"[{names[0]}]")
    return tuple(dict.fromkeys(doc))


def _check_ranges(space: SearchSpace, steps: int, num_blocks: int, lines: Mapping[str, int]) -> None:
    """Evaluate every range at both corners so bad expressions, empty or absurd ranges and
    parameter values that make no plan (an interval of 0, a range past the last block) fail now."""
    limit = 4 * max(steps, num_blocks)
    try:
        base = space.names(steps, num_blocks)
    except ExpressionError as exc:
        raise SpaceError(f"search space {space.name}: {exc}") from None
    for corner in ("low", "high"):
        names: dict[str, Any] = dict(base)
        for param in space.expanded(steps):
            where = f"search space {space.name}, line {param.line or lines.get(param.name, '?')}"
            try:
                low, high = param.bounds(names) if param.kind is not ParamKind.FIXED else (evaluate_expression(param.low, names),) * 2
            except (SpaceError, ExpressionError) as exc:
                raise SpaceError(f"{where}: {exc}") from None
            if low > high:
                raise SpaceError(f"{where}: range of {param.name} is empty ({low} > {high} for T={steps}, "
                                 f"N_b={num_blocks})")
            if param.kind is not ParamKind.FLOAT and not 0 <= low <= high <= limit:
                raise SpaceError(f"{where}: range of {param.name} is [{low}, {high}]; steps, blocks and intervals lie "
                                 f"in [0, {limit}] here (T={steps}, N_b={num_blocks})")
            if param.kind is ParamKind.FLOAT and param.log and low <= 0:
                raise SpaceError(f"{where}: {param.name} is searched on a log scale, so its low end must be > 0, "
                                 f"not {low}")
            names[param.name] = low if corner == "low" else high
        values = {p.name: names[p.name] for p in space.expanded(steps)}
        try:
            space.plan(values, steps, num_blocks)
        except (AutodeltaError, ArithmeticError, ValueError) as exc:
            raise SpaceError(f"search space {space.name}: its {corner} corner {values} makes no valid plan "
                             f"({exc or type(exc).__name__}); narrow the ranges") from None


def _param_lines(path: Path) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        stripped = text.strip()
        if ":" in stripped and text.startswith((" ", "\t")):
            key = stripped.split(":", 1)[0].strip()
            lines.setdefault(key, number)
    return lines


def known_seeds(space: SearchSpace, rule: DeltaDiTParams, steps: int, num_blocks: int,
                fits: Callable[[tuple[Step, ...]], bool] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Known schedules as this space's parameters (the family's seeds), those inside the space only.

    The search enqueues them first so it can never return worse than any of them; with
    ``fits`` (plan → within budget), families may add seeds fitted to the budget.
    """
    context = SeedContext(rule=rule, steps=steps, num_blocks=num_blocks, fits=fits, ranges=space.range_set(num_blocks))
    return [(label, values) for label, values in space.family_impl.seeds(context)
            if space.contains(values, steps, num_blocks)]
