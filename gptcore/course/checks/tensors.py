"""Tensor checks for the lessons: type, dtype, shape, values, known mistakes, seeded inputs.

A tensor result is checked in two steps. ``check_tensor`` makes sure it is a
``torch.Tensor`` of the documented dtype and shape (on the CPU, finite if
asked) and returns a plain, detached copy. Only then are its values compared
with the reference, by ``matches`` (a yes/no) or ``compare`` (which fails
with the first entry that differs and the hint of a known mistake that gives
the learner's values). Comparing plain tensors means an object whose
``__eq__`` always answers True cannot pass.

Tolerances: entries match when ``|got - expected| <= atol + rtol * |expected|``
(``atol`` may be a tensor that broadcasts, a tolerance per row); equal
infinities match; NaN matches only NaN, and only with ``equal_nan=True``.
Integer and bool tensors must be equal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .report import Mistakes, diagnose, fail, show, type_name, watching

__all__ = [
    "check_tensor",
    "close_mask",
    "compare",
    "generator",
    "matches",
    "one_thread",
    "recognise",
    "seeded",
]


# ------------------------------------------------------------- type and shape
def check_tensor(
    value: Any,
    what: str,
    *,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    shape_hint: str | Callable[[tuple[int, ...]], str] = "",
    dtype_hint: str = "",
    mistakes: Mistakes = (),
    allow_subclass: bool = False,
    finite: bool = False,
    device: str | None = "cpu",
) -> torch.Tensor:
    """A plain, detached copy of ``value`` after checking it is a tensor of this dtype and shape.

    Checked in order: the type (exactly ``torch.Tensor`` or ``nn.Parameter``; a
    subclass is refused unless ``allow_subclass``, then its values are taken
    as a plain tensor), the dtype, the shape, the device (unless ``device`` is
    None), and with ``finite`` that no entry is NaN or infinite. A wrong shape
    gets the hint of a ``mistakes`` entry that reproduces the value, else
    ``shape_hint`` (text, or a function of the wrong shape).
    """
    if not isinstance(value, torch.Tensor):
        if type(value).__module__ == "numpy":
            problem = f"a {type_name(value)}; keep the computation in torch (torch.from_numpy(...) converts)"
        elif isinstance(value, (list, tuple)):
            problem = f"a {type_name(value)}: {show(value, 60)}; return a torch.Tensor, not a Python {type_name(value)}"
        else:
            problem = f"a {type_name(value)}: {show(value, 60)}"
        fail(f"{what} must be a torch.Tensor, but it is {problem}")
    if type(value) not in (torch.Tensor, torch.nn.Parameter) and not allow_subclass:
        fail(
            f"{what} must be a torch.Tensor, but it is a {type_name(value)}, a subclass of "
            "torch.Tensor; return a plain tensor"
        )
    if value.dtype != dtype:
        fail(f"{what} must have dtype {dtype}, but it has dtype {value.dtype}.", dtype_hint)
    got_shape = tuple(value.shape)
    if got_shape != tuple(shape):
        plain = value.detach().as_subclass(torch.Tensor)
        text = shape_hint(got_shape) if callable(shape_hint) else shape_hint
        fail(
            f"{what} must have shape {tuple(shape)}, but it has shape {got_shape}.",
            recognise(plain, mistakes) or text,
        )
    if device is not None and value.device.type != device:
        fail(f"{what} is on {value.device}; return a {device.upper()} tensor, as the input was")
    out = value.detach().as_subclass(torch.Tensor).clone()
    if finite and out.is_floating_point() and not bool(torch.isfinite(out).all()):
        fail(f"{what} holds NaN or inf: {show(out.tolist(), 200)}")
    return out


# ------------------------------------------------------------------- values
def close_mask(
    got: torch.Tensor,
    expected: torch.Tensor,
    *,
    atol: float | torch.Tensor = 1e-6,
    rtol: float = 1e-5,
    equal_nan: bool = False,
) -> torch.Tensor:
    """Entrywise: do ``got`` and ``expected`` (one shape) match within the tolerance?"""
    if not expected.is_floating_point() and not got.is_floating_point():
        return got == expected
    g, e = got.detach().double(), expected.detach().double()
    ok = (g == e) | ((g - e).abs() <= atol + rtol * e.abs())  # == lets equal infinities match
    if equal_nan:
        ok |= g.isnan() & e.isnan()
    return ok


def matches(
    got: Any,
    expected: Any,
    *,
    atol: float | torch.Tensor = 1e-6,
    rtol: float = 1e-5,
    equal_nan: bool = False,
) -> bool:
    """Whether ``got`` is a tensor of ``expected``'s shape whose entries all match it."""
    if not isinstance(got, torch.Tensor) or not isinstance(expected, torch.Tensor):
        return False
    if got.shape != expected.shape:
        return False
    return bool(close_mask(got, expected, atol=atol, rtol=rtol, equal_nan=equal_nan).all())


