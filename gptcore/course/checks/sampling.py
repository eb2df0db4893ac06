"""Checks for lesson 7 (decoding): temperature, top-k, top-p, one sampling step, the KV cache.

Each check compares the learner's function with gptcore's reference
(``gptcore.sample`` and ``gptcore.model.attention.KVCache``) on hand-checkable
inputs, then on ``cases`` random ones drawn from seeded generators.
``edge_cases=True`` adds the edges of each contract; the hidden tests use it:

- temperature softmax: logits of ±1000 and tiny temperatures (a softmax that
  does not subtract the max overflows), -inf logits, float64, 3-D batches;
- top-k: ties with the k-th largest (all kept), k larger than the vocabulary,
  logits already filtered to -inf, batches (..., V);
- top-p: batches (..., V), -inf logits, float64, very small and very large p;
- one sampling step: temperature, top-k and top-p together (the order matters);
- KV cache: filling the cache to the last position, and overflowing it.

Results must be tensors of the documented type, dtype and shape (or a plain
``int`` token id) before their values are compared, as plain tensors, so an
object whose ``__eq__`` always answers True cannot pass. Filters must return
the kept logits unchanged and -inf elsewhere, exactly.

``sample_step`` checks the distribution first, statistically: many draws from
seeded generators, each token's frequency within a tolerance (4.5 standard
errors) of its probability under the reference, and a token the reference can
never draw must never be drawn. A wrong filter (top-k off by one, top-p that
drops the token crossing p, filters in the wrong order) or a wrong temperature
moves some frequency far outside that tolerance. Then, with equal seeds, the
draws must be the reference's token for token: that needs
``torch.multinomial(probs, 1, generator=generator)``, once per call.

On a wrong answer the message names the input, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer, says
which mistake it is.

Every check that builds a model runs inside ``torch.random.fork_rng``, so it
leaves the notebook's random state as it found it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import torch

from gptcore.model.attention import KVCache
from gptcore.model.gpt import GPT, GPTCache, GPTConfig
from gptcore.sample import generate, sample_token, softmax_with_temperature
from gptcore.sample import top_k_filter as _ref_top_k
from gptcore.sample import top_p_filter as _ref_top_p

from . import fail, int_problem, passed, show, type_name

__all__ = [
    "cached_generation",
    "kv_cache_update",
    "sample_step",
    "temperature_softmax",
    "top_k_filter",
    "top_p_filter",
]

NEG = float("-inf")
Mistakes = Iterable[tuple[Callable[[], Any], str]]


# ------------------------------------------------------------ tensor helpers
def _fmt_number(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.4g}"


def _show_tensor(t: torch.Tensor, limit: int = 12) -> str:
    """Small tensors by value (4 significant digits), large ones by shape and dtype."""
    dtype = str(t.dtype).removeprefix("torch.")
    if t.numel() <= limit:
        values = t.detach().double().tolist() if t.is_floating_point() else t.tolist()

        def fmt(v: Any) -> str:
            if isinstance(v, list):
                return "[" + ", ".join(fmt(x) for x in v) + "]"
            return _fmt_number(v) if isinstance(v, float) else str(v)

        return f"tensor({fmt(values)}, dtype={dtype})"
    return f"tensor of shape {tuple(t.shape)}, dtype {dtype}"


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return _show_tensor(value)
    if isinstance(value, KVCache):
        return f"<KVCache holding {value.length} of max_len={value.max_len}>"
    return show(value, 60)


class _Name(str):
    """A string shown without quotes in a described call ("generator")."""

    def __repr__(self) -> str:
        return str(self)


GENERATOR = _Name("generator")


def _describe(name: str, *args: Any) -> str:
    return f"{name}({', '.join(_show(a) for a in args)})"


def _run(
    fn: Callable[..., Any],
    *args: Any,
    where: str,
    hint: Callable[[BaseException], str] | None = None,
) -> Any:
    """``fn(*args)``; tensors in ``args`` must come back unchanged.

    Like ``gptcore.course.checks.call``, an exception becomes an ``AssertionError``
    naming the call (the original stays chained), with ``hint(exception)``
    appended; ``NotImplementedError`` passes through: the exercise is not done.
    """
    before = [a.detach().clone() if isinstance(a, torch.Tensor) else None for a in args]
    try:
        result = fn(*args)
    except NotImplementedError:
        raise
    except Exception as e:
        extra = hint(e) if hint else ""
        message = f"{where} raised {type(e).__name__}: {e}"
        raise AssertionError(message + (f"\nHint: {extra}" if extra else "")) from e
    for i, (arg, copy_) in enumerate(zip(args, before)):
        if copy_ is not None and (arg.shape != copy_.shape or not _same(arg.detach(), copy_)):
            fail(
                f"{where} changed its argument #{i + 1} in place. Leave the input as it is and "
                "return a new tensor (masked_fill, torch.where or clone() first): the caller "
                "still needs the original logits."
            )
    return result


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, NaN included (NaN equals NaN here)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _tensor(
    value: Any,
    what: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    dtype_hint: str = "",
    shape_hint: str = "",
) -> torch.Tensor:
    """A plain, detached copy of ``value`` after checking its type, dtype and shape."""
    if not isinstance(value, torch.Tensor):
        extra = ""
        if type(value).__module__ == "numpy":
            extra = "\nHint: stay in torch; torch has every operation you need here."
        elif isinstance(value, (list, tuple)):
            extra = "\nHint: return a torch.Tensor, not a Python list."
        fail(f"{what} must be a torch.Tensor, but it is a {type_name(value)}: {show(value)}{extra}")
    if value.dtype != dtype:
        fail(
            f"{what} must have dtype {dtype}, the dtype of the input, but it has dtype "
            f"{value.dtype}." + (f"\nHint: {dtype_hint}" if dtype_hint else "")
        )
    if tuple(value.shape) != shape:
        fail(
            f"{what} must have shape {shape}, but it has shape {tuple(value.shape)}."
            + (f"\nHint: {shape_hint}" if shape_hint else "")
        )
    return value.detach().as_subclass(torch.Tensor).clone()


def _close(
    got: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6, rtol: float = 1e-4
) -> bool:
    """Entrywise |got - expected| <= atol + rtol |expected|; -inf matches -inf; NaN never matches."""
    if got.shape != expected.shape:
        return False
    got, expected = got.double(), expected.double()
    both_inf = torch.isinf(got) & torch.isinf(expected) & (got.sign() == expected.sign())
    near = (got - expected).abs() <= atol + rtol * expected.abs()
    return bool((both_inf | near).all())


def _diagnose(same: Callable[[Any], bool], mistakes: Mistakes) -> str:
    """The hints of the known mistakes whose result ``same`` accepts, or ""."""
    hints: list[str] = []
    for compute, hint in mistakes:
        try:
            candidate = compute()
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
        if candidate is not None and same(candidate) and hint not in hints:
            hints.append(hint)
    return "\n  or: ".join(hints)


def _wrong(where: str, expected: str, got: str, *notes: str) -> NoReturn:
    lines = [f"{where} is wrong.", f"  expected: {expected}", f"  got:      {got}"]
    lines += [n for n in notes if n]
    fail("\n".join(lines))


def _hint(text: str) -> str:
    return f"Hint: {text}" if text else ""


def _first_bad(got: torch.Tensor, expected: torch.Tensor, exact: bool) -> str:
    """Where two tensors of one shape first differ, as "at index (0, 3): expected 0.25, got 0.5"."""
    g, e = got.double(), expected.double()
    if exact:
        bad = ~((g == e) | (g.isnan() & e.isnan()))
    else:
        both_inf = torch.isinf(g) & torch.isinf(e) & (g.sign() == e.sign())
        bad = ~(both_inf | ((g - e).abs() <= 1e-6 + 1e-4 * e.abs()))
    idx = tuple(int(i) for i in bad.nonzero()[0])
    shown = idx[0] if len(idx) == 1 else idx
    return (
        f"  first difference at index {shown}: expected {_fmt_number(float(e[idx]))}, "
        f"got {_fmt_number(float(g[idx]))}"
    )


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def _distinct(gen: torch.Generator, *shape: int, scale: float) -> torch.Tensor:
    """Random logits without ties along the last dim (ties make filters ambiguous)."""
    while True:
        x = _randn(gen, *shape, scale=scale)
        s = x.sort(dim=-1).values
        if shape[-1] < 2 or bool((s[..., 1:] - s[..., :-1] > 1e-4).all()):
            return x


# ------------------------------------------------------- temperature softmax
def _softmax_mistakes(logits: torch.Tensor, t: float) -> Mistakes:
    x = logits.double()
    return [
        (
            lambda: torch.softmax(x * t, dim=-1),
            "divide the logits by the temperature; you multiplied. T = 2 must flatten the "
            "distribution, T = 0.5 sharpen it.",
        ),
        (
            lambda: torch.softmax(x, dim=-1) if t != 1 else None,
            "use the temperature: the result is softmax(logits / temperature).",
        ),
        (
            lambda: torch.softmax(x / t, dim=0) if x.ndim > 1 else None,
            "normalise along the last dim (dim=-1): each row of a batch is its own distribution "
            "over the vocabulary.",
        ),
        (
            lambda: torch.softmax((x / t).flatten(), dim=0).view(x.shape) if x.ndim > 1 else None,
            "normalise each row on its own (along dim=-1, with keepdim=True), not the whole batch "
            "at once.",
        ),
        (
            lambda: torch.exp(x / t - (x / t).amax(dim=-1, keepdim=True)),
            "divide by the sum along the last dim, so that each row sums to 1.",
        ),
        (
            lambda: torch.exp(x / t),
            "divide by the sum along the last dim, so that each row sums to 1.",
        ),
        (
            lambda: torch.log_softmax(x / t, dim=-1),
            "return probabilities, not log-probabilities.",
        ),
        (
            lambda: (x / t) / (x / t).sum(dim=-1, keepdim=True),
            "apply exp before normalising: probabilities are exp(z) / sum(exp(z)).",
        ),
    ]


_OVERFLOW_HINT = (
    "exp overflowed (exp(89) is already inf in float32, and inf / inf is nan) or "
    "underflowed (exp(-1000) is 0, and 0 / 0 is nan). Subtract each row's max first, "
    "z - z.amax(dim=-1, keepdim=True): softmax(z - c) == softmax(z) for any constant c, "
    "and then every exponent is <= 0 and the largest term is exactly 1."
)


def temperature_softmax(
    softmax_with_temperature_fn: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(logits, temperature) -> probs`` against softmax(logits / T) along the last dim."""
    hand = torch.tensor([2.0, 1.0, 0.0])
    inputs: list[tuple[torch.Tensor, float]] = [(hand, 1.0), (hand, 0.5), (hand, 2.0)]
    gen = torch.Generator().manual_seed(seed)
    if edge_cases:
        inputs += [
            (torch.tensor([1000.0, 999.0, 998.0]), 1.0),  # exp(1000) overflows
            (torch.tensor([-1000.0, -1001.0, -1002.0]), 1.0),  # exp(-1000) underflows to 0
            (torch.tensor([[30.0, 10.0, -5.0], [0.0, 0.0, 0.0]]), 0.1),  # z = 300
            (torch.tensor([1.0, 2.0, 3.0]), 1e-3),  # nearly one-hot
            (torch.tensor([0.0, NEG, 1.0, NEG]), 0.7),  # filtered tokens get exactly 0
            (torch.tensor([[NEG, 500.0, 499.0], [2.0, NEG, NEG]]), 1.0),
            (torch.tensor([3.0]), 1.0),  # a vocabulary of one
            (_randn(gen, 2, 3, 17, scale=3.0), 1.3),  # a 3-D batch
            (_randn(gen, 5, 11, scale=4.0, dtype=torch.float64), 0.25),  # float64 stays float64
            (_randn(gen, 30, scale=2.0), 100.0),  # nearly uniform
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        v = rng.randint(2, 40)
        shape = (v,) if rng.random() < 0.5 else (rng.randint(1, 5), v)
        inputs.append(
            (
                _randn(gen, *shape, scale=rng.uniform(0.5, 3.0)),
                rng.choice([0.5, 0.7, 1.0, 1.5, 3.0]),
            )
        )
    for logits, t in inputs:
        where = _describe("softmax_with_temperature", logits, t)
        got = _run(softmax_with_temperature_fn, logits, t, where=where)
        got = _tensor(
            got,
            f"the result of {where}",
            tuple(logits.shape),
            logits.dtype,
            dtype_hint="compute in the dtype you are given: do not convert with .float() or .double().",
            shape_hint="return one probability per logit, in the same shape: softmax along dim=-1 "
            "keeps the shape.",
        )
        expected = softmax_with_temperature(logits, t)
        if _close(got, expected):
            continue
        if not bool(torch.isfinite(got).all()):
            _wrong(where, _show_tensor(expected), _show_tensor(got), _hint(_OVERFLOW_HINT))
        same = lambda c, got=got: _close(got, c.to(got.dtype))  # noqa: E731
        _wrong(
            where,
            _show_tensor(expected),
            _show_tensor(got),
            _first_bad(got, expected, exact=False),
            _hint(_diagnose(same, _softmax_mistakes(logits, t))),
        )
    passed("softmax_with_temperature", len(inputs))


# ------------------------------------------------------------------- filters
_INF_HINT = (
    "set the logits you drop to float('-inf'), so that softmax gives them probability "
    "exactly 0. A finite value such as 0 or -1e9 is an ordinary logit (0 may even be larger "
    "than the logits you keep)."
)
_BATCH_TOP_K = (
    "logits can be a batch of shape (..., V): filter each row on its own. Take the k-th "
    "largest along the last dim, keeping that dim: torch.topk(logits, k, dim=-1).values[..., -1:] "
    "has shape (..., 1) and broadcasts against (..., V)."
)
_BATCH_TOP_P = (
    "logits can be a batch of shape (..., V): filter each row on its own. Sort, softmax and "
    "cumsum along dim=-1, and put "
    "the decisions back into vocabulary order with scatter along dim=-1 "
    "(drop_sorted.scatter(-1, order, drop_sorted)), not by indexing with a 1-D tensor of ids."
)


def _filter_result(got: Any, where: str, logits: torch.Tensor) -> torch.Tensor:
    return _tensor(
        got,
        f"the result of {where}",
        tuple(logits.shape),
        logits.dtype,
        dtype_hint="keep the dtype of logits: masked_fill and torch.where do.",
        shape_hint="return one (filtered) logit per input logit, in vocabulary order and in "
        "the input's shape.",
    )


def _filter_mistakes(logits: torch.Tensor, expected: torch.Tensor) -> Mistakes:
    """Mistakes any filter can make: probabilities, sorted order, finite instead of -inf."""
    kept = expected != NEG
    return [
        (
            lambda: torch.softmax(expected, dim=-1),
            "return the filtered logits, not probabilities: the softmax comes later, in the "
            "sampling step.",
        ),
        (
            lambda: torch.sort(expected, dim=-1, descending=True).values,
            "return the logits in vocabulary order (entry i is token i's logit), not sorted.",
        ),
        (lambda: torch.where(kept, logits, torch.zeros_like(logits)), _INF_HINT),
        (lambda: torch.where(kept, logits, torch.full_like(logits, -1e9)), _INF_HINT),
        (lambda: torch.where(kept, logits, torch.full_like(logits, -1e10)), _INF_HINT),
    ]


def _check_filter(
    name: str,
    fn: Callable[..., Any],
    logits: torch.Tensor,
    arg: Any,
    expected: torch.Tensor,
    mistakes: Mistakes,
    error_hint: Callable[[BaseException], str],
    batch_hint: str,
) -> None:
    where = _describe(name, logits, arg)
    got = _filter_result(_run(fn, logits, arg, where=where, hint=error_hint), where, logits)
    if _same(got, expected):
        return
    same = lambda c: _same(got, c.to(got.dtype))  # noqa: E731
    hint = _diagnose(same, [*mistakes, *_filter_mistakes(logits, expected)])
    if (
        not hint
        and bool(((expected == NEG) & (got != NEG)).any())
        and not bool(((expected != NEG) & (got != logits)).any())
    ):
        hint = _INF_HINT if bool(torch.isfinite(got).all()) else ""
    if not hint and bool(((expected != NEG) & (got != NEG) & (got != logits)).any()):
        hint = "copy the logits you keep unchanged: no rescaling, no temperature, no softmax."
    if not hint and logits.ndim > 1:
        rows = logits.reshape(-1, logits.size(-1))
        hint = batch_hint if len(rows) > 1 else ""
    _wrong(
        where,
        _show_tensor(expected),
        _show_tensor(got),
        _first_bad(got, expected, exact=True),
        _hint(hint),
    )


def _top_k_by_index(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly k tokens kept: ties with the k-th are cut at random (a known mistake)."""
    idx = torch.topk(logits, min(k, logits.size(-1)), dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, NEG)


def _top_k_mistakes(logits: torch.Tensor, k: int) -> Mistakes:
    v = logits.size(-1)
    return [
        (
            lambda: _ref_top_k(logits, k + 1) if k < v else None,
            f"you kept one token too many: keep the k = {k} largest logits. "
            "torch.topk(logits, k, dim=-1).values[..., -1:] is the k-th largest; drop what is "
            "below it.",
        ),
        (
            lambda: _ref_top_k(logits, k - 1) if k > 1 else None,
            f"you kept one token too few: keep the k = {k} largest logits, the k-th included "
            "(drop logits < kth, not <= kth).",
        ),
        (
            lambda: logits.masked_fill(
                logits <= torch.topk(logits, min(k, v), dim=-1).values[..., -1:], NEG
            ),
            "keep the k-th largest logit itself: drop only logits strictly below it (<, not <=).",
        ),
        (
            lambda: torch.where(_ref_top_k(-logits, k) == NEG, NEG, logits),
            "keep the k LARGEST logits, not the smallest.",
        ),
        (
            lambda: _top_k_by_index(logits, k),
            "keep every logit tied with the k-th largest (a tie can keep more than k tokens): "
            "compare each logit with the k-th largest value (logits < kth -> -inf) instead of "
            "keeping exactly k indices.",
        ),
    ]


def _top_k_error(e: BaseException) -> str:
    if "out of range" in str(e):
        return (
            "k can be larger than the vocabulary (then every token is kept): use "
            "min(k, logits.size(-1)) in torch.topk."
        )
    if isinstance(e, (IndexError, RuntimeError)):
        return _BATCH_TOP_K
    return ""


def top_k_filter(
    top_k_filter_fn: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(logits, k)`` against ``gptcore.sample.top_k_filter``: the k largest kept (ties
    with the k-th too), the rest -inf, along the last dim."""
    hand = torch.tensor([1.0, 3.0, 2.0, 0.0])
    inputs: list[tuple[torch.Tensor, int]] = [(hand, 2), (hand, 1), (hand, 4)]
    gen = torch.Generator().manual_seed(seed)
    if edge_cases:
        inputs += [
            (torch.tensor([1.0, 2.0, 2.0, 0.0]), 1),  # a tie at the k-th: both kept
            (torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0]), 2),  # three tied for 2nd place
            (torch.tensor([1.0, 3.0, 2.0]), 10),  # k > V: keep everything
            (torch.tensor([NEG, 1.0, 2.0, NEG, 0.0]), 2),  # already filtered once
            (torch.tensor([NEG, 1.0, 2.0, NEG, 0.0]), 4),
            (torch.tensor([5.0]), 1),
            (_distinct(gen, 4, 30, scale=2.0), 5),  # a batch: each row on its own
            (_distinct(gen, 2, 3, 20, scale=2.0), 3),
            (_distinct(gen, 6, 25, scale=2.0).double(), 7),
            (_distinct(gen, 50, scale=2.0), 50),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        v = rng.randint(5, 60)
        inputs.append((_distinct(gen, v, scale=rng.uniform(0.5, 3.0)), rng.randint(1, v)))
    for logits, k in inputs:
        _check_filter(
            "top_k_filter",
            top_k_filter_fn,
            logits,
            k,
            _ref_top_k(logits, k),
            _top_k_mistakes(logits, k),
            _top_k_error,
            _BATCH_TOP_K,
        )
    passed("top_k_filter", len(inputs))


def _mass_before(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mass before each token in descending order, that order), along the last dim, in float64."""
    sorted_logits, order = torch.sort(logits.double(), dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return torch.cumsum(probs, dim=-1) - probs, order


def _clear_of_boundaries(logits: torch.Tensor, p: float, margin: float = 1e-4) -> bool:
    """True if no token's mass-before lies within ``margin`` of p (so rounding cannot flip it)."""
    before, _ = _mass_before(logits)
    finite = torch.isfinite(torch.sort(logits.double(), dim=-1, descending=True).values)
    return not bool((((before - p).abs() < margin) & finite).any())


def _clear_input(make: Callable[[], torch.Tensor], p: float) -> torch.Tensor:
    """``make()``, drawn again until no token's mass-before is within 1e-4 of p."""
    while True:
        logits = make()
        if _clear_of_boundaries(logits, p):
            return logits


def _top_p_rule(logits: torch.Tensor, p: float, keep: Callable[..., torch.Tensor], ascending=False):
    """top-p with a different keep rule on (sorted probs, cumsum, mass before): known mistakes."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=not ascending)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    cum = torch.cumsum(probs, dim=-1)
    drop_sorted = ~keep(probs, cum, cum - probs, sorted_logits)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG)


def _top_p_mistakes(logits: torch.Tensor, p: float) -> Mistakes:
    cross = (
        "keep the token that carries the total past p: in descending order a token is kept while "
        "the probability mass BEFORE it (cumsum minus its own probability) is below p. Then the "
        "kept tokens sum to at least p, and the most likely token is always kept."
    )
    return [
        (lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: cum < p), cross),
        (lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: cum <= p), cross),
        (
            lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: (cum <= p) | (before == 0)),
            cross,
        ),
        (
            lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: before < p, ascending=True),
            "sort in descending order (torch.sort(..., descending=True)): the nucleus is made "
            "of the MOST likely tokens.",
        ),
        (
            lambda: _top_p_rule(
                logits, p, lambda pr, cum, before, s: (torch.cumsum(s, -1) - s) < p
            ),
            "accumulate probabilities (the softmax of the sorted logits), not the logits "
            "themselves.",
        ),
        (
            lambda: logits.masked_fill(torch.softmax(logits.double(), -1) < p, NEG),
            "top-p is not a threshold on each token's own probability: keep the most likely "
            "tokens until their total reaches p.",
        ),
        (
            lambda: torch.full_like(logits, NEG),
            "the most likely token is always kept, however small p is: its mass before is 0 < p.",
        ),
    ]


def _top_p_error(e: BaseException) -> str:
    if isinstance(e, (IndexError, RuntimeError)):
        return _BATCH_TOP_P
    return ""


def top_p_filter(
    top_p_filter_fn: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(logits, p)`` against ``gptcore.sample.top_p_filter`` (nucleus sampling's cut).

    No input puts a token's mass-before within 1e-4 of p, where float rounding
    could decide either way.
    """
    hand = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()  # sorted: 0.5, 0.3, 0.15, 0.05
    inputs: list[tuple[torch.Tensor, float]] = [
        (hand, 0.45),  # 0.5 alone reaches 0.45
        (hand, 0.6),  # 0.5 + 0.3: the token crossing 0.6 is kept
        (hand, 0.9),
        (hand, 1.0),  # everything
        (hand, 0.01),  # the most likely token is always kept
    ]
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0])[:, None]
    random_edges: list[tuple[Callable[[], torch.Tensor], float]] = [
        (lambda: _distinct(gen, 4, 30, scale=1.0) * scales, 0.8),  # a batch: each row on its own
        (lambda: _distinct(gen, 2, 3, 25, scale=2.0), 0.5),
        (lambda: _ref_top_k(_distinct(gen, 30, scale=2.0), 12), 0.7),  # already cut by top-k
        (lambda: _distinct(gen, 6, 20, scale=2.0).double(), 0.6),  # float64
        (lambda: _distinct(gen, 40, scale=2.0), 1e-4),  # only the most likely token
        (lambda: _distinct(gen, 40, scale=1.0), 0.999),
    ]
    if edge_cases:
        inputs += [
            (torch.tensor([5.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), 0.9),  # peaked
            (torch.linspace(0.0, 0.5, 10), 0.55),  # nearly flat: about half of the tokens
            (torch.tensor([[NEG, 1.0, 0.5, NEG], [0.2, NEG, NEG, 2.0]]), 0.7),
        ]
        for make, p in random_edges:
            inputs.append((_clear_input(make, p), p))
    rng = random.Random(seed)
    for _ in range(cases):
        v = rng.randint(5, 60)
        scale, p = rng.uniform(0.5, 3.0), rng.uniform(0.1, 0.95)
        inputs.append((_clear_input(lambda v=v, scale=scale: _distinct(gen, v, scale=scale), p), p))
    for logits, p in inputs:
        _check_filter(
            "top_p_filter",
            top_p_filter_fn,
            logits,
            p,
            _ref_top_p(logits, p),
            _top_p_mistakes(logits, p),
            _top_p_error,
            _BATCH_TOP_P,
        )
    passed("top_p_filter", len(inputs))


# ------------------------------------------------------------ one sampling step
Setting = tuple[float, int | None, float | None]  # temperature, top_k, top_p

# A distribution whose filtered versions are far apart: top-k off by one, or a
# top-p that drops the crossing token, moves a frequency by 0.1 or more.
STAT_PROBS = (0.35, 0.25, 0.2, 0.1, 0.06, 0.04)
STAT_SETTINGS: tuple[Setting, ...] = (
    (1.0, None, None),
    (1.0, 3, None),  # keeps 0.35, 0.25, 0.2
    (1.0, None, 0.7),  # mass before: 0, 0.35, 0.6, 0.8 -> keeps three
    (0.5, None, None),  # probabilities squared, renormalised
    (2.0, None, None),  # square roots, renormalised
    (0.5, None, 0.65),  # temperature first: at T = 0.5 top-p keeps two, at T = 1 three
)
STAT_SETTINGS_HIDDEN: tuple[Setting, ...] = (
    (1.0, 3, 0.65),  # top-k first keeps two; top-p first would keep three
    (0.8, 2, 0.5),  # top-k first keeps one; top-p first would keep two
    (0.7, 4, 0.8),
    (1.5, 2, 0.9),
    (1.0, 6, 1.0),  # nothing removed
)


def _expected_probs(logits: torch.Tensor, setting: Setting, order: str = "right") -> torch.Tensor:
    """The distribution sample_token draws from, or one of the known mistakes' (``order``)."""
    t, k, p = setting
    x = logits.double()
    if order == "times_t":
        x = x * t
    elif order != "no_t" and order != "t_last":
        x = x / t
    if order == "p_first":
        x = _ref_top_p(x, p) if p is not None and p < 1 else x
        x = _ref_top_k(x, k) if k is not None else x
    else:
        x = _ref_top_k(x, k) if k is not None and order != "no_k" else x
        x = _ref_top_p(x, p) if p is not None and p < 1 and order != "no_p" else x
    if order == "t_last":
        x = x / t
    return torch.softmax(x, dim=-1)


_STEP_MISTAKES = {
    "times_t": "divide the logits by the temperature; you multiplied.",
    "no_t": "use the temperature: divide the logits by it first.",
    "t_last": "divide by the temperature BEFORE the filters: top-p must see the distribution "
    "at this temperature.",
    "p_first": "apply top-k first, then top-p: top-p measures its p on what top-k kept.",
    "no_k": "apply top_k_filter when top_k is not None.",
    "no_p": "apply top_p_filter when top_p is not None.",
}


def _describe_setting(setting: Setting) -> str:
    t, k, p = setting
    return f"temperature={t}, top_k={k}, top_p={p}"


def _token(value: Any, where: str, vocab: int) -> int:
    problem = int_problem(value)
    if problem:
        extra = ""
        if isinstance(value, torch.Tensor):
            extra = "\nHint: turn the tensor into a plain int with int(...) or .item()."
        fail(f"{where} must return a token id, an int, but it returned {problem}{extra}")
    if not 0 <= value < vocab:
        fail(f"{where} returned {value}, which is not a token id: ids are 0..{vocab - 1}.")
    return value


def _step_error(e: BaseException) -> str:
    text = str(e)
    if "probability tensor" in text:
        return (
            "torch.multinomial needs probabilities (>= 0, finite), not logits: turn the "
            "filtered logits into probabilities with your softmax_with_temperature(x, 1.0) "
            "first. At temperature 0, return the argmax without dividing by 0."
        )
    if isinstance(e, ZeroDivisionError):
        return "temperature 0 means greedy: return the argmax before dividing by the temperature."
    return ""


def sample_step(
    sample_next_token_fn: Callable[..., int],
    *,
    seed: int = 0,
    cases: int = 40,
    draws: int = 2000,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(logits, temperature, top_k, top_p, generator) -> int`` against
    ``gptcore.sample.sample_token``: greedy at temperature 0, then sampled frequencies, then
    seeded draws token for token."""
    name = "sample_next_token"
    n_checked = 0

    # Greedy: temperature 0 is argmax, whatever the filters say.
    gen = torch.Generator().manual_seed(seed)
    greedy: list[tuple[torch.Tensor, Setting]] = [
        (torch.tensor([0.1, 5.0, 0.2, -1.0]), (0.0, None, None)),
        (torch.tensor([0.1, 5.0, 0.2, -1.0]), (0.0, 2, 0.5)),
    ]
    greedy += [(_distinct(gen, 20, scale=2.0), (0.0, None, None)) for _ in range(3)]
    for logits, setting in greedy:
        where = _describe(name, logits, *setting, GENERATOR)
        g = torch.Generator().manual_seed(seed)
        got = _token(
            _run(sample_next_token_fn, logits, *setting, g, where=where, hint=_step_error),
            where,
            logits.numel(),
        )
        expected = int(torch.argmax(logits))
        if got != expected:
            fail(
                f"{where} returned {got}, but temperature 0 means greedy decoding: the most "
                f"likely token, {expected} (torch.argmax(logits)), every time."
            )
        n_checked += 1

    # Frequencies over many seeded draws.
    logits = torch.tensor(STAT_PROBS).log()
    settings = STAT_SETTINGS + (STAT_SETTINGS_HIDDEN if edge_cases else ())
    for i, setting in enumerate(settings):
        where = _describe(name, logits, *setting, GENERATOR)
        g = torch.Generator().manual_seed(seed * 1000 + i)
        counts = [0] * len(STAT_PROBS)
        for _ in range(draws):
            token = _token(
                _run(sample_next_token_fn, logits, *setting, g, where=where, hint=_step_error),
                where,
                len(STAT_PROBS),
            )
            counts[token] += 1
        _check_frequencies(where, logits, setting, counts, draws)
        n_checked += 1

    # Token for token against sample_token, with equal seeds.
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for case in range(cases + (20 if edge_cases else 0)):
        v = rng.randint(5, 50)
        logits = _distinct(gen, v, scale=rng.uniform(0.5, 2.0))
        t = rng.choice([0.5, 0.8, 1.0, 1.3, 2.0])
        k = rng.choice([None, rng.randint(1, v)])
        p = rng.choice([None, rng.uniform(0.2, 0.95)])
        if not edge_cases and k is not None and p is not None:  # one filter at a time
            k, p = (None, p) if case % 2 else (k, None)
        if edge_cases and case % 5 == 0:
            k, p = rng.choice([(v, None), (None, 1.0), (v, 1.0), (1, 0.5)])
        scaled = logits.double() / t
        if p is not None and p < 1:
            if not _clear_of_boundaries(_ref_top_k(scaled, k) if k else scaled, p, 1e-3):
                p = None
        setting = (t, k, p)
        s = seed * 7919 + case
        g_ref, g_got = torch.Generator().manual_seed(s), torch.Generator().manual_seed(s)
        where = _describe(name, logits, *setting, _Name(f"torch.Generator().manual_seed({s})"))
        expected = [sample_token(logits, t, k, p, g_ref) for _ in range(5)]
        got = [
            _token(
                _run(sample_next_token_fn, logits, *setting, g_got, where=where, hint=_step_error),
                where,
                v,
            )
            for _ in range(5)
        ]
        if got != expected:
            _wrong(
                f"5 draws of {where}, one generator",
                show(expected),
                show(got),
                "Hint: with the same seeded generator, the same distribution must give the same "
                "tokens. Apply temperature, then top_k_filter, then top_p_filter, turn the "
                "result into probabilities (softmax_with_temperature(x, 1.0)), and draw with "
                "torch.multinomial(probs, num_samples=1, generator=generator), exactly once per "
                "call. Do not use the global random state, and do not draw more than once.",
            )
        n_checked += 1
    passed(f"sample_next_token ({draws:,} draws for each distribution)", n_checked)


def _check_frequencies(
    where: str, logits: torch.Tensor, setting: Setting, counts: list[int], n: int
) -> None:
    probs = _expected_probs(logits, setting).tolist()
    freqs = [c / n for c in counts]
    tol = [4.5 * math.sqrt(p * (1 - p) / n) + 0.005 for p in probs]
    impossible = [i for i, (c, p) in enumerate(zip(counts, probs)) if c and p == 0]
    off = [i for i, (f, p, e) in enumerate(zip(freqs, probs, tol)) if abs(f - p) > e]
    if not impossible and not off:
        return
    table = "\n".join(
        f"    token {i}: probability {p:.3f}, drawn {f:.3f} of the time"
        + (
            "   <- can never be drawn"
            if i in impossible
            else "   <- too far off"
            if i in off
            else ""
        )
        for i, (p, f) in enumerate(zip(probs, freqs))
    )

    def same(order: str) -> bool:
        alt = _expected_probs(logits, setting, order).tolist()
        return all(
            (c == 0 or q > 0) and abs(f - q) <= 4.5 * math.sqrt(q * (1 - q) / n) + 0.005
            for c, f, q in zip(counts, freqs, alt)
        )

    hints = [h for order, h in _STEP_MISTAKES.items() if same(order)]
    what = (
        f"{len(impossible)} token(s) that {_describe_setting(setting)} rules out were drawn"
        if impossible
        else "the frequencies do not match the probabilities"
    )
    fail(
        f"{n} draws of {where}: {what}.\n"
        f"  the filtered distribution (probs {list(STAT_PROBS)}, {_describe_setting(setting)}):\n"
        f"{table}\n"
        + _hint(
            "\n  or: ".join(hints)
            or "sample from softmax(top_p(top_k(logits / temperature))): temperature first, then "
            "top-k, then top-p, then softmax, then torch.multinomial(probs, 1, generator=generator)."
        )
    )


# ------------------------------------------------------------------ KV cache
class _CheckedCache(KVCache):
    """gptcore's KVCache, except that its own update may not be used by the learner."""

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError(
            "cache_update called cache.update(...), gptcore's own implementation. Write the new "
            "keys and values into cache.k and cache.v yourself."
        )


def _cache_error(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "cache_update must not call cache.update: the update is what you are writing."
    if "expanded size" in str(e) or "must match the size" in str(e):
        return (
            "write the new positions into the slice they fill: "
            "cache.k[:, :, cache.length : cache.length + T_new] = k_new (T_new = k_new.size(2))."
        )
    return ""


def _check_cache_result(
    got: Any,
    where: str,
    cache: KVCache,
    k_all: torch.Tensor,
    v_all: torch.Tensor,
    k_new: torch.Tensor,
    before: int,
    shape: tuple[int, ...],
) -> None:
    b, h, max_len, hs = shape
    length = k_all.size(2)
    if type(got) is not tuple or len(got) != 2:
        fail(
            f"{where} must return a tuple of two tensors (k_all, v_all), but it returned "
            f"{type_name(got)}: {show(got, 80)}"
        )
    if (
        type(cache.k) is not torch.Tensor
        or tuple(cache.k.shape) != shape
        or tuple(cache.v.shape) != shape
    ):
        fail(
            f"after {where}, cache.k and cache.v must still be the preallocated buffers of shape "
            f"{shape}, but cache.k is {_show(cache.k)}.\nHint: write into the buffers, "
            "cache.k[:, :, start:end] = k_new, instead of replacing them. torch.cat would copy "
            "the whole cache at every step, which is exactly the cost a cache is there to avoid."
        )
    if type(cache.length) is not int or cache.length != length:
        fail(
            f"after {where}, cache.length must be {length} ({before} cached before + "
            f"{length - before} new), but it is {show(cache.length)}.\nHint: advance "
            "cache.length by T_new = k_new.size(2), after writing, so that the next update "
            "appends after these positions."
        )
    for name, value, expected, other in (
        ("k_all", got[0], k_all, v_all),
        ("v_all", got[1], v_all, k_all),
    ):
        shape_hint = ""
        if isinstance(value, torch.Tensor) and value.ndim == 4:
            n = value.size(2)
            if n == max_len != length:
                shape_hint = (
                    "return only the positions filled so far, cache.k[:, :, :cache.length]."
                )
            elif n == length - before:
                shape_hint = "return every position cached so far, the new ones and the old ones."
            elif n == before:
                shape_hint = "return the cache after appending, the new positions included."
        value = _tensor(
            value,
            f"{name}, item {0 if name == 'k_all' else 1} of the result of {where}",
            (b, h, length, hs),
            cache.k.dtype,
            shape_hint=shape_hint,
        )
        if _same(value, expected):
            continue
        hint = ""
        if _same(value, other):
            hint = "return (keys, values) in that order."
        elif before and _same(value[:, :, : k_new.size(2)], expected[:, :, before:]):
            hint = (
                f"append: write the new positions at {before}..{length - 1} (cache.length onwards), "
                "not from position 0. Overwriting loses the past the cache exists to keep."
            )
        fail(
            f"{name} returned by {where} is wrong: it must hold, in order, every key (or value) "
            f"appended so far.\n{_first_bad(value, expected, exact=True)}"
            + (f"\nHint: {hint}" if hint else "")
        )
    for name, buf, expected in (("cache.k", cache.k, k_all), ("cache.v", cache.v, v_all)):
        if not _same(buf[:, :, :length].detach(), expected):
            fail(
                f"after {where}, {name}[:, :, :{length}] must hold every position appended so "
                f"far, but it does not.\nHint: store the new positions in the cache's own "
                "buffers (returning them is not enough: the next step reads the buffers)."
            )


def _overflow(
    cache_update_fn: Callable[..., Any], cache: KVCache, k_new: torch.Tensor, v_new: torch.Tensor
) -> None:
    where = _describe("cache_update", cache, k_new, v_new)
    before = cache.length
    try:
        cache_update_fn(cache, k_new, v_new)
    except NotImplementedError:
        raise
    except ValueError:
        if cache.length != before:
            fail(
                f"{where} raised ValueError, as it should, but changed cache.length from {before} "
                f"to {cache.length}. Check that the new positions fit before changing anything."
            )
        return
    except Exception as e:
        raise AssertionError(
            f"{where}: {k_new.size(2)} new position(s) do not fit after {before} of "
            f"max_len={cache.max_len}, so this must raise ValueError, but it raised "
            f"{type(e).__name__}: {e}\nHint: check first, "
            "if cache.length + k_new.size(2) > cache.max_len: raise ValueError(...)."
        ) from e
    fail(
        f"{where}: {k_new.size(2)} new position(s) do not fit after {before} of "
        f"max_len={cache.max_len}, yet it returned without an error. A slice past the end of "
        "the buffer is silently cut short in torch, so the new keys are lost.\nHint: check "
        "first, if cache.length + k_new.size(2) > cache.max_len: raise ValueError(...). "
        "(Past block_size the context slides, positions change, and the cache is invalid.)"
    )


def kv_cache_update(
    cache_update_fn: Callable[
        [KVCache, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
    ],
    *,
    seed: int = 0,
    cases: int = 6,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(cache, k_new, v_new) -> (k_all, v_all)``: append (B, nh, T_new, hs) keys and
    values to a ``KVCache`` in place, advance ``cache.length``, return every cached position."""
    # (batch, heads, max_len, head size, the T_new of each update, dtype)
    scripts: list[tuple[int, int, int, int, list[int], torch.dtype]] = [
        (2, 2, 8, 4, [3, 1, 1, 2], torch.float32),  # a prompt, then one token at a time
        (1, 3, 6, 2, [1, 1, 1], torch.float32),
    ]
    if edge_cases:
        scripts += [
            (1, 2, 6, 3, [4, 2], torch.float32),  # filled to the last position
            (3, 1, 5, 2, [1, 1, 1, 1, 1], torch.float64),
            (2, 4, 16, 8, [16], torch.float32),  # everything in one go
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        max_len = rng.randint(4, 20)
        chunks, total = [], 0
        while total < max_len - 1 and len(chunks) < 6:
            chunks.append(rng.randint(1, min(4, max_len - 1 - total)))
            total += chunks[-1]
        scripts.append(
            (
                rng.randint(1, 3),
                rng.randint(1, 4),
                max_len,
                rng.randint(1, 6),
                chunks,
                torch.float32,
            )
        )
    gen = torch.Generator().manual_seed(seed)
    n_updates = 0
    for b, h, max_len, hs, chunks, dtype in scripts:
        shape = (b, h, max_len, hs)
        cache = _CheckedCache(b, h, max_len, hs, dtype=dtype)
        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []
        for t_new in chunks:
            k_new = _randn(gen, b, h, t_new, hs, dtype=dtype)
            v_new = _randn(gen, b, h, t_new, hs, dtype=dtype)
            where = _describe("cache_update", cache, k_new, v_new)
            before = cache.length
            got = _run(cache_update_fn, cache, k_new, v_new, where=where, hint=_cache_error)
            ks.append(k_new)
            vs.append(v_new)
            _check_cache_result(
                got, where, cache, torch.cat(ks, 2), torch.cat(vs, 2), k_new, before, shape
            )
            n_updates += 1
        if edge_cases and cache.length == max_len:  # full: one more position does not fit
            _overflow(
                cache_update_fn,
                cache,
                _randn(gen, b, h, 1, hs, dtype=dtype),
                _randn(gen, b, h, 1, hs, dtype=dtype),
            )
            n_updates += 1
    if edge_cases:  # room for 2 more, 3 arrive
        cache = _CheckedCache(1, 2, 6, 3)
        _run(
            cache_update_fn,
            cache,
            torch.ones(1, 2, 4, 3),
            torch.ones(1, 2, 4, 3),
            where="cache_update",
        )
        _overflow(cache_update_fn, cache, torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3))
        # After reset() the cache starts again from position 0.
        cache.reset()
        k_new, v_new = _randn(gen, 1, 2, 2, 3), _randn(gen, 1, 2, 2, 3)
        where = _describe("cache_update", cache, k_new, v_new) + " after cache.reset()"
        got = _run(cache_update_fn, cache, k_new, v_new, where=where, hint=_cache_error)
        _check_cache_result(got, where, cache, k_new, v_new, k_new, 0, (1, 2, 6, 3))
        n_updates += 3
    passed("cache_update", n_updates)


# --------------------------------------------------------- cached generation
class _LearnerCache(KVCache):
    """gptcore's KVCache with the learner's update."""

    def __init__(self, update: Callable[..., Any], *args: Any) -> None:
        super().__init__(*args)
        self._update = update

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._update(self, k_new, v_new)


def _model_error(e: BaseException) -> str:
    return (
        "the model failed while using your cache_update; run checks.kv_cache_update(cache_update) "
        "first, which tests it on its own."
    )


def cached_generation(
    sample_next_token_fn: Callable[..., int],
    cache_update_fn: Callable[..., Any],
    *,
    seed: int = 0,
    edge_cases: bool = False,
) -> None:
    """Generate with a GPT whose KV caches use ``cache_update_fn`` and whose tokens come from
    ``sample_next_token_fn``: the prompt in one forward pass, then one new token per pass. The
    logits must match a full forward pass at every step, and the tokens must be
    ``gptcore.sample.generate(..., use_cache=False)``'s with the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(GPTConfig.preset("test", vocab_size=48, block_size=24)).eval()
    cfg = model.config
    runs: list[tuple[list[int], Setting, int]] = [
        ([5], (0.0, None, None), 11),
        ([3, 1, 4, 1, 5], (1.0, None, None), 12),
        ([2, 7], (0.8, 10, None), 13),
        ([9, 9, 9], (1.2, None, 0.9), 14),
    ]
    if edge_cases:
        rng = random.Random(seed)
        runs += [
            ([rng.randrange(48) for _ in range(20)], (1.0, None, None), 15),
            ([rng.randrange(48) for _ in range(23)], (0.0, None, None), 16),
            ([1], (0.7, 5, None), 17),
            ([0, 47], (1.5, None, 0.95), 18),
        ]
    for prompt, setting, s in runs:
        # The last step feeds block_size tokens in all: the cache fills to its last position.
        n = cfg.block_size - len(prompt) + 1
        t, k, p = setting
        expected = generate(
            model, prompt, n, temperature=t, top_k=k, top_p=p, seed=s, use_cache=False
        )
        cache = GPTCache(
            [
                _LearnerCache(cache_update_fn, 1, cfg.n_head, cfg.block_size, cfg.head_size)
                for _ in range(cfg.n_layer)
            ]
        )
        g = torch.Generator().manual_seed(s)
        ids, feed, got = list(prompt), list(prompt), []
        what = f"generating {n} tokens after the prompt {prompt} with {_describe_setting(setting)}, seed {s}"
        with torch.inference_mode():
            for step in range(n):
                where = f"{what}, step {step}"
                logits = _run(
                    lambda x, cache=cache: model(x, cache=cache)[0],
                    torch.tensor([feed]),
                    where=where,
                    hint=_model_error,
                )
                full = model(torch.tensor([ids]))[0]
                if not _close(logits[0, -1], full[0, -1], atol=1e-4, rtol=1e-3):
                    fail(
                        f"{where}: with your cache, the model's logits for the next token differ "
                        f"from a full forward pass over all {len(ids)} tokens.\n"
                        f"{_first_bad(logits[0, -1], full[0, -1], exact=False)}\n"
                        "Hint: run checks.kv_cache_update(cache_update) first: each layer's cache "
                        "must return every key and value cached so far, in order."
                    )
                token = _token(
                    _run(
                        sample_next_token_fn,
                        logits[0, -1],
                        t,
                        k,
                        p,
                        g,
                        where=where,
                        hint=_step_error,
                    ),
                    f"sample_next_token, {where}",
                    cfg.vocab_size,
                )
                ids.append(token)
                got.append(token)
                feed = [token]
        if got != expected:
            _wrong(
                what,
                f"{expected} (gptcore.sample.generate, no cache)",
                show(got, 300),
                f"  first difference at new token {next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)}",
                "Hint: the logits matched at every step, so the sampling differs: run "
                "checks.sample_step(sample_next_token) first.",
            )
    passed("generation with your cache and your sampler", len(runs))
