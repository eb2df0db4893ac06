"""Reporting for the lesson checks: failure messages, hints, how values are shown, calls.

Every check talks to the learner through these functions, so that all the
lessons read alike:

- a failure is an ``AssertionError`` (``fail``); its message names the call,
  what was expected and what came back, then at most one ``Hint:`` line;
- a hint line is always ``"\\nHint: <text>"`` (``hint``); several hints for one
  wrong answer are joined by ``"\\n  or: "`` (``HINT_JOIN``);
- the learner's function is called through ``call``, which turns its
  exceptions into a message that names the call, refuses changed inputs,
  turns ``NotImplementedError`` into a one-line "exercise X is not written
  yet" (``NotWritten``), and keeps the warnings the learner's code raises off
  stderr, where nbgrader would count them as a failed test;
- a lesson's public checks are decorated with ``@check``: the warnings come out
  as notes after the ✓ line (or end the failure message), and a failure caused
  by a wrong earlier exercise names it first (``uses={"merge": bpe_merge}``).

When a class is graded the learner's code runs in a kernel of its own; a
check's own function that must run beside it is marked: ``input_only`` (it
only feeds the learner's code inputs) or ``drives`` (a training loop over the
learner's code: one round trip instead of one per step).

Known mistakes are recognised with ``diagnose``: a table of hints, each with
the answer (or a function computing the answer) a function with that mistake
would have returned.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import sys
import sysconfig
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = [
    "HINT_JOIN",
    "ErrorHints",
    "Mistakes",
    "NotWritten",
    "Shown",
    "call",
    "call_repeated",
    "check",
    "describe_call",
    "diagnose",
    "drives",
    "fail",
    "first_difference",
    "hint",
    "input_only",
    "not_written",
    "passed",
    "show",
    "show_arg",
    "show_tensor",
    "type_name",
    "unchanged",
    "watching",
    "wrong",
]

HINT_JOIN = "\n  or: "  # between the hints of several mistakes that give the same wrong answer

# A table of known mistakes: hint -> what a function with that mistake returns,
# as a mapping or as (hint, answer) pairs (pairs allow one hint for several
# answers). An answer may be a zero-argument callable: it is computed only when
# needed, and if it raises, that mistake is not the one.
Mistakes = Mapping[str, Any] | Iterable[tuple[str, Any]]

# Hints for exceptions the learner's function raises: by exception type, or a
# function of the exception ("" when it has none).
ErrorHints = Mapping[type[BaseException], str] | Callable[[BaseException], str]


# ------------------------------------------------------------------- failing
def hint(text: str) -> str:
    """``"\\nHint: text"``, the one hint format, or "" when there is no hint."""
    return f"\nHint: {text}" if text else ""


def fail(message: str, hint_text: str = "") -> NoReturn:
    """Fail a check with a teaching message, and a hint line when ``hint_text`` is given."""
    raise AssertionError(message + hint(hint_text))


class Shown(str):
    """Text already formatted for a failure message: ``wrong`` shows it as it is."""


def wrong(where: str, expected: Any, got: Any, *notes: str, hint_text: str = "") -> NoReturn:
    """Fail with "<where> is wrong.", both results on their own lines, notes, then the hint.

    ``expected`` and ``got`` are shown with ``show`` unless they are ``Shown``;
    empty notes are left out.
    """

    def fmt(x: Any) -> str:
        return x if isinstance(x, Shown) else show(x, 300)

    lines = [f"{where} is wrong.", f"  expected: {fmt(expected)}", f"  got:      {fmt(got)}"]
    lines += [n for n in notes if n]
    fail("\n".join(lines), hint_text)


def passed(what: str, cases: int) -> None:
    """Print the line a passing check ends with."""
    print(f"✓ {what}: all {cases} cases passed")


class NotWritten(NotImplementedError):
    """An exercise the learner has not written yet: one line in the notebook, no traceback.

    Still a ``NotImplementedError``, so the test cell errors and scores 0, but
    IPython shows what ``_render_traceback_`` returns instead of a traceback
    through gptcore's internals, which would bury the one line that matters.
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def not_written(name: str, used_by: str = "") -> NotWritten:
    """The error for an exercise the learner has not written yet (``used_by``: the exercise
    being checked, when it is a different one that calls ``name``)."""
    uses = f" ({used_by} uses it)" if used_by and used_by != name else ""
    return NotWritten(
        f"exercise {name} is not written yet{uses}: replace `raise NotImplementedError()` "
        "with your code, run its cell, then run this test again."
    )


