"""Checks on plain Python results: ints, floats, strings, lists of ints, dicts.

Type rules, the same in every lesson:

- an ``int`` must be exactly ``int``: ``bool`` and NumPy integers are refused,
  with a message saying how to convert;
- a ``float`` must be exactly ``float``: a 0-dim tensor, a NumPy float or an
  ``int`` is refused, with a message saying how to convert;
- a ``list`` or ``str`` result must be exactly that type;
- a ``dict`` result may be a subclass (``Counter``, ``defaultdict``); its items
  are checked and copied into a plain ``dict`` before comparing.

Values are compared only after they are plain builtins, so an object whose
``__eq__`` always answers True cannot pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .report import fail, show, type_name

__all__ = [
    "check_dict",
    "check_float",
    "check_int",
    "check_int_list",
    "check_str",
    "close",
    "int_problem",
]


def int_problem(value: Any) -> str | None:
    """Why ``value`` is not a plain int ("a bool (True); use an int"), or None if it is."""
    if type(value) is int:
        return None
    if isinstance(value, bool):
        return f"a bool ({value}); use an int"
    if type(value).__module__ == "numpy":
        return f"a {type_name(value)} ({value}); convert it with int(...)"
    return f"a {type_name(value)} ({show(value, 40)})"


def check_int(value: Any, what: str) -> int:
    """``value`` itself, after checking it is exactly an ``int``."""
    problem = int_problem(value)
    if problem:
        fail(f"{what} must be an int, but it is {problem}")
    return value


def check_int_list(value: Any, what: str) -> list[int]:
    """A plain copy of ``value`` after checking it is a ``list`` of ``int``."""
    if type(value) is not list:
        fail(f"{what} must be a list of ints, but it is a {type_name(value)}: {show(value)}")
    for i, item in enumerate(value):
        problem = int_problem(item)
        if problem:
            fail(f"{what} must be a list of ints, but item {i} is {problem}")
    return list(value)


def check_str(value: Any, what: str, hint_text: str = "") -> str:
    """``value`` itself, after checking it is exactly a ``str``; ``hint_text`` follows a failure."""
    if type(value) is not str:
        fail(f"{what} must be a str, but it is a {type_name(value)}: {show(value)}", hint_text)
    return value


def check_float(value: Any, what: str, *, finite: bool = False) -> float:
    """``value`` itself, after checking it is exactly a Python ``float`` (finite if asked)."""
    if type(value) is not float:
        if type(value).__module__.startswith("torch"):
            problem = f"a torch.Tensor ({show(value, 40)}); convert it with .item() or float(...)"
        elif type(value).__module__ == "numpy":
            problem = f"a {type_name(value)} ({value}); convert it with float(...)"
        elif isinstance(value, bool):
            problem = f"a bool ({value})"
        elif isinstance(value, int):
            problem = f"an int ({value}); return a float, for example float(...)"
        else:
            problem = f"a {type_name(value)} ({show(value, 40)})"
        fail(f"{what} must be a float, but it is {problem}")
    if finite and not math.isfinite(value):
        fail(f"{what} must be a finite number, but it is {value}")
    return value


def close(got: float, expected: float, *, rtol: float = 1e-6, atol: float = 1e-6) -> bool:
    """|got - expected| <= max(atol, rtol * |expected|); an infinity matches only itself."""
    if math.isinf(expected) or math.isinf(got):
        return got == expected
    return abs(got - expected) <= max(atol, rtol * abs(expected))


def check_dict(
    value: Any,
    what: str,
    key: Callable[[Any, str], Any],
    value_check: Callable[[Any, str], Any],
    hint_text: str = "",
) -> dict[Any, Any]:
    """A plain dict copy of ``value`` after checking every key and value.

    ``key(k, what)`` and ``value_check(v, what)`` fail on a bad item (they are
    ``check_*`` helpers or the like) and return it as a plain builtin.
    """
    if not isinstance(value, dict):
        fail(f"{what} must be a dict, but it is a {type_name(value)}: {show(value)}", hint_text)
    out = {}
    for k, v in dict.items(value):
        out[key(k, f"each key of {what}")] = value_check(
            v, f"the value for key {show(k, 40)} in {what}"
        )
    return out
