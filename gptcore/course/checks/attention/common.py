"""What lesson 4's checks share: how inputs and tensors read, tolerances, seeded inputs, refusals.

The framework (``report``, ``tensors``) does the work; this module words it
the way lesson 4's messages read: an argument ``causal_mask(t)`` is named as
such, a small float32 tensor is shown by its values alone, a result's shape is
checked before its dtype, and a wrong value is shown rounded, with its first
difference, the hint of a known mistake, then the largest difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch

from gptcore.model import attention as ref

from ..report import Mistakes, fail, hint, show_arg
from ..tensors import check_tensor, close_mask, recognise

__all__ = [
    "Refused",
    "compare",
    "describe",
    "dtype_hint",
    "randn",
    "refusing",
    "result_tensor",
    "tolerance",
    "uniform",
]

_TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-8, 1e-10)}  # (rtol, atol)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """``rtol`` and ``atol`` for values of ``dtype`` (float32's for any other dtype)."""
    rtol, atol = _TOLERANCE.get(dtype, _TOLERANCE[torch.float32])
    return {"rtol": rtol, "atol": atol}


# ------------------------------------------------------------------ inputs
def _describe(value: Any) -> str:
    """An argument as a call shows it: the causal mask by name, a small float32 tensor by
    its values alone (as the learner would type it), anything else as ``show_arg`` does."""
    if isinstance(value, torch.Tensor):
        t = value.size(-1) if value.ndim else 0
        if (
            value.dtype == torch.bool
            and value.shape == (t, t)
            and torch.equal(value, ref.causal_mask(t))
        ):
            return f"causal_mask({t})"
        if value.dtype == torch.float32 and value.numel() <= 12:
            return f"tensor({value.tolist()})"
    return show_arg(value)


def describe(name: str, *args: Any, **kwargs: Any) -> str:
    """``attention_scores(tensor([[2.0, 0.0]]), <...>)``: the call a message names."""
    parts = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def dtype_hint(dtype: torch.dtype) -> str:
    return (
        f"the inputs are {dtype}; keep that dtype: do not convert with .float(), and make any "
        "constant a Python float (math.sqrt(d)) or a tensor of the input's dtype."
    )


# ------------------------------------------------------------------ results
def result_tensor(
    value: Any,
    what: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    mistakes: Mistakes = (),
    shape_hint: str = "",
    dtype_hint: str = "",
) -> torch.Tensor:
    """``check_tensor``, with the shape checked before the dtype.

    A wrong shape is the likelier mistake here (a transpose, a reduced dim), and its
    hint says more than the dtype's, so it is reported first: "<what> has shape (3, 2),
    but it should be (2, 3)". ``mistakes`` whose tensor matches ``value`` name the
    mistake; a wrong type is left to ``check_tensor``, which also returns the copy.
    """
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        got_shape = tuple(value.shape)
        if got_shape != tuple(shape):
            known = recognise(value.detach(), mistakes, **tolerance(value.dtype))
            fail(f"{what} has shape {got_shape}, but it should be {tuple(shape)}", known or shape_hint)
        if value.dtype != dtype:
            fail(f"{what} has dtype {value.dtype}, but it should be {dtype}", dtype_hint)
    return check_tensor(value, what, shape=shape, dtype=dtype)


def _number(x: torch.Tensor) -> str:
    value = x.item()
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _rounded(x: Any) -> Any:
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(x, 4) if isinstance(x, float) and math.isfinite(x) else x


def _format(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return str(t.int().tolist())
    return str([round(x, 4) for x in t.flatten().tolist()] if t.ndim > 2 else _rounded(t.tolist()))


def compare(
    where: str, what: str, got: torch.Tensor, expected: torch.Tensor, mistakes: Mistakes = ()
) -> None:
    """Fail unless ``got`` equals ``expected`` within tolerance (same shape and dtype already)."""
    tol = tolerance(expected.dtype)
    bad = ~close_mask(got, expected, **tol)
    if not bad.any():
        return
    index = tuple(int(i) for i in bad.nonzero()[0])
    lines = [
        f"{where} is wrong in {what}.",
        f"  first difference at index {list(index)}: expected {_number(expected[index])}, "
        f"got {_number(got[index])}",
    ]
    exact = not expected.is_floating_point()
    if not exact and not torch.isfinite(got).all() and torch.isfinite(expected).all():
        lines.append("  your result holds nan or inf, where every expected value is finite")
    # The hint goes before the details, so that a report that cuts long messages keeps it.
    details = []
    if not exact:
        diff = (got.double() - expected.double()).abs().nan_to_num(nan=math.inf).max().item()
        details.append(
            f"  largest difference: {diff:.3g} "
            f"(tolerance {tol['atol']:g} + {tol['rtol']:g} x |expected|)"
        )
    if expected.numel() <= 24:
        flat = " (flattened)" if expected.ndim > 2 else ""
        details += [f"  expected{flat}: {_format(expected)}", f"  got{flat}:      {_format(got)}"]
    known = recognise(got, mistakes, **tol)
    fail("\n".join(lines) + hint(known) + "".join("\n" + d for d in details))


# ----------------------------------------------------------------- refusals
class Refused(Exception):
    """The learner's function called a function the exercise asks them to write."""


@contextmanager
def refusing(targets: Iterable[tuple[Any, str]], message: str) -> Iterator[None]:
    """Inside the block, each ``getattr(owner, attr)`` of ``targets`` raises ``Refused``."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise Refused(message)

    with ExitStack() as stack:
        for owner, attr in targets:
            stack.enter_context(mock.patch.object(owner, attr, refuse))
        yield
