"""Lesson 3's tables of known mistakes, and the learner's functions with one mistake built in.

Each ``*_mistakes`` function returns, for one input, a table {hint: what a
function with that mistake returns}, evaluated lazily by the framework's
``recognise``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gptcore.model import sinusoidal_positional_encoding

from ..report import Mistakes

# ------------------------------------------------------------ one-hot lookup
NUM_CLASSES_HINT = (
    "give F.one_hot the number of rows explicitly, num_classes=weight.shape[0]. Without it, "
    "F.one_hot makes vectors of length idx.max() + 1, too short when the largest id is not the "
    "last row (and it cannot tell the length at all for an empty idx)."
)
ONE_HOT_DTYPE_HINT = (
    "F.one_hot returns int64 vectors; convert them to the weight's dtype with .to(weight.dtype) "
    "before the product."
)
TRANSPOSE_HINT = "multiply the one-hot vectors (..., V) by weight (V, C) itself, not by weight.T."


def one_hot_mistakes(idx: torch.Tensor, weight: torch.Tensor) -> Mistakes:
    V = weight.shape[0]
    return {TRANSPOSE_HINT: lambda: F.one_hot(idx, V).to(weight.dtype) @ weight.T}


def one_hot_error_hint(idx: torch.Tensor, weight: torch.Tensor) -> Callable[[BaseException], str]:
    """Name the known mistake that raises exactly the learner's error on this input."""
    V = weight.shape[0]
    raising = {
        NUM_CLASSES_HINT: lambda: F.one_hot(idx).to(weight.dtype) @ weight,
        TRANSPOSE_HINT: lambda: F.one_hot(idx, V).to(weight.dtype) @ weight.T,
        ONE_HOT_DTYPE_HINT: lambda: F.one_hot(idx, V) @ weight,
    }

    def hint(e: BaseException) -> str:
        got = f"{type(e).__name__}: {e}"
        return next((text for text, compute in raising.items() if _error_of(compute) == got), "")

    return hint


def _error_of(compute: Callable[[], object]) -> str | None:
    try:
        compute()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def one_hot_shape_hint(idx: torch.Tensor, weight: torch.Tensor) -> Callable[[tuple[int, ...]], str]:
    V, C = weight.shape

    def hint(shape: tuple[int, ...]) -> str:
        if shape == (*idx.shape, V):
            return "these are the one-hot vectors themselves; multiply them by weight to get (..., C)."
        if shape[-1:] == (C,) and math.prod(shape) == idx.numel() * C:
            return f"keep the shape of idx: ids of shape {tuple(idx.shape)} give vectors of shape {(*idx.shape, C)}."
        return f"idx has shape {tuple(idx.shape)} and weight has shape {(V, C)}: the result has shape idx.shape + (C,)."

    return hint


