"""Search spaces: which schedule parameters a search varies, and the plans they make.

A space file (``search_spaces/<name>.yaml`` or any path) names a *family* and its
parameters, each with a range written as an expression in ``T``, ``N_b`` and earlier
parameters::

    family: delta-dit
    params:
      N:       {int: [1, 4]}
      N_c:     {int: [1, N_b]}
      s_early: {int: [0, N_b - N_c]}
      s_late:  {fixed: 0}

Expressions are parsed with :mod:`ast` and may use numbers, names, ``+ - * / // % **``,
``min``, ``max``, ``round``, ``ceil`` and ``floor``; anything else is refused.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from autodelta.errors import AutodeltaError
from autodelta.files import read_yaml
from autodelta.schedule import CachedRange, DeltaDiTParams, Step, paper_boundary, validate_plan

SPACE_DIR = Path(os.environ.get("AUTODELTA_SPACES", Path(__file__).resolve().parent.parent / "search_spaces"))

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "round": round, "ceil": math.ceil,
                                              "floor": math.floor, "abs": abs}


class SpaceError(AutodeltaError):
    """A search space file is malformed."""


def evaluate_expression(text: str | int | float, names: Mapping[str, float]) -> float:
    """Evaluate an arithmetic range expression safely (no calls but the whitelisted functions)."""
    if isinstance(text, bool):
        raise SpaceError(f"{text!r} is not a number or an expression")
    if isinstance(text, (int, float)):
        return text
    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError:
        raise SpaceError(f"expression {text!r} is not valid arithmetic") from None

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise SpaceError(f"expression {text!r} uses unknown name {node.id!r}; known: {', '.join(names)}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords):
            return _FUNCTIONS[node.func.id](*[walk(a) for a in node.args])
        raise SpaceError(f"expression {text!r} contains {type(node).__name__}, which is not allowed; "
                         "use numbers, names, + - * / // % ** and min/max/round/ceil/floor")

    return walk(tree)


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) parameter: ``int``, ``float`` (optionally log) or ``fixed``."""

    name: str
    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    line: int | None = None

    def bounds(self, names: Mapping[str, float]) -> tuple[float, float]:
        low, high = evaluate_expression(self.low, names), evaluate_expression(self.high, names)
        if self.kind == "int":
            low, high = math.ceil(low), math.floor(high)
        return low, high


FAMILY_PARAMS = {
    "delta-dit": ("N", "N_c", "b", "s_early", "s_late"),
    "stagewise": ("N_early", "N_late", "Nc_early", "Nc_late", "b", "s_early", "s_late"),
    "free-steps": ("full_steps", "warp", "b", "n_early", "s_early", "n_late", "s_late"),
    "anchored": ("N", "head", "tail", "b", "n_early", "s_early", "n_late", "s_late"),
}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str
    params: tuple[Param, ...]
    description: str = ""

    def sample(self, suggest: Callable[[Param, float, float], Any], steps: int, num_blocks: int) -> dict[str, Any]:
        """Draw parameters in order; ``suggest(param, low, high)`` picks a value (Optuna or a test)."""
        names: dict[str, Any] = {"T": steps, "N_b": num_blocks}
        values: dict[str, Any] = {}
        for param in self.params:
            if param.kind == "fixed":
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
        names: dict[str, Any] = {"T": steps, "N_b": num_blocks}
        for param in self.params:
            if param.name not in values:
                return False
            value = values[param.name]
            if param.kind == "fixed":
                if value != evaluate_expression(param.low, names):
                    return False
            else:
                low, high = param.bounds(names)
                if not low <= value <= high:
                    return False
            names[param.name] = value
        return True

    def plan(self, values: Mapping[str, Any], steps: int, num_blocks: int) -> tuple[Step, ...]:
        return build_plan(self.family, values, steps, num_blocks)


