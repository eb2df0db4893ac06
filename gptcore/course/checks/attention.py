"""Checks for lesson 4 (attention): scores, the causal mask, softmax, the weighted sum, heads.

Each check compares the learner's function with gptcore's reference
(``gptcore.model.attention``, and torch's own softmax) on a hand-checkable example,
then on ``cases`` random tensors drawn from a ``torch.Generator`` seeded with
``seed``. ``edge_cases=True`` adds inputs at the edges of the contract (float64,
a single position, queries and keys of different lengths, no mask, another
softmax dim, one head); the hidden tests use it.

A result must be exactly a ``torch.Tensor`` (or a tuple of them, where the
docstring says so), with the expected shape and dtype, before its values are
compared, so an object that claims to equal everything cannot pass. Values
must match within float tolerance: 1e-5 + 1e-4 x |expected| in float32, and
1e-10 + 1e-8 x |expected| in float64. On a wrong answer the message names the
input, the first entry that differs, and, where a known mistake reproduces the
wrong answer, which mistake it is.

None of the checks changes torch's global random state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from gptcore.model import attention as ref
from gptcore.model.attention import CausalSelfAttention
from gptcore.model.gpt import GPTConfig

from . import call, fail, passed, show, type_name

__all__ = [
    "attention",
    "attention_scores",
    "causal_mask",
    "causal_self_attention",
    "check_tensor",
    "merge_heads",
    "split_heads",
    "stable_softmax",
]

Mistakes = Iterable[tuple[Callable[[], Any], str]]
_TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-8, 1e-10)}  # (rtol, atol)


# ------------------------------------------------------------------- helpers
def _describe(value: Any) -> str:
    """A tensor as its values when small, else as its shape and dtype."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        t = value.size(-1) if value.ndim else 0
        if (
            value.shape == (t, t)
            and value.dtype == torch.bool
            and torch.equal(value, ref.causal_mask(t))
        ):
            return f"causal_mask({t})"
        if value.numel() <= 12 and value.ndim <= 2:
            return (
                f"tensor({value.tolist()}"
                + ("" if dtype == "float32" else f", dtype={dtype}")
                + ")"
            )
        return f"<{dtype} tensor of shape {tuple(value.shape)}>"
    return show(value, 60)


def _where(name: str, *args: Any, **kwargs: Any) -> str:
    parts = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _same(got: Any, expected: torch.Tensor) -> bool:
    """Same shape and values within tolerance; nan matches nan (for diagnosing mistakes)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    if not expected.is_floating_point():
        return got.dtype == expected.dtype and torch.equal(got, expected)
    rtol, atol = _TOLERANCE.get(expected.dtype, (1e-4, 1e-5))
    return torch.allclose(got.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True)


def _diagnose(got: torch.Tensor, mistakes: Mistakes) -> str:
    """The hints of the known mistakes whose result matches ``got``, or ""."""
    hints: list[str] = []
    for compute, hint in mistakes:
        try:
            with torch.no_grad():
                wrong = compute()
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
        if _same(got, wrong) and hint not in hints:
            hints.append(hint)
    return "\n  or: ".join(hints)


def _hint(text: str) -> str:
    return f"\nHint: {text}" if text else ""


def check_tensor(
    value: Any,
    what: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    mistakes: Mistakes = (),
    shape_hint: str = "",
    dtype_hint: str = "",
) -> torch.Tensor:
    """``value`` detached, after checking it is a plain ``torch.Tensor`` of this shape and dtype.

    A wrong shape or dtype fails with a message naming both; ``mistakes``
    (``(compute, hint)`` pairs) whose result matches ``value`` add their hints.
    """
    if type(value) is not torch.Tensor:
        if isinstance(value, torch.Tensor):
            kind = f"a {type_name(value)}, a subclass of torch.Tensor; return a plain tensor"
        elif type(value).__module__ == "numpy":
            kind = f"a {type_name(value)}; keep the computation in torch (no .numpy())"
        else:
            kind = f"a {type_name(value)}: {show(value, 80)}"
        fail(f"{what} must be a torch.Tensor, but it is {kind}")
    got_shape = tuple(value.shape)
    if got_shape != tuple(shape):
        hint = _diagnose(value.detach(), mistakes) or shape_hint
        fail(f"{what} has shape {got_shape}, but it should be {tuple(shape)}" + _hint(hint))
    if value.dtype != dtype:
        fail(f"{what} has dtype {value.dtype}, but it should be {dtype}" + _hint(dtype_hint))
    return value.detach()


def _format(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return str(t.int().tolist())
    return str([round(x, 4) for x in t.flatten().tolist()] if t.ndim > 2 else _rounded(t.tolist()))


def _number(x: torch.Tensor) -> str:
    value = x.item()
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _rounded(x: Any) -> Any:
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(x, 4) if isinstance(x, float) and math.isfinite(x) else x


def _compare(
    where: str, what: str, got: torch.Tensor, expected: torch.Tensor, mistakes: Mistakes = ()
) -> None:
    """Fail unless ``got`` equals ``expected`` within tolerance (same shape and dtype already)."""
    exact = not expected.is_floating_point()
    if exact:
        bad = got != expected
    else:
        rtol, atol = _TOLERANCE[expected.dtype]
        bad = ~torch.isclose(got, expected, rtol=rtol, atol=atol)
    if not bad.any():
        return
    index = tuple(int(i) for i in bad.nonzero()[0])
    lines = [
        f"{where} is wrong in {what}.",
        f"  first difference at index {list(index)}: expected {_number(expected[index])}, "
        f"got {_number(got[index])}",
    ]
    if not exact and not torch.isfinite(got).all() and torch.isfinite(expected).all():
        lines.append("  your result holds nan or inf, where every expected value is finite")
    hint = _diagnose(got, mistakes)
    if hint:  # before the details, so that a report that cuts long messages short keeps it
        lines.append(f"Hint: {hint}")
    if not exact:
        diff = (got.double() - expected.double()).abs().nan_to_num(nan=math.inf).max().item()
        lines.append(
            f"  largest difference: {diff:.3g} (tolerance {atol:g} + {rtol:g} x |expected|)"
        )
    if expected.numel() <= 24:
        flat = " (flattened)" if expected.ndim > 2 else ""
        lines += [f"  expected{flat}: {_format(expected)}", f"  got{flat}:      {_format(got)}"]
    fail("\n".join(lines))


def _call(
    fn: Callable[..., Any],
    *args: Any,
    name: str,
    where: str,
    error_hints: Mapping[type[BaseException], str] | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)`` through ``checks.call``; fails if it changed a tensor argument."""
    snapshots = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
    result = call(
        lambda *a: fn(*a, **kwargs), *args, name=name, where=where, error_hints=error_hints
    )
    for i, (arg, before) in enumerate(zip(args, snapshots)):
        if before is not None and not torch.equal(arg, before):
            fail(
                f"{where} changed its argument #{i + 1} in place. Leave the inputs alone: "
                "write z = x - m, not x -= m or x.sub_(m)."
            )
    return result


