"""A multi grader's `calculate_output`: arithmetic over the sub-graders' scores, never `eval`.

OpenAI documents the operators + - * / and ^ (power) and the functions min, max, abs, floor, ceil,
exp, sqrt and log. Python's own parser (`ast`) reads the text; only the nodes below are walked, so a
name is a sub-grader's score and nothing else: no attributes, no subscripts, no other calls. `^` is
read as `**`, which is taken too. Values are floats, so `9^9^9` overflows to an error instead of a huge integer.
(simpleeval would need its defaults stripped and `^` redefined: the walk is shorter than that setup.)
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class FormulaError(ValueError):
    """The formula cannot be read, names something that is not a grader, or cannot be computed."""


def parse_formula(text: str, names: set[str]) -> ast.expr:
    """The formula's tree, checked: every node allowed, every name one of `names`."""
    try:
        # OpenAI's ^ is power, binding as tightly as Python's ** (Python's ^ is XOR, below + and -);
        # a formula holds no strings, so the text can be rewritten as it is
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError) as error:
        raise FormulaError(f"calculate_output cannot be read: {getattr(error, 'msg', error)}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise FormulaError(f"calculate_output names {node.id!r}, which is not one of the graders {sorted(names)}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        ):
            raise FormulaError(f"calculate_output may call only {', '.join(FUNCTIONS)} (with plain arguments)")
        if not isinstance(node, _ALLOWED):
            raise FormulaError(
                f"calculate_output may use numbers, grader names, + - * / ^ and {', '.join(FUNCTIONS)}; "
                f"{type(node).__name__.lower()} is not allowed"
            )
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, int | float)):
            raise FormulaError(f"calculate_output may hold numbers only, got {node.value!r}")
    return tree


_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    *BINARY,
    *UNARY,
)


def evaluate(tree: ast.expr, values: dict[str, float]) -> float:
    """The formula's value for these sub-grader scores; FormulaError for a division by zero, a
    domain error (sqrt of a negative) or an overflow."""
    try:
        result = float(_value(tree, values))
    except (ArithmeticError, ValueError, TypeError) as error:
        raise FormulaError(f"calculate_output could not be computed: {error}") from None
    if not math.isfinite(result):
        raise FormulaError(f"calculate_output gave {result}")
    return result


def _value(node: ast.expr, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_value(node.operand, values))
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](_value(node.left, values), _value(node.right, values))
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_value(argument, values) for argument in node.args))
    raise FormulaError(f"{type(node).__name__} is not allowed")  # parse_formula let nothing else through