def build_plan(family: str, v: Mapping[str, Any], steps: int, num_blocks: int) -> tuple[Step, ...]:
    """The explicit plan of a family's parameter values."""
    if family == "delta-dit":
        return DeltaDiTParams(int(v["N"]), int(v["N_c"]), int(v["b"]), int(v["s_early"]), int(v["s_late"])).plan(
            steps, num_blocks)
    if family == "stagewise":
        plan: list[Step] = []
        last_full = 0
        for i in range(steps):
            early = i < int(v["b"])
            interval = int(v["N_early"] if early else v["N_late"])
            if i == 0 or i - last_full >= interval:
                plan.append(None)
                last_full = i
            else:
                n = int(v["Nc_early"] if early else v["Nc_late"])
                plan.append(CachedRange(int(v["s_early"] if early else v["s_late"]), n))
        return validate_plan(plan, num_blocks, where="stagewise plan")
    if family == "free-steps":
        full = full_step_positions(steps, int(v["full_steps"]), float(v["warp"]))
        plan = []
        for i in range(steps):
            if i in full:
                plan.append(None)
            elif i < int(v["b"]):
                plan.append(CachedRange(int(v["s_early"]), int(v["n_early"])))
            else:
                plan.append(CachedRange(int(v["s_late"]), int(v["n_late"])))
        return validate_plan(plan, num_blocks, where="free-steps plan")
    if family == "anchored":
        head, tail, interval = max(1, int(v["head"])), int(v["tail"]), int(v["N"])
        plan = []
        for i in range(steps):
            if i < head or i >= steps - tail or (i - (head - 1)) % interval == 0:
                plan.append(None)
            elif i < int(v["b"]):
                plan.append(CachedRange(int(v["s_early"]), int(v["n_early"])))
            else:
                plan.append(CachedRange(int(v["s_late"]), int(v["n_late"])))
        return validate_plan(plan, num_blocks, where="anchored plan")
    raise SpaceError(f"unknown family {family!r}; use one of {', '.join(FAMILY_PARAMS)}")


def full_step_positions(steps: int, count: int, warp: float) -> set[int]:
    """``count`` full steps at ``round((T-1)·(j/(count-1))^warp)``: the first and last step included.

    ``warp`` = 1 spreads them evenly, > 1 packs them towards the start (outline stage),
    < 1 towards the end. Collisions move to the next free step so exactly ``count`` remain.
    """
    count = max(1, min(count, steps))
    positions: set[int] = set()
    for j in range(count):
        frac = j / (count - 1) if count > 1 else 0.0
        pos = min(steps - 1, int(round((steps - 1) * frac**warp)))
        while pos in positions and pos < steps - 1:
            pos += 1
        while pos in positions:
            pos -= 1
        positions.add(pos)
    positions.discard(0)
    positions.add(0)
    while len(positions) > count:  # step 0 collided with a placed one; drop the last
        positions.remove(max(positions))
    return positions


def _parse_param(name: str, spec: Any, space: str, line: int | None) -> Param:
    where = f"space {space}, line {line}" if line else f"space {space}"
    if not isinstance(spec, dict) or len({"int", "float", "fixed"} & set(spec)) != 1:
        raise SpaceError(f"{where}: parameter {name!r} must be {{int: [low, high]}}, {{float: [low, high]}} or {{fixed: expr}}")
    if "fixed" in spec:
        return Param(name, "fixed", low=spec["fixed"], line=line)
    kind = "int" if "int" in spec else "float"
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SpaceError(f"{where}: parameter {name!r} range must be [low, high]")
    return Param(name, kind, low=bounds[0], high=bounds[1], log=bool(spec.get("log", False)), line=line)


