"""Lesson 4, from scores to weights: attention_scores, causal_mask, stable_softmax."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gptcore.model import attention as ref

from ..report import Mistakes, call, check, fail, passed
from ..tensors import generator, recognise
from .common import (
    Refused,
    compare,
    describe,
    dtype_hint,
    randn,
    refusing,
    result_tensor,
    tolerance,
    uniform,
)

__all__ = ["attention_scores", "causal_mask", "stable_softmax"]

_IN_PLACE = "Leave the inputs alone: write z = x - m, not x -= m or x.sub_(m)."


# ----------------------------------------------------------- attention scores
_SCORES_SHAPE = (
    "q is (..., Tq, d) and k is (..., Tk, d), so q @ k.transpose(-2, -1) is (..., Tq, Tk). "
    "k.T and k.transpose(0, 1) swap the wrong dims of a batched tensor."
)


def _scores_mistakes(q: torch.Tensor, k: torch.Tensor) -> Mistakes:
    d = q.size(-1)
    raw = lambda: q @ k.transpose(-2, -1)  # noqa: E731
    positions = "scale by the head dimension d = q.size(-1) (the last dim), not by the number of positions."
    return [
        ("did you scale by sqrt(head_dim)? Divide the dot products by math.sqrt(d), d = q.size(-1).", raw),
        ("divide by the square root of the head dimension, math.sqrt(d), not by d itself.", lambda: raw() / d),
        ("divide by sqrt(head_dim); you multiplied by it.", lambda: raw() * math.sqrt(d)),
        (
            "entry [..., i, j] is q_i . k_j: compute q @ k.transpose(-2, -1), not k @ q.transpose(-2, -1).",
            lambda: k @ q.transpose(-2, -1) / math.sqrt(d),
        ),
        (positions, lambda: raw() / math.sqrt(q.size(-2))),
        (positions, lambda: raw() / math.sqrt(k.size(-2))),
        ("transpose the last two dims of k: q @ k.transpose(-2, -1).", lambda: q @ k / math.sqrt(d)),
    ]  # fmt: skip


@check()
def attention_scores(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``attention_scores(q, k) -> q @ k^T / sqrt(d)``, shape (..., Tq, Tk)."""
    q0 = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    k0 = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    inputs = [(q0, k0)]  # scores [[1, 0, 2], [1, 4, 0]]
    g, rng = generator(seed), random.Random(seed)
    for i in range(cases):
        t, d = rng.randint(1, 9), rng.choice([2, 4, 8, 16, 64])
        lead = [rng.randint(1, 3), rng.randint(1, 4)][: 1 + i % 2]  # (B, T, d) and (B, H, T, d)
        inputs.append((randn(g, *lead, t, d), randn(g, *lead, t, d)))
    inputs += [
        (randn(g, 2, 3, 5, 8), randn(g, 2, 3, 7, 8)),  # more keys than queries
        (randn(g, 1, 4, 6, 16), randn(g, 1, 4, 2, 16)),  # fewer keys than queries
        (randn(g, 2, 5, 1), randn(g, 2, 5, 1)),  # d = 1
        (randn(g, 3, 32), randn(g, 3, 32)),  # (T, d), no batch
        (randn(g, 2, 2, 2, 4, 8), randn(g, 2, 2, 2, 4, 8)),  # two batch dims
        (randn(g, 1, 1, 1, 64), randn(g, 1, 1, 1, 64)),  # one position
        (randn(g, 2, 6, 256) * 3, randn(g, 2, 6, 256) * 3),  # wide heads
        (randn(g, 2, 4, 5, 8, dtype=torch.float64), randn(g, 2, 4, 5, 8, dtype=torch.float64)),
    ]  # fmt: skip
    for q, k in inputs:
        where = describe("attention_scores", q, k)
        expected = ref.attention_scores(q, k)
        got = call(
            fn, q, k, name="attention_scores", where=where,
            error_hints={RuntimeError: _SCORES_SHAPE}, mutation_hint=_IN_PLACE,
        )  # fmt: skip
        mistakes = _scores_mistakes(q, k)
        got = result_tensor(
            got, f"the result of {where}", tuple(expected.shape), q.dtype,
            mistakes=mistakes, shape_hint=_SCORES_SHAPE, dtype_hint=dtype_hint(q.dtype),
        )  # fmt: skip
        compare(where, "the scores", got, expected, mistakes)
    passed("attention_scores", len(inputs))