def recognise(
    got: torch.Tensor,
    mistakes: Mistakes,
    *,
    atol: float | torch.Tensor = 1e-6,
    rtol: float = 1e-5,
) -> str:
    """The hints of the known mistakes whose tensor ``matches`` ``got`` (NaN matching NaN), or ""."""
    return diagnose(
        got,
        mistakes,
        same=lambda a, b: matches(a, b, atol=atol, rtol=rtol, equal_nan=True),
    )


def compare(
    got: torch.Tensor,
    expected: torch.Tensor,
    where: str,
    *,
    atol: float | torch.Tensor = 1e-6,
    rtol: float = 1e-5,
    mistakes: Mistakes = (),
    what: str = "",
    otherwise: str = "",
) -> None:
    """Fail unless ``got`` matches ``expected`` (same shape, checked before).

    The message says how many entries differ and shows the first one (the
    whole tensors too when small), then the hint of a known mistake whose
    tensor matches ``got``, else ``otherwise``. ``what`` names the part of the
    result ("the logits") in "<what> of <where> is wrong".
    """
    ok = close_mask(got, expected, atol=atol, rtol=rtol)
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    label = f"{what} of {where}" if what else where
    if expected.dim() == 0:
        lines = [f"{label} is wrong: expected {_number(expected)}, got {_number(got)}."]
    else:
        first = tuple(bad[0].tolist())
        lines = [
            f"{label} is wrong: {len(bad)} of {ok.numel()} entries differ.",
            f"  first at index {first}: expected {_number(expected[first])}, "
            f"got {_number(got[first])}",
        ]
    if got.is_floating_point() and not bool(torch.isfinite(got).all()):
        if bool(torch.isfinite(expected).all()):
            lines.append("  your result holds NaN or inf, where every expected value is finite")
    if 1 < expected.numel() <= 24:
        lines += [f"  expected: {expected.tolist()}", f"  got:      {got.tolist()}"]
    fail("\n".join(lines), recognise(got, mistakes, atol=atol, rtol=rtol) or otherwise)


def _number(x: torch.Tensor) -> str:
    value = x.item()
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


# ------------------------------------------------------------ seeded inputs
def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``: the source of a check's random inputs."""
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside the block, and give the notebook its random
    state back afterwards (for code that draws from the global state: dropout, init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _OneThread:
    """One CPU thread while on, then the setting from before."""

    gptcore_in_kernel = True  # see report.watching

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)

    def __getstate__(self) -> dict[str, object]:
        return {}  # nothing to send, nothing to bring back: each side keeps its own setting


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run on one CPU thread, then restore the notebook's setting. The checks' models are
    tiny; for them, synchronising threads costs more than it saves (about 5x on 2 cores).
    In class grading the learner's calls run in another process, which is then on one
    thread too (a watcher, see report.watching): both sides add up in the same order, so
    a right answer matches gptcore's to the last bit, as in one process."""
    with watching(_OneThread()):
        yield