class _Refused(Exception):
    """The learner's function called a function the exercise asks them to write."""


@contextmanager
def _refusing(targets: Iterable[tuple[Any, str]], message: str) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Refused(message)

    with ExitStack() as stack:
        for owner, attr in targets:
            stack.enter_context(mock.patch.object(owner, attr, refuse))
        yield


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _dtype_hint(dtype: torch.dtype) -> str:
    return (
        f"the inputs are {dtype}; keep that dtype: do not convert with .float(), and make any "
        "constant a Python float (math.sqrt(d)) or a tensor of the input's dtype."
    )


# ----------------------------------------------------------- attention scores
_SCORES_SHAPE = (
    "q is (..., Tq, d) and k is (..., Tk, d), so q @ k.transpose(-2, -1) is (..., Tq, Tk). "
    "k.T and k.transpose(0, 1) swap the wrong dims of a batched tensor."
)


def _scores_mistakes(q: torch.Tensor, k: torch.Tensor) -> Mistakes:
    d = q.size(-1)
    raw = lambda: q @ k.transpose(-2, -1)  # noqa: E731
    return [
        (raw, "did you scale by sqrt(head_dim)? Divide the dot products by math.sqrt(d), d = q.size(-1)."),
        (lambda: raw() / d, "divide by the square root of the head dimension, math.sqrt(d), not by d itself."),
        (lambda: raw() * math.sqrt(d), "divide by sqrt(head_dim); you multiplied by it."),
        (
            lambda: k @ q.transpose(-2, -1) / math.sqrt(d),
            "entry [..., i, j] is q_i . k_j: compute q @ k.transpose(-2, -1), not k @ q.transpose(-2, -1).",
        ),
        (
            lambda: raw() / math.sqrt(q.size(-2)),
            "scale by the head dimension d = q.size(-1) (the last dim), not by the number of positions.",
        ),
        (
            lambda: raw() / math.sqrt(k.size(-2)),
            "scale by the head dimension d = q.size(-1) (the last dim), not by the number of positions.",
        ),
        (lambda: q @ k / math.sqrt(d), "transpose the last two dims of k: q @ k.transpose(-2, -1)."),
    ]  # fmt: skip


