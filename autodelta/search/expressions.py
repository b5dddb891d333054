"""Bounded, safe arithmetic for the range expressions of search-space files.

A space file is data people share, so evaluating it must never run code, hang or
exhaust memory: the expression is parsed with :mod:`ast`, only numbers, known names,
``+ - * / // % **`` and ``min/max/round/ceil/floor`` are allowed, every operand and
result must be a finite number of magnitude at most :data:`LIMIT`, and ``**`` checks
its operands before computing (``9**9**9`` is refused at once, not computed).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from autodelta.errors import AutodeltaError

LIMIT = 1e9
"""Largest magnitude any operand or result may have (step and block counts are far smaller)."""
MAX_LENGTH = 200
"""Longest expression text accepted."""

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {  # name: (function, least, most arguments)
    "min": (min, 2, 16), "max": (max, 2, 16), "round": (round, 1, 1), "ceil": (math.ceil, 1, 1),
    "floor": (math.floor, 1, 1),
}
ALLOWED = "numbers, names, + - * / // % ** and min/max/round/ceil/floor"


class ExpressionError(AutodeltaError):
    """A range expression is malformed, unsafe or out of bounds."""


def _checked(value: Any, text: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"expression {text!r} does not give a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"expression {text!r} gives {value}; use finite numbers")
    if abs(value) > LIMIT:
        raise ExpressionError(f"expression {text!r} gives a number beyond ±{LIMIT:g}; use small numbers")
    return value


def _binary(op: ast.operator, left: int | float, right: int | float, text: str) -> int | float:
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
        raise ExpressionError(f"expression {text!r} divides by zero")
    if isinstance(op, ast.Pow):
        if left < 0 and not float(right).is_integer():
            raise ExpressionError(f"expression {text!r} takes a fractional power of a negative number")
        if left == 0 and right < 0:
            raise ExpressionError(f"expression {text!r} divides by zero")
        if left not in (0, 1, -1) and abs(right) * math.log10(abs(left)) > math.log10(LIMIT):
            raise ExpressionError(f"expression {text!r} gives a number beyond ±{LIMIT:g}; use small numbers")
    return _checked(_BINARY[type(op)](left, right), text)


def evaluate_expression(text: str | int | float, names: Mapping[str, float]) -> float:
    """Evaluate an arithmetic range expression within bounds; every problem is an :class:`ExpressionError`."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ExpressionError(f"{text!r} is not a number or an expression")
    if isinstance(text, (int, float)):
        return _checked(text, repr(text))
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression of {len(text)} characters is too long; keep it under {MAX_LENGTH}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise ExpressionError(f"expression {text!r} is not valid arithmetic; use {ALLOWED}") from None

    def walk(node: ast.AST) -> int | float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return _checked(node.value, text)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ExpressionError(f"expression {text!r} uses unknown name {node.id!r}; known: {', '.join(names)}")
            return _checked(names[node.id], text)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _binary(node.op, walk(node.left), walk(node.right), text)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords):
            function, least, most = _FUNCTIONS[node.func.id]
            if not least <= len(node.args) <= most:
                count = f"{least}" if least == most else f"{least} to {most}"
                raise ExpressionError(f"expression {text!r}: {node.func.id}() takes {count} arguments, "
                                      f"got {len(node.args)}")
            return _checked(function(*[walk(a) for a in node.args]), text)
        raise ExpressionError(f"expression {text!r} contains {type(node).__name__}, which is not allowed; "
                              f"use {ALLOWED}")

    return walk(tree)