# ------------------------------------------------------------ showing values
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


def show_tensor(t: torch.Tensor, limit: int = 300) -> Shown:
    """``tensor([[0, 2], [1, 0]], dtype=torch.int64)``: a tensor's values, cut to about ``limit``."""
    return Shown(f"tensor({show(t.tolist(), limit)}, dtype={t.dtype})")


def show_arg(value: Any, max_values: int = 12) -> str:
    """An argument as a call shows it: a tensor of at most ``max_values`` entries by value
    (``tensor([3, 0, 4], dtype=int64)``), a bigger one by shape and dtype, anything else
    with ``show``."""
    if _is_tensor(value):
        dtype = str(value.dtype).removeprefix("torch.")
        if value.numel() <= max_values:
            return f"tensor({value.tolist()}, dtype={dtype})"
        return f"tensor of shape {tuple(value.shape)}, dtype {dtype}"
    return show(value, 60)


def type_name(value: Any) -> str:
    """``int``, ``list``, ``numpy.int64``: the type's name, with its module unless builtin."""
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def describe_call(name: str, *args: Any, **kwargs: Any) -> str:
    """``merge([5, 5, 5], (5, 5), 256)``, each argument cut short (``show_arg``)."""
    parts = [show_arg(a) for a in args] + [f"{k}={show_arg(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def first_difference(got: Iterable[Any], expected: Iterable[Any]) -> int:
    """Index of the first position where two sequences differ (or the shorter length)."""
    got, expected = list(got), list(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return i
    return min(len(got), len(expected))


# ------------------------------------------------------------ known mistakes
def diagnose(got: Any, mistakes: Mistakes, same: Callable[[Any, Any], bool] | None = None) -> str:
    """The hints of the known mistakes that reproduce ``got``, joined by ``HINT_JOIN``, or "".

    ``same(got, answer)`` says whether a mistake's answer is the learner's
    (default: ``==`` between plain values). When several mistakes give the
    same wrong answer, every one of their hints is listed, each once.
    """
    same = same or (lambda a, b: b is not None and a == b)
    items = mistakes.items() if isinstance(mistakes, Mapping) else mistakes
    hints: list[str] = []
    for text, answer in items:
        if text in hints:
            continue
        try:
            with _no_grad():
                value = answer() if callable(answer) else answer
            if same(got, value):
                hints.append(text)
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
    return HINT_JOIN.join(hints)


# ---------------------------------------------------------------- calling
def call(
    fn: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    where: str | None = None,
    error_hints: ErrorHints | None = None,
    kwargs: Mapping[str, Any] | None = None,
    arg_names: Iterable[str] | None = None,
    mutation_hint: str = "",
) -> Any:
    """Call a learner's ``fn(*args, **kwargs)`` and return its result.

    Lists, dicts and tensors are passed as copies; if ``fn`` changes one, the
    check fails, because the caller (often a training loop) still needs the
    original. The message names the argument by ``arg_names`` (default "#1",
    "#2", ...) and ends with ``mutation_hint`` (default: build a new object).

    An exception becomes an ``AssertionError`` that names the call (the
    original stays chained below it, pointing at the learner's line), plus the
    hint from ``error_hints`` for it. ``NotImplementedError`` stays a
    ``NotImplementedError`` ("not written yet"): the exercise is not done.
    Messages name the call as ``where`` (default: ``name`` and the arguments).
    """
    name = name or getattr(fn, "__name__", "your function")
    where = where or describe_call(name, *args, **(kwargs or {}))
    passed_args, originals = zip(*(_copy(a) for a in args)) if args else ((), ())
    run = _where_the_learner_is(fn, passed_args)
    try:
        with _holding_warnings(where) as notes:
            if run is not None:
                result = run(fn, passed_args, dict(kwargs or {}))
            else:
                result = fn(*passed_args, **(kwargs or {}))
    except NotWritten:
        raise  # a check the learner's code called (rare), already named
    except NotImplementedError as e:
        raise not_written(_stub_name(e, name), used_by=name) from e
    except Exception as e:
        raise AssertionError(
            f"{where} raised {type(e).__name__}: {e}"
            + _notes_text(notes)
            + hint(_error_hint(e, error_hints))
        ) from e
    _keep_notes(notes)
    labels = list(arg_names or ())
    for i, (before, after) in enumerate(zip(originals, passed_args)):
        label = labels[i] if i < len(labels) else f"#{i + 1}"
        unchanged(before, after, where, label, mutation_hint)
    return result


def call_repeated(fn: Callable[..., Any], *args: Any, times: int, **options: Any) -> list[Any]:
    """``[call(fn, *args, **options) for _ in range(times)]``: the learner's ``fn`` called
    ``times`` times with the same arguments (fresh copies each time).

    When ``fn`` lives in another process (class grading runs the learner's code in a
    kernel of its own), the calls are made there in one go and then replayed through
    ``call`` here, so that a check with thousands of draws costs one round trip.
    """
    replay = getattr(type(fn), "gptcore_replay", None)
    if replay is None:
        return [call(fn, *args, **options) for _ in range(times)]
    stand_ins = replay(fn, args, dict(options.get("kwargs") or {}), times)
    # A call that just returned (no error, no argument changed) needs no replay through
    # `call`: its result is the stand-in's `gptcore_result`.
    return [
        done[0] if (done := getattr(s, "gptcore_result", None)) else call(s, *args, **options)
        for s in stand_ins
    ]


def input_only(fn: F) -> F:
    """Mark ``fn``, a module-level function a check passes to the learner's code, as one
    that only feeds it inputs (the probabilities to draw the next token from, say).

    Class grading runs the checks in a process of their own; a function passed to the
    learner's code is normally called back there, one round trip per call. A function
    marked here is instead imported and run in the learner's process. That is safe only
    when nothing it returns or records decides a verdict: the check must compare the
    learner's results with values it computes itself, so a tampered copy can only make
    the learner's answer fail. Record calls (which history was passed) with an unmarked
    function."""
    fn.gptcore_input_only = True  # type: ignore[attr-defined]
    return fn


def drives(fn: F) -> F:
    """Mark ``fn``, a module-level function of the checks that drives the learner's code
    through many calls (a training loop: batches in, the learner's ``train_step`` or
    model called on each), as one that ``call`` runs where the learner's objects are.

    In JupyterLab that is here, and nothing changes. When a class is graded, the
    learner's functions and modules live in a kernel of their own and ``fn`` would make
    a round trip per step; marked, ``fn`` is imported there by name and runs there, in one
    round trip. Allowed only where what ``fn`` returns is the learner's own results
    (losses their code computed), which their process decides anyway; the check must
    still judge them here, against values it computes itself."""
    fn.gptcore_input_only = True  # type: ignore[attr-defined]  (pickled by name)
    fn.gptcore_drives = True  # type: ignore[attr-defined]
    return fn


def _where_the_learner_is(fn: Any, args: tuple[Any, ...]) -> Callable[..., Any] | None:
    """For a function marked ``drives``: how to run it where the first argument that lives
    in the learner's kernel does (its class's ``gptcore_run``); None: run it here."""
    # (Only our own functions are marked: the learner's are never asked, which would be a
    # round trip to their kernel.)
    if not (isinstance(fn, types.FunctionType) and fn.__dict__.get("gptcore_drives") is True):
        return None
    for a in args:
        run = getattr(type(a), "gptcore_run", None)  # (the type's: no request to the kernel)
        if callable(run):
            return functools.partial(run, a)
    return None


# The watchers on now (see ``watching``); class grading's channel reads this list.
WATCHING: list[Any] = []


@contextlib.contextmanager
def watching(watcher: Any) -> Iterator[Any]:
    """Keep ``watcher`` on while the block runs: a context manager that records *how*
    the learner's code works (a lookup it is told not to use, parameters it should not
    build, the modes a training step is in), where results cannot show it.

    It must run where the learner's code runs. In class grading that is another
    process: the channel sends a copy of every watcher on now with each call into the
    learner's code, keeps it on around the call there, and puts what it recorded (its
    plain attributes) back into this one. Its class says so with ``gptcore_in_kernel =
    True``. A learner's code could tamper with that copy, so a watcher can only enforce
    a rule about how a result is computed; the result itself is always compared here.
    """
    if getattr(type(watcher), "gptcore_in_kernel", False) is not True:
        raise TypeError(f"{type(watcher).__name__} must set gptcore_in_kernel = True")
    WATCHING.append(watcher)
    try:
        with watcher:
            yield watcher
    finally:
        WATCHING.remove(watcher)


def unchanged(before: Any, after: Any, where: str, label: str, mutation_hint: str = "") -> None:
    """Fail if the learner's function changed an input: ``after`` is the copy it was given
    (or the input itself, with ``before`` a snapshot). ``label`` names the argument ("#1",
    "counts"); ``mutation_hint`` replaces the default advice."""
    if _is_tensor(before):
        if after.shape != before.shape or not _equal_tensors(after.detach(), before.detach()):
            fail(
                f"{where} changed its argument {label} in place. "
                + (
                    mutation_hint
                    or "Leave the inputs as they are, the caller still needs them: build "
                    "the result as a new tensor instead of modifying the input in place "
                    "(+=, add_, div_ and the like)."
                )
            )
    elif after is not before and after != before:  # both plain lists/dicts: a fair comparison
        fail(
            f"{where} changed its argument {label}: it was {show(before)} and is now "
            f"{show(after)}. "
            + (mutation_hint or "Build and return a new object instead of modifying the input.")
        )


# ------------------------------------------------------------------ warnings
# nbgrader counts any output on stderr in a graded cell as a failed test, and a
# correct answer may well make torch warn (``float(loss)`` on a tensor that
# requires grad does). So a warning from the learner's code never reaches
# stderr: ``call`` records it, and the check reports it on stdout after its ✓
# line when it passes, or inside its failure message when it fails.
_COLLECTORS: list[list[str]] = []  # one list of notes per running @check, innermost last


@contextlib.contextmanager
def _holding_warnings(where: str) -> Iterator[list[str]]:
    """Record the warnings raised inside the block as notes ("UserWarning: ... (line)")."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            for w in caught:
                note = f"{where} warned: {w.category.__name__}: {w.message}"
                if note not in notes:
                    notes.append(note)


def _notes_text(notes: list[str]) -> str:
    return "".join(f"\n  note: {n}" for n in notes)


def _keep_notes(notes: list[str]) -> None:
    """Hand notes to the running check, or print them on stdout when no check runs."""
    if not notes:
        return
    if _COLLECTORS:
        _COLLECTORS[-1].extend(n for n in notes if n not in _COLLECTORS[-1])
    else:
        print(_notes_text(notes).lstrip("\n"))


def _stub_name(e: NotImplementedError, name: str) -> str:
    """The exercise whose stub raised ``e``: ``name`` itself, or an earlier exercise that
    ``name`` calls (encode calling an unwritten merge). The innermost frame outside
    gptcore is the stub; a method of ``name`` (``NeuralBigram.forward``) is ``name``."""
    remote = getattr(e, "stub_name", "")  # raised in the kernel, named there (grading)
    if isinstance(remote, str) and remote:
        return remote
    tb, stub = e.__traceback__, ""
    while tb is not None:
        if not _library_file(tb.tb_frame.f_code.co_filename):
            # "merge", "NeuralBigram.forward", "test.<locals>.merge": the outermost name
            # the learner wrote (a method names its class)
            stub = tb.tb_frame.f_code.co_qualname.rsplit("<locals>.", 1)[-1].split(".")[0]
        tb = tb.tb_next
    return stub if stub and not stub.startswith("<") and e.__traceback__ else name


# gptcore, the standard library and installed packages (torch raises NotImplementedError
# for a module without forward): code there is never the learner's stub.
_LIBRARIES = tuple(
    {Path(__file__).resolve().parents[2]}
    | {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _library_file(filename: str) -> bool:
    path = Path(filename)
    return path.is_absolute() and any(path.resolve().is_relative_to(d) for d in _LIBRARIES)


# ----------------------------------------------------------- the @check decorator
F = TypeVar("F", bound=Callable[..., None])


def check(uses: Mapping[str, Callable[..., None]] | None = None) -> Callable[[F], F]:
    """Decorate a lesson's public check: warnings held, earlier exercises blamed by name.

    The check's first argument is the learner's function (or class). While it
    runs, warnings are recorded (see ``call``): on success they are printed on
    stdout after the ✓ line, on failure they end the message.

    ``uses`` maps the name of an earlier exercise that the learner's function
    calls to that exercise's check, e.g. ``{"merge": bpe_merge}``. When the
    check fails, each earlier function is checked quietly first; if one is
    wrong, the message starts with "this uses your merge, which is wrong: ...;
    fix merge first". The earlier functions are ``depends_on={"merge": merge}``
    when the caller passes it, else found by name among the learner's globals
    (the notebook's namespace).
    """

    def decorate(check_fn: F) -> F:
        @functools.wraps(check_fn)
        def run(
            fn: Any, *args: Any, depends_on: Mapping[str, Any] | None = None, **kwargs: Any
        ) -> None:
            notes: list[str] = []
            _COLLECTORS.append(notes)
            stderr = io.StringIO()  # anything printed there (a progress bar) comes out on stdout
            try:
                with contextlib.redirect_stderr(stderr), _holding_warnings("checking") as own:
                    check_fn(fn, *args, **kwargs)
            except AssertionError as e:
                blame = _blame(uses or {}, depends_on, fn, args)
                message = (blame + "\n" if blame else "") + str(e)
                e.args = (message + _notes_text([*notes, *own]),)
                raise
            finally:
                _COLLECTORS.pop()
                sys.stdout.write(stderr.getvalue())
            if notes or own:
                print(_notes_text([*notes, *own]).lstrip("\n"))

        return run  # type: ignore[return-value]

    return decorate


def _learner_globals(fn: Any) -> Mapping[str, Any]:
    """The namespace the learner's function was defined in (a notebook's, usually)."""
    fn = getattr(fn, "__func__", fn)
    if hasattr(fn, "__globals__"):
        return fn.__globals__
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    return vars(module) if module is not None else {}


def _blame(
    uses: Mapping[str, Callable[..., None]],
    given: Mapping[str, Any] | None,
    fn: Any,
    args: tuple[Any, ...] = (),
) -> str:
    """"this uses your merge, which is wrong: ...; fix merge first." or ""."""
    if given is not None:
        found: Mapping[str, Any] = given
        named = None
    else:
        # The learner's functions passed to the check (a put-together check gets them
        # all) by their names, else the learner's globals. Found there, an earlier
        # function is blamed only if the learner's code names it: a wrong merge says
        # nothing about an encode that never calls it.
        passed = {getattr(a, "__name__", ""): a for a in (fn, *args) if callable(a)}
        found = collections.ChainMap(passed, _learner_globals(fn))
        code = getattr(fn, "__code__", None)
        named = None if code is None else {*_names_used(code), *passed}
    for name, earlier_check in uses.items():
        earlier = found.get(name)
        if not callable(earlier) or (named is not None and name not in named):
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                earlier_check(earlier)
        except NotImplementedError:
            return f"this uses your {name}, which is not written yet; write {name} first."
        except AssertionError as e:
            first = str(e).split("\n", 1)[0]
            return f"this uses your {name}, which is wrong: {first}; fix {name} first."
        except Exception:  # the earlier check broke: keep the message of the check that ran
            continue
    return ""


def _error_hint(e: BaseException, error_hints: ErrorHints | None) -> str:
    if error_hints is None:
        return ""
    if isinstance(error_hints, Mapping):
        return next((h for t, h in error_hints.items() if isinstance(e, t)), "")
    return error_hints(e)


def _copy(value: Any) -> tuple[Any, Any]:
    """(what the learner gets, what it must still equal afterwards)."""
    if type(value) in (list, dict):
        return type(value)(value), value
    if _is_tensor(value):
        if value.requires_grad:  # autograd must see the very tensor: pass it, keep a snapshot
            return value, value.detach().clone()
        return value.clone(), value
    return value, value  # immutable (str, int, tuple), or not ours to copy


def _equal_tensors(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, NaN equal to NaN (an input may hold NaN on purpose)."""
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool((a == b).all())


def _names_used(code: Any) -> set[str]:
    """Global names a function's code refers to, nested code included: a name used inside a
    generator expression, comprehension or lambda lives in a code object of its own."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


# torch is never imported here: lesson 1's checks run without it, and a grading kernel
# that imports torch needs about 800 MB more address space. A value can only be a tensor
# if torch is already loaded, so asking sys.modules is enough.
def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _no_grad() -> contextlib.AbstractContextManager[Any]:
    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else contextlib.nullcontext()