def load_space(name_or_path: str | os.PathLike[str], steps: int = 20, num_blocks: int = 28) -> SearchSpace:
    """A space by name (``search_spaces/<name>.yaml``) or path; checked against ``T`` and ``N_b``."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in {".yaml", ".yml"} else SPACE_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SPACE_DIR.glob("*.yaml")))
        raise SpaceError(f"unknown search space {str(name_or_path)!r}; known spaces: {known} (or give a YAML path)")
    doc = read_yaml(path, "search space")
    lines = _param_lines(path)
    if not isinstance(doc, dict) or "family" not in doc or not isinstance(doc.get("params"), dict):
        raise SpaceError(f"search space {path}: needs 'family' and a 'params' mapping")
    family = doc["family"]
    if family not in FAMILY_PARAMS:
        raise SpaceError(f"search space {path}: unknown family {family!r}; use one of {', '.join(FAMILY_PARAMS)}")
    params = []
    for pname, spec in doc["params"].items():
        if pname not in FAMILY_PARAMS[family]:
            raise SpaceError(f"search space {path}, line {lines.get(pname, '?')}: unknown parameter {pname!r} for "
                             f"family {family}; its parameters are {', '.join(FAMILY_PARAMS[family])}")
        params.append(_parse_param(pname, spec, str(path), lines.get(pname)))
    missing = set(FAMILY_PARAMS[family]) - {p.name for p in params}
    if missing:
        raise SpaceError(f"search space {path}: parameters {', '.join(sorted(missing))} are missing")
    space = SearchSpace(name=doc.get("name", path.stem), family=family, params=tuple(params),
                        description=str(doc.get("description", "")))
    _check_ranges(space, steps, num_blocks, lines)
    return space


def _check_ranges(space: SearchSpace, steps: int, num_blocks: int, lines: Mapping[str, int]) -> None:
    """Evaluate every expression at the low corner so bad expressions and empty ranges fail now."""
    names: dict[str, Any] = {"T": steps, "N_b": num_blocks}
    for param in space.params:
        try:
            if param.kind == "fixed":
                names[param.name] = evaluate_expression(param.low, names)
                continue
            low, high = param.bounds(names)
        except SpaceError as exc:
            raise SpaceError(f"search space {space.name}, line {lines.get(param.name, '?')}: {exc}") from None
        if low > high:
            raise SpaceError(f"search space {space.name}, line {lines.get(param.name, '?')}: range of "
                             f"{param.name} is empty ({low} > {high} for T={steps}, N_b={num_blocks})")
        names[param.name] = low


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
    """Known schedules as this space's parameters: the rule's, the paper's preset, the baselines'.

    Only those that lie inside the space are returned; the search enqueues them first so
    it can never return worse than any of them. With ``fits`` (plan → within budget), the
    anchored family also gets warm-up seeds shaped like cache-dit's DBCache: the first
    steps full, then every other step computes the front blocks and replays the rest,
    with the fewest cached blocks that meet the budget.
    """
    b, _ = paper_boundary(steps)
    n, n_c = rule.interval, rule.cached_blocks
    cands: list[tuple[str, dict[str, Any]]] = []
    if space.family == "delta-dit":
        cands = [
            ("paper rule", {"N": n, "N_c": n_c, "b": rule.boundary, "s_early": num_blocks - n_c, "s_late": 0}),
            ("whole-stack reuse", {"N": n, "N_c": num_blocks, "b": b, "s_early": 0, "s_late": 0}),
            ("middle-block cache", {"N": n, "N_c": n_c, "b": b, "s_early": (num_blocks - n_c) // 2,
                                    "s_late": (num_blocks - n_c) // 2}),
        ]
    elif space.family == "stagewise":
        cands = [
            ("paper rule", {"N_early": n, "N_late": n, "Nc_early": n_c, "Nc_late": n_c, "b": rule.boundary,
                            "s_early": num_blocks - n_c, "s_late": 0}),
            ("whole-stack reuse", {"N_early": n, "N_late": n, "Nc_early": num_blocks, "Nc_late": num_blocks,
                                   "b": b, "s_early": 0, "s_late": 0}),
        ]
    elif space.family == "anchored":
        cands = [
            ("paper rule", {"N": n, "head": 1, "tail": 0, "b": rule.boundary, "n_early": n_c,
                            "s_early": num_blocks - n_c, "n_late": n_c, "s_late": 0}),
            ("whole-stack reuse", {"N": n, "head": 1, "tail": 0, "b": b, "n_early": num_blocks, "s_early": 0,
                                   "n_late": num_blocks, "s_late": 0}),
            ("middle-block cache", {"N": n, "head": 1, "tail": 0, "b": b, "n_early": n_c,
                                    "s_early": (num_blocks - n_c) // 2, "n_late": n_c,
                                    "s_late": (num_blocks - n_c) // 2}),
        ]
        if fits is not None:
            for head in sorted({max(1, steps // 4), max(1, (2 * steps) // 5), max(1, steps // 2)}):
                for tail in (0, 1):
                    for cached in range(1, num_blocks + 1):  # fewest cached rear blocks that meet the budget
                        values = {"N": 2, "head": head, "tail": tail, "b": 0, "n_early": cached,
                                  "s_early": num_blocks - cached, "n_late": cached, "s_late": num_blocks - cached}
                        if space.contains(values, steps, num_blocks) and fits(space.plan(values, steps, num_blocks)):
                            cands.append((f"warm-up {head}, tail {tail}", values))
                            break
    elif space.family == "free-steps":
        full = math.ceil(steps / n)
        cands = [  # this family places full steps differently, so these are neighbours of the known plans
            ("rule's N_c, even spread", {"full_steps": full, "warp": 1.0, "b": rule.boundary, "n_early": n_c,
                                         "s_early": num_blocks - n_c, "n_late": n_c, "s_late": 0}),
            ("whole stack, even spread", {"full_steps": full, "warp": 1.0, "b": b, "n_early": num_blocks,
                                          "s_early": 0, "n_late": num_blocks, "s_late": 0}),
        ]
    return [(label, values) for label, values in cands if space.contains(values, steps, num_blocks)]


def families() -> Sequence[str]:
    return tuple(FAMILY_PARAMS)