# ---------------------------------------------------------------- causal mask
def _grid(mask: torch.Tensor) -> list[str]:
    return ["    " + " ".join("1" if x else "." for x in row) for row in mask.tolist()]


def _mask_mistakes(t: int) -> Mistakes:
    ones = torch.ones(t, t, dtype=torch.bool)
    future = (
        "the mask lets position i see j > i (the future). Keep the lower triangle, j <= i: "
        ".tril(), not .triu()."
    )
    reversed_ = (
        "True means \"may attend\" (gptcore's and torch's convention), so True sits where "
        "j <= i; yours is reversed (True where j > i)."
    )
    return [
        (future, lambda: ones.triu()),
        (reversed_, lambda: ones.triu(1)),
        ("a position may attend to itself: the diagonal must be True (tril() keeps it).", lambda: ones.tril(-1)),
        ("the mask lets position i see j > i: everything is True. Keep only j <= i, with .tril().", lambda: ones),
        ("row i is what position i may see: True for the columns j <= i.", lambda: ones.tril().T.flip(0)),
    ]  # fmt: skip


_MASK_DTYPE = (
    "build it as bool, torch.ones(t, t, dtype=torch.bool).tril(), or turn numbers into "
    "bools with a comparison such as m > 0 (masked_fill and ~mask need bool)."
)