# ------------------------------------------------------- sinusoidal encoding
def pe_variant(
    T: int,
    C: int,
    base: float,
    *,
    swap: bool = False,
    exponent: str = "2i/C",
    halves: bool = False,
    start: int = 0,
    sign: float = -1.0,
) -> torch.Tensor:
    """The sinusoidal encoding with one known mistake, for diagnosis."""
    pos = torch.arange(start, start + T, dtype=torch.float64)[:, None]
    if exponent == "j/C":  # every dimension its own frequency, j / C
        j = torch.arange(C, dtype=torch.float64)
        angles = pos * base ** (sign * j / C)
        return _interleave(torch.sin(angles[:, 0::2]), torch.cos(angles[:, 1::2]))
    i = torch.arange(C // 2, dtype=torch.float64)
    power = {"2i/C": 2 * i / C, "i/C": i / C, "2i": 2 * i, "i/(C/2-1)": i / max(C // 2 - 1, 1)}[
        exponent
    ]
    angles = pos * base ** (sign * power)
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if halves:
        return torch.cat([first(angles), second(angles)], dim=1)
    return _interleave(first(angles), second(angles))


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Columns even[:, 0], odd[:, 0], even[:, 1], odd[:, 1], ...: sin and cos pair by pair."""
    return torch.stack([even, odd], dim=-1).flatten(-2)


# Known mistakes in the encoding: hint, and the pe_variant options that make the mistake.
_PE_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    (
        "sin goes in the even dimensions (0, 2, 4, ...) and cos in the odd ones: you swapped them.",
        {"swap": True},
    ),
    (
        "the exponent is 2i / n_embd, where i counts the sin/cos PAIRS (0 .. n_embd/2 - 1); "
        "equivalently, torch.arange(0, n_embd, 2) / n_embd. You used i / n_embd.",
        {"exponent": "i/C"},
    ),
    (
        "divide the exponent by n_embd: base ** (2i / n_embd), so the slowest pair turns "
        "about base times slower than the fastest, whatever n_embd is.",
        {"exponent": "2i"},
    ),
    (
        "both dimensions of a pair share one frequency: dimensions 2i and 2i + 1 both use "
        "exponent 2i / n_embd.",
        {"exponent": "j/C"},
    ),
    (
        "the exponent is 2i / n_embd (i = 0 .. n_embd/2 - 1), which stops just short of 1; "
        "not i / (n_embd/2 - 1), which reaches it.",
        {"exponent": "i/(C/2-1)"},
    ),
    (
        "interleave: PE[:, 0::2] = sin(...), PE[:, 1::2] = cos(...). You put all the sines "
        "first and all the cosines after them.",
        {"halves": True},
    ),
    (
        "positions start at 0: the first row is sin(0) = 0 and cos(0) = 1 alternating.",
        {"start": 1},
    ),
    (
        "divide the position by base ** (2i / n_embd) (or multiply by base ** (-2i / n_embd)); "
        "you multiplied by base ** (+2i / n_embd).",
        {"sign": 1.0},
    ),
]


def pe_mistakes(T: int, C: int, base: float) -> Mistakes:
    mistakes: dict[str, Callable[[], torch.Tensor]] = {
        hint: (lambda kw=kw: pe_variant(T, C, base, **kw)) for hint, kw in _PE_VARIANTS
    }
    mistakes["one row per position and one column per dimension: you returned the transpose."] = (
        lambda: sinusoidal_positional_encoding(T, C, base).double().T
    )
    if base != 10000.0:
        mistakes[f"use the base argument (here {base:g}) instead of the fixed 10000."] = (
            lambda: pe_variant(T, C, 10000.0)
        )
    return mistakes


def pe_tolerance(T: int) -> torch.Tensor:
    # float32 arithmetic loses about 1e-7 * p in the angle of position p; allow 10x that.
    return 1e-5 + 1e-6 * torch.arange(T, dtype=torch.float64)[:, None]


# --------------------------------------------------------------- neural bigram
def logits_mistakes(expected: torch.Tensor) -> Mistakes:
    return {
        "return raw logits, not probabilities: no softmax in forward.": lambda: expected.softmax(-1),
        "return raw logits: F.cross_entropy normalises them.": lambda: expected.log_softmax(-1),
    }


def loss_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> Mistakes:
    V = logits.shape[-1]
    flat, tgt = logits.reshape(-1, V).double(), targets.reshape(-1)
    return {
        "take the mean over the B*T positions, not the sum (F.cross_entropy's default "
        "reduction='mean' does it).":
            lambda: F.cross_entropy(flat, tgt, reduction="sum"),
        "F.cross_entropy takes raw logits and applies the softmax itself: do not softmax first.":
            lambda: F.cross_entropy(flat.softmax(-1), tgt),
        "F.nll_loss expects log-probabilities; with raw logits use F.cross_entropy (or "
        "F.nll_loss(F.log_softmax(logits, -1), targets)).":
            lambda: F.nll_loss(flat, tgt),
        "divide by the number of positions B*T only, not by V as well.":
            lambda: F.cross_entropy(flat, tgt, reduction="none").sum() / flat.shape[0] / V,
    }  # fmt: skip


ZERO_GRAD_HINT = (
    "call optimizer.zero_grad() before loss.backward(). backward() ADDS to .grad, so without "
    "it this step also used gradients left over from before."
)