def attention_scores(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``attention_scores(q, k) -> q @ k^T / sqrt(d)``, shape (..., Tq, Tk)."""
    q0 = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    k0 = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    inputs = [(q0, k0)]  # scores [[1, 0, 2], [1, 4, 0]]
    g, rng = _gen(seed), random.Random(seed)
    for i in range(cases):
        t, d = rng.randint(1, 9), rng.choice([2, 4, 8, 16, 64])
        lead = [rng.randint(1, 3), rng.randint(1, 4)][: 1 + i % 2]  # (B, T, d) and (B, H, T, d)
        inputs.append((_randn(g, *lead, t, d), _randn(g, *lead, t, d)))
    if edge_cases:
        inputs += [
            (_randn(g, 2, 3, 5, 8), _randn(g, 2, 3, 7, 8)),  # more keys than queries
            (_randn(g, 1, 4, 6, 16), _randn(g, 1, 4, 2, 16)),  # fewer keys than queries
            (_randn(g, 2, 5, 1), _randn(g, 2, 5, 1)),  # d = 1
            (_randn(g, 3, 32), _randn(g, 3, 32)),  # (T, d), no batch
            (_randn(g, 2, 2, 2, 4, 8), _randn(g, 2, 2, 2, 4, 8)),  # two batch dims
            (_randn(g, 1, 1, 1, 64), _randn(g, 1, 1, 1, 64)),  # one position
            (_randn(g, 2, 6, 256) * 3, _randn(g, 2, 6, 256) * 3),  # wide heads
            (_randn(g, 2, 4, 5, 8, dtype=torch.float64), _randn(g, 2, 4, 5, 8, dtype=torch.float64)),
        ]  # fmt: skip
    for q, k in inputs:
        where = _where("attention_scores", q, k)
        expected = ref.attention_scores(q, k)
        got = _call(
            fn,
            q,
            k,
            name="attention_scores",
            where=where,
            error_hints={RuntimeError: _SCORES_SHAPE},
        )
        mistakes = _scores_mistakes(q, k)
        got = check_tensor(
            got, f"the result of {where}", tuple(expected.shape), q.dtype,
            mistakes=mistakes, shape_hint=_SCORES_SHAPE, dtype_hint=_dtype_hint(q.dtype),
        )  # fmt: skip
        _compare(where, "the scores", got, expected, mistakes)
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
        (lambda: ones.triu(), future),
        (lambda: ones.triu(1), reversed_),
        (lambda: ones.tril(-1), "a position may attend to itself: the diagonal must be True (tril() keeps it)."),
        (lambda: ones, "the mask lets position i see j > i: everything is True. Keep only j <= i, with .tril()."),
        (lambda: ones.tril().T.flip(0), "row i is what position i may see: True for the columns j <= i."),
    ]  # fmt: skip


def causal_mask(
    fn: Callable[[int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``causal_mask(t) -> (t, t) bool``, True where j <= i (position i may see j)."""
    rng = random.Random(seed)
    sizes = [4] + [rng.randint(2, 12) for _ in range(cases)]
    if edge_cases:
        sizes += [1, 2, 64, 257]
    for t in sizes:
        where = f"causal_mask({t})"
        expected = ref.causal_mask(t)
        got = call(fn, t, name="causal_mask", where=where)
        dtype_hint = (
            "build it as bool, torch.ones(t, t, dtype=torch.bool).tril(), or turn numbers into "
            "bools with a comparison such as m > 0 (masked_fill and ~mask need bool)."
        )
        got = check_tensor(
            got, f"the result of {where}", (t, t), torch.bool,
            mistakes=_mask_mistakes(t), dtype_hint=dtype_hint,
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
            fail("\n".join(lines) + _hint(_diagnose(got, _mask_mistakes(t))))
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


def _softmax_mistakes(x: torch.Tensor, dim: int) -> Mistakes:
    def normalise(e: torch.Tensor, d: int = dim) -> torch.Tensor:
        return e / e.sum(d, keepdim=True)

    return [
        (lambda: normalise(x.exp()), _OVERFLOW),
        (
            lambda: normalise((x - x.max()).exp()),
            "subtract each row's own max, x.amax(dim, keepdim=True), not the max of the whole "
            "tensor: a row far below the overall max underflows to 0 / 0 = nan.",
        ),
        (
            lambda: torch.softmax(x, -1),
            "use the dim argument: take the max and the sum along dim, not always the last dim.",
        ),
        (
            lambda: normalise((x - x.amax(-1, keepdim=True)).exp()),
            "take the max along dim too, not along the last dim.",
        ),
        (
            lambda: normalise((x - x.amax(dim)).exp()),
            "keep the reduced dim (keepdim=True), so the max lines up with the entries it belongs to.",
        ),
        (
            lambda: (x - x.amax(dim, keepdim=True)).exp(),
            "divide by the sum of the exponentials along dim, so that each slice sums to 1.",
        ),
        (
            lambda: (lambda e: e / e.sum(dim))((x - x.amax(dim, keepdim=True)).exp()),
            "keep the reduced dim in the sum too (keepdim=True), so each entry is divided by its own slice's sum.",
        ),
        (
            lambda: normalise((x - x.amax(dim, keepdim=True)).exp(), -1),
            "sum along dim, not along the last dim.",
        ),
    ]


def stable_softmax(
    fn: Callable[..., torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``stable_softmax(x, dim=-1)`` against torch.softmax, huge inputs included.

    The visible inputs use the default ``dim``; ``edge_cases`` adds other dims,
    float64, and slices of length 1. Calls to torch's own softmax are refused.
    """
    masked = _randn(_gen(seed + 1), 5, 5).masked_fill(~ref.causal_mask(5), float("-inf"))
    inputs: list[tuple[torch.Tensor, int | None]] = [
        (torch.tensor([1.0, 2.0, 3.0]), None),
        (torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]), None),
        (torch.tensor([[0.0, 0.0], [100.0, -100.0], [89.0, 0.0]]), None),
        (masked, None),  # the upper triangle is -inf, as in attention
    ]
    g, rng = _gen(seed), random.Random(seed)
    for i in range(cases):
        shape = [rng.randint(1, 4) for _ in range(i % 3)] + [rng.randint(2, 9)]
        inputs.append((_randn(g, *shape) * _uniform(g, 0.5, 300.0), None))
    if edge_cases:
        inputs += [
            (_randn(g, 4, 6) * 5, 0),
            (_randn(g, 3, 4, 5) * 200, 1),
            (_randn(g, 3, 4, 5) * 50, -2),
            (_randn(g, 2, 3, 4, 5), 2),
            (_randn(g, 3, 4, 5) * 5, 2),  # positive index of the last dim
            (_randn(g, 6, 7, dtype=torch.float64) * 1e4, None),  # overflows float64 too
            (_randn(g, 5, 3, dtype=torch.float64), 0),
            (_randn(g, 4, 1) * 100, None),  # one entry per slice: weight 1
            (torch.full((2, 3), -1e4), None),  # everything far below 0
            (torch.tensor([[5.0, 5.0, 5.0, 1.0]]), None),  # a tied max
            (masked.double().T.contiguous(), 0),
        ]
    for x, dim in inputs:
        kwargs = {} if dim is None else {"dim": dim}
        where = _where("stable_softmax", x, **kwargs)
        d = -1 if dim is None else dim
        expected = torch.softmax(x, d)
        with _refusing(_SOFTMAX_FUNCTIONS, _SOFTMAX_REFUSED):
            got = _call(
                fn, x, name="stable_softmax", where=where,
                error_hints={
                    _Refused: "use torch.exp, .amax (or .max) and .sum.",
                    RuntimeError: "keep the reduced dim (keepdim=True), so that x - max and e / sum broadcast.",
                    TypeError: "keep the signature stable_softmax(x, dim=-1).",
                },
                **kwargs,
            )  # fmt: skip
        mistakes = _softmax_mistakes(x, d)
        got = check_tensor(
            got, f"the result of {where}", tuple(x.shape), x.dtype,
            mistakes=mistakes, shape_hint="softmax keeps the shape of x: keepdim=True in max and sum.",
            dtype_hint=_dtype_hint(x.dtype),
        )  # fmt: skip
        big = x[x.isfinite()].abs().max().item() > 80 if x.isfinite().any() else False
        if big and not got.isfinite().all() and not _diagnose(got, mistakes):
            mistakes = [
                *mistakes,
                (lambda got=got: got, _OVERFLOW),
            ]  # an overflow of some other kind
        _compare(where, "the softmax", got, expected, mistakes)
    passed("stable_softmax", len(inputs))


# ------------------------------------------------------------------ attention
_FILL = "Fill the scores where mask is False with float('-inf') before the softmax: scores.masked_fill(~mask, float('-inf'))."


def _attention_mistakes(q, k, v, mask) -> tuple[Mistakes, Mistakes]:
    """(mistakes in the weights, mistakes in the output)."""
    d = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    allowed = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask

    def w(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return torch.softmax(s, dim)

    right = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)[1]
    weights: list[tuple[Callable[[], Any], str]] = [
        (lambda: w(scores), "the mask was not applied. " + _FILL),
        (
            lambda: w(scores.masked_fill(~allowed, 0.0)),
            "fill masked scores with float('-inf'), not 0: after the softmax a score of 0 still gets weight.",
        ),
        (
            lambda: w(scores.masked_fill(allowed, float("-inf"))),
            "mask is True where a query MAY attend: fill where it is False, masked_fill(~mask, ...), not masked_fill(mask, ...).",
        ),
        (
            lambda: w(scores) * allowed,
            "apply the mask to the scores before the softmax: zeroing weights afterwards leaves rows that no longer sum to 1.",
        ),
        (
            lambda: w(scores.masked_fill(~allowed, float("-inf")), -2),
            "take the softmax over the keys, the last dim (dim=-1): each query's weights must sum to 1.",
        ),
        (
            lambda: w((q @ k.transpose(-2, -1)).masked_fill(~allowed, float("-inf"))),
            "did you scale by sqrt(head_dim)? Use your attention_scores(q, k).",
        ),
        (lambda: right.transpose(-2, -1), "row i of the weights belongs to query i: weights[..., i, j] = softmax over j of q_i . k_j."),
    ]  # fmt: skip
    out: list[tuple[Callable[[], Any], str]] = [
        (lambda: right.transpose(-2, -1) @ v, "out = weights @ v: row i of out mixes the values with query i's weights (row i)."),
        (lambda: (right @ v).transpose(-2, -1), "out = weights @ v has shape (..., Tq, dv); do not transpose it."),
        (lambda: right @ k, "the weights mix the values v, not the keys k."),
        (lambda: right @ q, "the weights mix the values v, not the queries q."),
    ]  # fmt: skip
    return weights, out


def _leak(
    where: str, weights: torch.Tensor, allowed: torch.Tensor, causal: bool, mistakes: Mistakes
) -> None:
    """Fail if a query puts weight on a key the mask forbids."""
    leaked = (weights.abs() > 1e-6) & ~allowed.expand_as(weights)
    if not leaked.any():
        return
    index = [int(x) for x in leaked.nonzero()[0]]
    i, j = index[-2:]
    value = weights[tuple(index)].item()
    what = (
        f"the mask lets position i see j > i: query {i} puts weight {value:.4g} on key {j}, in its future."
        if causal
        else f"query {i} puts weight {value:.4g} on key {j}, where the mask is False."
    )
    fail(
        f"{where} is wrong: at index {index} of the weights, {what}"
        + _hint(_diagnose(weights, mistakes) or _FILL)
    )


def _unpack_pair(result: Any, where: str, names: tuple[str, str], shapes) -> None:
    if type(result) is not tuple:
        more = ""
        if isinstance(result, torch.Tensor):
            more = f" (a tensor of shape {tuple(result.shape)}); return both: return {names[0]}, {names[1]}"
        elif isinstance(result, list):
            more = f"; return a tuple: return {names[0]}, {names[1]}"
        fail(
            f"{where} must return a tuple ({names[0]}, {names[1]}), but it returned a {type_name(result)}{more}"
        )
    if len(result) != 2:
        fail(
            f"{where} must return a tuple of two tensors ({names[0]}, {names[1]}), but it returned {len(result)} items"
        )
    a, b = result
    if (
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        and shapes[0] != shapes[1]
        and tuple(a.shape) == shapes[1] and tuple(b.shape) == shapes[0]
    ):  # fmt: skip
        fail(
            f"{where} returned ({names[1]}, {names[0]}); return them in the order ({names[0]}, {names[1]})."
        )


def _random_mask(g: torch.Generator, *shape: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=g) < 0.6
    keep = torch.randint(shape[-1], shape[:-1], generator=g)  # every query sees at least one key
    return mask | F.one_hot(keep, shape[-1]).bool()


def attention(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    cases: int = 8,
    edge_cases: bool = False,
) -> None:
    """Check ``attention(q, k, v, mask=None) -> (out, weights)`` against gptcore and torch.

    The visible inputs always pass a mask; ``edge_cases`` adds calls without
    one, other masks, float64, and keys that outnumber the queries.
    """
    zeros = torch.zeros(3, 2)  # every score 0: each query averages the values it may see
    inputs: list[tuple[Any, ...]] = [
        (zeros, zeros, torch.tensor([[1.0], [2.0], [3.0]]), ref.causal_mask(3), True),
    ]
    g, rng = _gen(seed), random.Random(seed)
    for i in range(cases):
        t, d = rng.randint(1, 9), rng.choice([2, 4, 8, 16])
        lead = [rng.randint(1, 3), rng.randint(1, 4)][: 1 + i % 2]
        scale = _uniform(g, 0.5, 2.0)
        q, k, v = (_randn(g, *lead, t, d) * scale for _ in range(3))
        inputs.append((q, k, v, ref.causal_mask(t), True))
    if edge_cases:
        f64 = torch.float64
        inputs += [
            (*(_randn(g, 2, 3, 6, 8) for _ in range(3)), None, False),  # no mask: see everything
            (*(_randn(g, 2, 3, 6, 8) for _ in range(3)), None, True),  # default mask=None
            (_randn(g, 2, 4, 8), _randn(g, 2, 7, 8), _randn(g, 2, 7, 3), _random_mask(g, 4, 7), True),
            (_randn(g, 2, 2, 5, 4), _randn(g, 2, 2, 5, 4), _randn(g, 2, 2, 5, 6), _random_mask(g, 2, 1, 5, 5), True),
            (*(_randn(g, 1, 2, 7, 16, dtype=f64) for _ in range(3)), ref.causal_mask(7), True),
            (*(_randn(g, 1, 1, 1, 4) for _ in range(3)), ref.causal_mask(1), True),  # one position
            (*(_randn(g, 5, 8) * 3 for _ in range(3)), ref.causal_mask(5), True),  # (T, d), no batch
        ]  # fmt: skip
    for q, k, v, mask, pass_mask in inputs:
        args = (q, k, v, mask) if pass_mask else (q, k, v)
        where = _where("attention", *args)
        out, weights = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        shapes = (tuple(out.shape), tuple(weights.shape))
        result = _call(
            fn, *args, name="attention", where=where,
            error_hints={
                TypeError: "mask may be None (no mask): apply it only when it is given, if mask is not None.",
                RuntimeError: "q, k: (..., T, d), v: (..., T, dv), mask broadcasts to (..., Tq, Tk).",
            },
        )  # fmt: skip
        _unpack_pair(result, where, ("out", "weights"), shapes)
        w_mistakes, out_mistakes = _attention_mistakes(q, k, v, mask)
        got_w = check_tensor(
            result[1], f"the weights returned by {where}", shapes[1], q.dtype,
            mistakes=w_mistakes, shape_hint="the weights are (..., Tq, Tk): one row per query, one column per key.",
            dtype_hint=_dtype_hint(q.dtype),
        )  # fmt: skip
        if mask is not None:
            t = q.size(-2)
            causal = mask.shape == (t, t) and torch.equal(mask, ref.causal_mask(t))
            _leak(where, got_w, mask, causal, w_mistakes)
        _compare(where, "the weights", got_w, weights, w_mistakes)
        got_out = check_tensor(
            result[0], f"the output returned by {where}", shapes[0], q.dtype,
            mistakes=out_mistakes, shape_hint="out = weights @ v is (..., Tq, dv).",
            dtype_hint=_dtype_hint(q.dtype),
        )  # fmt: skip
        _compare(where, "the output", got_out, out, out_mistakes)
        if q.dtype == torch.float32 and mask is not None:  # torch's fused kernel agrees
            fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            _compare(where + " (against torch's fused attention)", "the output", got_out, fused)
    passed("attention", len(inputs))


# ---------------------------------------------------------------------- heads
_SPLIT_HOW = "x.view(B, T, n_head, C // n_head).transpose(1, 2)"


def _split_mistakes(x: torch.Tensor, n_head: int) -> Mistakes:
    b, t, c = x.shape
    hs = c // n_head
    return [
        (
            lambda: x.reshape(b, n_head, t, hs),
            "heads split in the wrong order: view x as (B, T, n_head, head_size) first, then "
            "transpose(1, 2). Viewing it directly as (B, n_head, T, head_size) mixes positions into heads.",
        ),
        (
            lambda: x.reshape(b, t, hs, n_head).permute(0, 3, 1, 2),
            "each head gets a contiguous slice of head_size channels (head h: channels h*hs to "
            "(h+1)*hs - 1): view the last dim as (n_head, head_size), not (head_size, n_head).",
        ),
        (
            lambda: x.reshape(b, t, n_head, hs),
            "transpose(1, 2) after the view, so the head dim comes before T: (B, n_head, T, head_size).",
        ),
        (
            lambda: x.reshape(b, t, n_head, hs).transpose(1, 3),
            "swap dims 1 and 2 (T and n_head) only: transpose(1, 2).",
        ),
    ]


def split_heads(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``split_heads(x, n_head)``: (B, T, C) -> (B, n_head, T, C // n_head)."""
    inputs = [(torch.arange(8.0).view(1, 2, 4), 2)]
    g, rng = _gen(seed), random.Random(seed)
    for _ in range(cases):
        n_head = rng.choice([2, 3, 4])
        c = n_head * rng.randint(2, 5)
        inputs.append((_randn(g, rng.randint(1, 3), rng.randint(2, 7), c), n_head))
    if edge_cases:
        wide = _randn(g, 2, 5, 36)
        inputs += [
            (_randn(g, 2, 5, 12), 1),  # one head holds every channel
            (_randn(g, 2, 5, 6), 6),  # one channel per head
            (_randn(g, 3, 1, 8), 4),  # one position
            (_randn(g, 1, 4, 8, dtype=torch.float64), 2),
            (torch.arange(2 * 3 * 12).view(2, 3, 12), 4),  # integers: pure bookkeeping
            (wide[..., 12:24], 3),  # a slice of c_attn's output, as in attention
        ]
    for x, n_head in inputs:
        b, t, c = x.shape
        where = _where("split_heads", x, n_head)
        got = _call(
            fn, x, n_head, name="split_heads", where=where,
            error_hints={RuntimeError: _SPLIT_HOW, TypeError: "use integer division: C // n_head."},
        )  # fmt: skip
        mistakes = _split_mistakes(x, n_head)
        got = check_tensor(
            got, f"the result of {where}", (b, n_head, t, c // n_head), x.dtype, mistakes=mistakes,
            shape_hint=f"the result is (B, n_head, T, C // n_head): {_SPLIT_HOW}.",
            dtype_hint="splitting heads only moves numbers around; keep x's dtype.",
        )  # fmt: skip
        _compare(where, "the heads", got, ref.split_heads(x, n_head), mistakes)
    passed("split_heads", len(inputs))


_MERGE_VIEW = (
    "x.transpose(1, 2) is not contiguous in memory, so .view() cannot flatten it: call "
    ".contiguous() first, or use .reshape(...)."
)


def _merge_mistakes(x: torch.Tensor) -> Mistakes:
    b, h, t, hs = x.shape
    return [
        (
            lambda: x.reshape(b, t, h * hs),
            "heads merged in the wrong order: transpose before view. x is (B, n_head, T, head_size); "
            "x.transpose(1, 2) makes it (B, T, n_head, head_size), and only then can the last two "
            "dims be flattened into C.",
        ),
        (
            lambda: x.permute(0, 2, 3, 1).reshape(b, t, h * hs),
            "keep each head's channels together: transpose(1, 2) gives (B, T, n_head, head_size); "
            "do not move head_size before n_head.",
        ),
        (lambda: x.transpose(1, 2), "flatten the last two dims into C = n_head * head_size: the result is (B, T, C)."),
    ]  # fmt: skip


def merge_heads(
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``merge_heads(x)``: (B, n_head, T, hs) -> (B, T, n_head * hs), split_heads undone."""
    inputs = [torch.tensor([[[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]])]
    g, rng = _gen(seed), random.Random(seed)
    for _ in range(cases):
        shape = (rng.randint(1, 3), rng.choice([2, 3, 4]), rng.randint(2, 7), rng.randint(1, 5))
        inputs.append(_randn(g, *shape))
    if edge_cases:
        inputs += [
            _randn(g, 2, 1, 5, 6),  # one head
            _randn(g, 2, 6, 5, 1),  # head_size 1
            _randn(g, 3, 4, 1, 2),  # one position
            _randn(g, 1, 2, 4, 4, dtype=torch.float64),
            ref.split_heads(_randn(g, 2, 5, 12), 3),  # split_heads' output (not contiguous)
            torch.arange(2 * 3 * 4 * 2).view(2, 3, 4, 2),  # integers
        ]
    for x in inputs:
        b, h, t, hs = x.shape
        where = _where("merge_heads", x)
        got = _call(fn, x, name="merge_heads", where=where, error_hints={RuntimeError: _MERGE_VIEW})
        mistakes = _merge_mistakes(x)
        got = check_tensor(
            got, f"the result of {where}", (b, t, h * hs), x.dtype, mistakes=mistakes,
            shape_hint="the result is (B, T, n_head * head_size): x.transpose(1, 2).reshape(B, T, C).",
            dtype_hint="merging heads only moves numbers around; keep x's dtype.",
        )  # fmt: skip
        _compare(where, "the merged heads", got, ref.merge_heads(x), mistakes)
    passed("merge_heads", len(inputs))


# ---------------------------------------------------- causal self-attention
def _module(g: torch.Generator, n_embd: int, n_head: int, bias: bool, dtype: torch.dtype):
    config = GPTConfig(
        block_size=64, vocab_size=8, n_layer=1, n_head=n_head, n_embd=n_embd, bias=bias
    )
    with torch.random.fork_rng(devices=[]):  # nn.Linear's init draws from the global RNG
        attn = CausalSelfAttention(config).to(dtype).eval()
    with torch.no_grad():  # our own seeded weights, independent of torch's init and global RNG
        for p in attn.parameters():
            scale = 1 / math.sqrt(p.size(-1)) if p.ndim == 2 else 0.2
            p.copy_(_randn(g, *p.shape, dtype=dtype) * scale)
    return attn


def _self_attention_mistakes(
    x: torch.Tensor, attn: CausalSelfAttention
) -> tuple[Mistakes, Mistakes]:
    c, nh = attn.n_embd, attn.n_head
    mask = ref.causal_mask(x.size(1))

    def run(order=(0, 1, 2), masked=True, proj=True, heads=nh):
        qkv = attn.c_attn(x).split(c, dim=2)
        q, k, v = (ref.split_heads(qkv[i], heads) for i in order)
        y, w = ref.scaled_dot_product_attention(
            q, k, v, mask if masked else None, return_weights=True
        )
        y = ref.merge_heads(y)
        return (attn.c_proj(y) if proj else y), w

    order_hint = "c_attn(x) holds q, k and v side by side, in that order: q, k, v = attn.c_attn(x).split(attn.n_embd, dim=-1)."
    weights = [
        (lambda: run(masked=False)[1], "the mask was not applied: pass causal_mask(T) to your attention."),
        (lambda: run(order=(1, 0, 2))[1], order_hint),
        (lambda: run(order=(0, 2, 1))[1], order_hint),
        (lambda: run(heads=1)[1], "split q, k and v into attn.n_head heads (your split_heads) before attention: the weights are (B, n_head, T, T)."),
    ]  # fmt: skip
    out = [
        (lambda: run(proj=False)[0], "pass the merged heads through attn.c_proj: y = attn.c_proj(merge_heads(out))."),
        (lambda: run(order=(0, 2, 1))[0], order_hint),
        (lambda: run(order=(2, 1, 0))[0], order_hint),
    ]  # fmt: skip
    return weights, out


def causal_self_attention(
    fn: Callable[[torch.Tensor, CausalSelfAttention], tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    cases: int = 4,
    edge_cases: bool = False,
) -> None:
    """Check ``causal_self_attention(x, attn) -> (y, weights)`` against ``attn(x, return_weights=True)``.

    The learner's function must use ``attn``'s layers, not call ``attn`` itself
    (that call is refused during the check). Its output must also match the
    fused path, ``attn(x)``.
    """
    g, rng = _gen(seed), random.Random(seed)
    configs: list[tuple[int, int, int, int, bool, torch.dtype]] = [
        (1, 4, 8, 2, True, torch.float32)
    ]
    for _ in range(cases):
        n_head = rng.choice([2, 3, 4])
        configs.append((rng.randint(1, 3), rng.randint(2, 12), n_head * rng.choice([2, 4, 8]), n_head, True, torch.float32))  # fmt: skip
    if edge_cases:
        configs += [
            (2, 7, 16, 1, True, torch.float32),  # one head
            (2, 5, 6, 6, True, torch.float32),  # head_size 1
            (3, 1, 8, 2, True, torch.float32),  # one position
            (2, 9, 12, 3, False, torch.float32),  # no biases
            (2, 6, 8, 2, True, torch.float64),
            (1, 64, 48, 6, True, torch.float32),  # a full block
        ]
    for b, t, c, n_head, bias, dtype in configs:
        attn = _module(g, c, n_head, bias, dtype)
        x = _randn(g, b, t, c, dtype=dtype)
        where = f"causal_self_attention(<{str(dtype)[6:]} x of shape {(b, t, c)}>, attn with n_embd={c}, n_head={n_head}, bias={bias})"
        with torch.no_grad():
            y, weights = attn(x, return_weights=True)
            fused = attn(x)
        before = {k: p.clone() for k, p in attn.state_dict().items()}
        refused = "causal_self_attention must build attention from your own pieces and attn's layers (attn.c_attn, attn.c_proj), not call attn(x)."
        with _refusing([(CausalSelfAttention, "forward")], refused):
            result = _call(
                fn, x, attn, name="causal_self_attention", where=where,
                error_hints={_Refused: "use attn.c_attn(x), your split_heads, attention, causal_mask and merge_heads, then attn.c_proj."},
            )  # fmt: skip
        if any(not torch.equal(p, before[k]) for k, p in attn.state_dict().items()):
            fail(f"{where} changed attn's weights; only read them.")
        shapes = ((b, t, c), (b, n_head, t, t))
        _unpack_pair(result, where, ("y", "weights"), shapes)
        w_mistakes, y_mistakes = _self_attention_mistakes(x, attn)
        got_w = check_tensor(
            result[1], f"the weights returned by {where}", shapes[1], dtype, mistakes=w_mistakes,
            shape_hint="the weights are (B, n_head, T, T): one (T, T) matrix per head.",
            dtype_hint=_dtype_hint(dtype),
        )  # fmt: skip
        _leak(where, got_w, ref.causal_mask(t), True, w_mistakes)
        _compare(where, "the weights", got_w, weights, w_mistakes)
        got_y = check_tensor(
            result[0], f"the output returned by {where}", shapes[0], dtype, mistakes=y_mistakes,
            shape_hint="y has x's shape (B, T, C): merge the heads, then attn.c_proj.",
            dtype_hint=_dtype_hint(dtype),
        )  # fmt: skip
        _compare(where, "the output y", got_y, y, y_mistakes)
        _compare(where + " (against the fused path, attn(x))", "the output y", got_y, fused)
    passed("causal_self_attention", len(configs))