@check()
def causal_mask(
    fn: Callable[[int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``causal_mask(t) -> (t, t) bool``, True where j <= i (position i may see j)."""
    rng = random.Random(seed)
    sizes = [4] + [rng.randint(2, 12) for _ in range(cases)]
    sizes += [1, 2, 64, 257]
    for t in sizes:
        where = f"causal_mask({t})"
        expected = ref.causal_mask(t)
        got = call(fn, t, name="causal_mask", where=where)
        got = result_tensor(
            got, f"the result of {where}", (t, t), torch.bool,
            mistakes=_mask_mistakes(t), dtype_hint=_MASK_DTYPE,
            shape_hint="position i of t positions needs a row, and each key j a column: shape (t, t).",
        )  # fmt: skip
        if not torch.equal(got, expected):
            i, j = (int(x) for x in (got != expected).nonzero()[0])
            lines = [
                f"{where} is wrong (row i = query position, column j = key position; 1 = may attend).",
                f"  entry [{i}, {j}]: expected {bool(expected[i, j])}, got {bool(got[i, j])}",
            ]
            if t <= 12:
                lines += ["  expected:", *_grid(expected), "  got:", *_grid(got)]
            fail("\n".join(lines), recognise(got, _mask_mistakes(t)))
    passed("causal_mask", len(sizes))


# ------------------------------------------------------------ stable softmax
_SOFTMAX_REFUSED = (
    "stable_softmax called torch's softmax. This exercise is to write softmax yourself, from "
    "max, exp and sum: subtract the max along dim, exponentiate, divide by the sum along dim."
)
_SOFTMAX_FUNCTIONS = [
    (torch, "softmax"),
    (torch, "log_softmax"),
    (torch.Tensor, "softmax"),
    (torch.Tensor, "log_softmax"),
    (F, "softmax"),
    (F, "log_softmax"),
    (torch.special, "softmax"),
    (torch.special, "log_softmax"),
]
_OVERFLOW = (
    "softmax overflowed: subtract the row max before exp. In float32, exp(x) is inf once x > 88, "
    "and inf / inf is nan; softmax(x - max) is the same softmax, and its largest exponent is 0."
)
_SOFTMAX_ERRORS = {
    Refused: "use torch.exp, .amax (or .max) and .sum.",
    RuntimeError: "keep the reduced dim (keepdim=True), so that x - max and e / sum broadcast.",
    TypeError: "keep the signature stable_softmax(x, dim=-1).",
}


def _softmax_mistakes(x: torch.Tensor, dim: int) -> Mistakes:
    def normalise(e: torch.Tensor, d: int = dim) -> torch.Tensor:
        return e / e.sum(d, keepdim=True)

    return [
        (_OVERFLOW, lambda: normalise(x.exp())),
        (
            "subtract each row's own max, x.amax(dim, keepdim=True), not the max of the whole "
            "tensor: a row far below the overall max underflows to 0 / 0 = nan.",
            lambda: normalise((x - x.max()).exp()),
        ),
        (
            "use the dim argument: take the max and the sum along dim, not always the last dim.",
            lambda: torch.softmax(x, -1),
        ),
        (
            "take the max along dim too, not along the last dim.",
            lambda: normalise((x - x.amax(-1, keepdim=True)).exp()),
        ),
        (
            "keep the reduced dim (keepdim=True), so the max lines up with the entries it belongs to.",
            lambda: normalise((x - x.amax(dim)).exp()),
        ),
        (
            "divide by the sum of the exponentials along dim, so that each slice sums to 1.",
            lambda: (x - x.amax(dim, keepdim=True)).exp(),
        ),
        (
            "keep the reduced dim in the sum too (keepdim=True), so each entry is divided by its own slice's sum.",
            lambda: (lambda e: e / e.sum(dim))((x - x.amax(dim, keepdim=True)).exp()),
        ),
        (
            "sum along dim, not along the last dim.",
            lambda: normalise((x - x.amax(dim, keepdim=True)).exp(), -1),
        ),
    ]


def _softmax_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, int | None]]:
    """(x, dim) pairs; dim None means the call leaves dim at its default."""
    masked = randn(generator(seed + 1), 5, 5).masked_fill(~ref.causal_mask(5), float("-inf"))
    inputs: list[tuple[torch.Tensor, int | None]] = [
        (torch.tensor([1.0, 2.0, 3.0]), None),
        (torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]), None),
        (torch.tensor([[0.0, 0.0], [100.0, -100.0], [89.0, 0.0]]), None),
        (masked, None),  # the upper triangle is -inf, as in attention
    ]
    g, rng = generator(seed), random.Random(seed)
    for i in range(cases):
        shape = [rng.randint(1, 4) for _ in range(i % 3)] + [rng.randint(2, 9)]
        inputs.append((randn(g, *shape) * uniform(g, 0.5, 300.0), None))
    inputs += [
        (randn(g, 4, 6) * 5, 0),
        (randn(g, 3, 4, 5) * 200, 1),
        (randn(g, 3, 4, 5) * 50, -2),
        (randn(g, 2, 3, 4, 5), 2),
        (randn(g, 3, 4, 5) * 5, 2),  # positive index of the last dim
        (randn(g, 6, 7, dtype=torch.float64) * 1e4, None),  # overflows float64 too
        (randn(g, 5, 3, dtype=torch.float64), 0),
        (randn(g, 4, 1) * 100, None),  # one entry per slice: weight 1
        (torch.full((2, 3), -1e4), None),  # everything far below 0
        (torch.tensor([[5.0, 5.0, 5.0, 1.0]]), None),  # a tied max
        (masked.double().T.contiguous(), 0),
    ]
    return inputs


@check()
def stable_softmax(
    fn: Callable[..., torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``stable_softmax(x, dim=-1)`` against torch.softmax, huge inputs included.

    The inputs use the default ``dim``, then other dims, float64, and slices of
    length 1. Calls to torch's own softmax are refused.
    """
    inputs = _softmax_inputs(seed, cases)
    for x, dim in inputs:
        kwargs = {} if dim is None else {"dim": dim}
        where = describe("stable_softmax", x, **kwargs)
        d = -1 if dim is None else dim
        expected = torch.softmax(x, d)
        with refusing(_SOFTMAX_FUNCTIONS, _SOFTMAX_REFUSED):
            got = call(
                fn, x, name="stable_softmax", where=where, kwargs=kwargs,
                error_hints=_SOFTMAX_ERRORS, mutation_hint=_IN_PLACE,
            )  # fmt: skip
        mistakes = _softmax_mistakes(x, d)
        got = result_tensor(
            got, f"the result of {where}", tuple(x.shape), x.dtype,
            mistakes=mistakes, shape_hint="softmax keeps the shape of x: keepdim=True in max and sum.",
            dtype_hint=dtype_hint(x.dtype),
        )  # fmt: skip
        big = x[x.isfinite()].abs().max().item() > 80 if x.isfinite().any() else False
        if big and not got.isfinite().all() and not recognise(got, mistakes, **tolerance(x.dtype)):
            mistakes = [*mistakes, (_OVERFLOW, got)]  # an overflow of some other kind
        compare(where, "the softmax", got, expected, mistakes)
    passed("stable_softmax", len(inputs))

