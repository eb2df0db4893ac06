"""Checks that the lessons' test cells call, and the helpers they share.

A check runs the learner's function on a hand-checkable example and on seeded
random inputs, compares each result with gptcore's reference, and raises
``AssertionError`` with a message that names the input, the expected and the
actual result, and the likely mistake.

Type rules, the same in every lesson:

- an ``int`` must be exactly ``int``: ``bool`` and NumPy integers are refused,
  with a message saying how to convert;
- a ``list`` or ``str`` result must be exactly that type;
- a ``dict`` result may be a subclass (``Counter``, ``defaultdict``); its items
  are checked and copied into a plain ``dict`` before comparing.

Values are compared only after they are plain builtins, so an object whose
``__eq__`` always answers True cannot pass.

Each lesson's checks live in a submodule (``gptcore.course.checks.tokenization``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

__all__ = [
    "call",
    "check_dict",
    "check_int",
    "check_int_list",
    "check_str",
    "describe_call",
    "diagnose",
    "fail",
    "first_difference",
    "int_problem",
    "passed",
    "show",
    "type_name",
]


def fail(message: str) -> NoReturn:
    """Fail a check with a teaching message."""
    raise AssertionError(message)


def passed(what: str, cases: int) -> None:
    print(f"✓ {what}: all {cases} cases passed")


def show(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to about ``limit`` characters."""
    try:
        # Abbreviate big containers before repr: GPT-2's merges have 50,000 items.
        if type(value) in (list, tuple) and len(value) > 100:
            text = repr(value[:30])[:-1] + f", … ({len(value)} items)" + repr(value[:0])[-1]
        elif type(value) is dict and len(value) > 100:
            head = ", ".join(f"{k!r}: {v!r}" for k, v in list(value.items())[:5])
            text = f"{{{head}, … ({len(value)} items)}}"
        else:
            text = repr(value)
    except Exception as e:  # a learner's object may have a broken __repr__
        text = f"<{type_name(value)} whose repr raised {type(e).__name__}>"
    return text if len(text) <= limit else text[: limit - 12] + " …" + text[-10:]


def type_name(value: Any) -> str:
    """``int``, ``list``, ``numpy.int64``: the type's name, with its module unless builtin."""
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def call(
    fn: Callable[..., Any],
    *args: Any,
    name: str,
    where: str | None = None,
    error_hints: Mapping[type[BaseException], str] | None = None,
) -> Any:
    """Call a learner's ``fn(*args)`` and return its result.

    Lists and dicts are passed as copies; if ``fn`` changes one, the check fails,
    because the caller (often a training loop) still needs the original. An
    exception becomes an ``AssertionError`` that names the call (the original
    stays chained below it, pointing at the learner's line), plus the hint from
    ``error_hints`` for its type. ``NotImplementedError`` passes through as is:
    it means the exercise is not done yet. Messages name the call as ``where``
    (default: ``name`` and the arguments, cut short).
    """
    copies = [_copy(a) for a in args]
    where = where or describe_call(name, *args)
    try:
        result = fn(*copies)
    except NotImplementedError:
        raise
    except Exception as e:
        hint = next((h for t, h in (error_hints or {}).items() if isinstance(e, t)), "")
        message = f"{where} raised {type(e).__name__}: {e}"
        raise AssertionError(message + (f"\nHint: {hint}" if hint else "")) from e
    for i, (before, after) in enumerate(zip(args, copies)):
        if after is not before and after != before:  # both plain lists/dicts: a fair comparison
            fail(
                f"{where} changed its argument #{i + 1}: it was {show(before)} and is now "
                f"{show(after)}. Build and return a new object instead of modifying the input."
            )
    return result


def describe_call(name: str, *args: Any) -> str:
    """``merge([5, 5, 5], (5, 5), 256)``, each argument cut short."""
    return f"{name}({', '.join(show(a, 60) for a in args)})"


def _copy(value: Any) -> Any:
    if type(value) is list:
        return list(value)
    if type(value) is dict:
        return dict(value)
    return value  # immutable (str, int, tuple) or not ours to copy


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


def check_str(value: Any, what: str, hint: str = "") -> str:
    if type(value) is not str:
        fail(f"{what} must be a str, but it is a {type_name(value)}: {show(value)}" + hint)
    return value


def check_dict(
    value: Any,
    what: str,
    key: Callable[[Any, str], Any],
    value_check: Callable[[Any, str], Any],
    hint: str = "",
) -> dict[Any, Any]:
    """A plain dict copy of ``value`` after checking every key and value.

    ``key(k, what)`` and ``value_check(v, what)`` fail on a bad item (they are
    ``check_*`` helpers or the like) and return it as a plain builtin.
    """
    if not isinstance(value, dict):
        fail(f"{what} must be a dict, but it is a {type_name(value)}: {show(value)}" + hint)
    out = {}
    for k, v in dict.items(value):
        out[key(k, f"each key of {what}")] = value_check(
            v, f"the value for key {show(k, 40)} in {what}"
        )
    return out


def first_difference(got: Iterable[Any], expected: Iterable[Any]) -> int:
    """Index of the first position where two sequences differ (or the shorter length)."""
    got, expected = list(got), list(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return i
    return min(len(got), len(expected))


def diagnose(got: Any, mistakes: Iterable[tuple[Callable[[], Any], str]]) -> str:
    """The hints of the known mistakes that reproduce ``got`` exactly, or "".

    Each mistake is ``(compute, hint)``: ``compute()`` returns what a function
    with that mistake would have returned on the same input. When several
    mistakes give the same wrong answer, every one of their hints is listed.
    """
    hints = []
    for compute, hint in mistakes:
        try:
            if compute() == got and hint not in hints:
                hints.append(hint)
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
    return "\n  or: ".join(hints)
