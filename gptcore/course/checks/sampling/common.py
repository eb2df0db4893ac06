"""What lesson 7's checks share: how logits are shown, result tensors, seeded logits.

Logits are shown to 4 significant digits, with -inf as ``-inf``
(``tensor([1, 3, 2, -inf], dtype=float32)``): a filter's result is read by
which entries are -inf, which the framework's full-precision ``show_arg``
buries in digits.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gptcore.model.attention import KVCache

from ..report import Shown, fail, show_arg, type_name
from ..tensors import check_tensor, close_mask

NEG = float("-inf")

# Where the learner passes logits on, the tensor they get back must be the one they gave.
MUTATION_HINT = (
    "Leave the input as it is and return a new tensor (masked_fill, torch.where or clone() "
    "first): the caller still needs the original logits."
)


def _fmt_number(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.4g}"


def show_logits(t: torch.Tensor, limit: int = 12) -> Shown:
    """Small tensors by value (4 significant digits), large ones by shape and dtype."""
    if t.numel() > limit:
        return Shown(show_arg(t, max_values=limit))
    dtype = str(t.dtype).removeprefix("torch.")
    values = t.detach().double().tolist() if t.is_floating_point() else t.tolist()

    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return _fmt_number(v) if isinstance(v, float) else str(v)

    return Shown(f"tensor({fmt(values)}, dtype={dtype})")


def show_value(value: Any) -> str:
    """A value as messages show it: logits by value, a cache by how full it is."""
    if isinstance(value, torch.Tensor):
        return show_logits(value)
    if isinstance(value, KVCache):
        return f"<KVCache holding {value.length} of max_len={value.max_len}>"
    return show_arg(value)


class Name(str):
    """A string shown without quotes in a described call ("generator")."""

    def __repr__(self) -> str:
        return str(self)


GENERATOR = Name("generator")


def describe(name: str, *args: Any) -> str:
    """``top_k_filter(tensor([1, 3, 2, 0], dtype=float32), 2)``: a call as messages name it."""
    return f"{name}({', '.join(show_value(a) for a in args)})"


def result_tensor(
    value: Any,
    what: str,
    like: torch.Tensor,
    *,
    dtype_hint: str = "",
    shape_hint: str = "",
) -> torch.Tensor:
    """A plain copy of ``value`` after checking it is a tensor of ``like``'s dtype and shape."""
    if type(value).__module__ == "numpy":
        # The framework would suggest converting back; here the advice is not to leave torch.
        fail(
            f"{what} must be a torch.Tensor, but it is a {type_name(value)}",
            "stay in torch; torch has every operation you need here.",
        )
    # A tensor subclass is taken as a plain tensor (its values are then compared as such),
    # so that a subclass whose __eq__ always answers True is told its values are wrong.
    return check_tensor(
        value,
        what,
        shape=tuple(like.shape),
        dtype=like.dtype,
        dtype_hint=f"return the dtype of the input, {like.dtype}"
        + (f"; {dtype_hint}" if dtype_hint else "."),
        shape_hint=shape_hint,
        allow_subclass=True,
    )


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, NaN included (NaN equals NaN here)."""
    return a.shape == b.shape and bool(close_mask(a, b, atol=0.0, rtol=0.0, equal_nan=True).all())


def first_bad(got: torch.Tensor, expected: torch.Tensor, exact: bool) -> str:
    """Where two tensors of one shape first differ, as "at index (0, 3): expected 0.25, got 0.5"."""
    if exact:
        ok = close_mask(got, expected, atol=0.0, rtol=0.0, equal_nan=True)
    else:
        ok = close_mask(got, expected, atol=1e-6, rtol=1e-4)
    idx = tuple(int(i) for i in (~ok).nonzero()[0])
    shown = idx[0] if len(idx) == 1 else idx
    return (
        f"  first difference at index {shown}: expected {_fmt_number(float(expected[idx]))}, "
        f"got {_fmt_number(float(got[idx]))}"
    )


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32):
    """Seeded normal logits, drawn in float64 (so float32 and float64 cases draw alike)."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def distinct(gen: torch.Generator, *shape: int, scale: float) -> torch.Tensor:
    """Random logits without ties along the last dim (ties make filters ambiguous)."""
    while True:
        x = randn(gen, *shape, scale=scale)
        s = x.sort(dim=-1).values
        if shape[-1] < 2 or bool((s[..., 1:] - s[..., :-1] > 1e-4).all()):
            return x
