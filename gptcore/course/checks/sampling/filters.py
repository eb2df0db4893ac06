"""Lesson 7, exercises 2 and 3: ``top_k_filter`` and ``top_p_filter``, cutting the tail."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from gptcore.sample import top_k_filter as _ref_top_k
from gptcore.sample import top_p_filter as _ref_top_p

from ..report import Mistakes, call, check, diagnose, passed, wrong
from ..tensors import generator
from .common import (
    MUTATION_HINT,
    NEG,
    describe,
    distinct,
    first_bad,
    result_tensor,
    same,
    show_logits,
)
from .softmax import softmax_with_temperature as _check_softmax

_INF_HINT = (
    "set the logits you drop to float('-inf'), so that softmax gives them probability "
    "exactly 0. A finite value such as 0 or -1e9 is an ordinary logit (0 may even be larger "
    "than the logits you keep)."
)


def _filter_mistakes(logits: torch.Tensor, expected: torch.Tensor) -> Mistakes:
    """Mistakes any filter can make: probabilities, sorted order, finite instead of -inf."""
    kept = expected != NEG
    return [
        (
            "return the filtered logits, not probabilities: the softmax comes later, in the "
            "sampling step.",
            lambda: torch.softmax(expected, dim=-1),
        ),
        (
            "return the logits in vocabulary order (entry i is token i's logit), not sorted.",
            lambda: torch.sort(expected, dim=-1, descending=True).values,
        ),
        (_INF_HINT, lambda: torch.where(kept, logits, torch.zeros_like(logits))),
        (_INF_HINT, lambda: torch.where(kept, logits, torch.full_like(logits, -1e9))),
        (_INF_HINT, lambda: torch.where(kept, logits, torch.full_like(logits, -1e10))),
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
    """Check one call ``fn(logits, arg)`` of a filter: exactly ``expected``, or fail with the
    hint of a known mistake (this filter's ``mistakes``, then any filter's)."""
    where = describe(name, logits, arg)
    got = call(
        fn, logits, arg, name=name, where=where, error_hints=error_hint, mutation_hint=MUTATION_HINT
    )
    got = result_tensor(
        got,
        f"the result of {where}",
        logits,
        dtype_hint="keep the dtype of logits: masked_fill and torch.where do.",
        shape_hint="return one (filtered) logit per input logit, in vocabulary order and in "
        "the input's shape.",
    )
    if same(got, expected):
        return
    hint_text = diagnose(
        got,
        [*mistakes, *_filter_mistakes(logits, expected)],
        same=lambda g, c: same(g, c.to(g.dtype)),
    ) or _filter_hint(logits, got, expected, batch_hint)
    wrong(
        where,
        show_logits(expected),
        show_logits(got),
        first_bad(got, expected, exact=True),
        hint_text=hint_text,
    )


def _filter_hint(
    logits: torch.Tensor, got: torch.Tensor, expected: torch.Tensor, batch_hint: str
) -> str:
    """A hint from what the wrong result kept and dropped, when no known mistake explains it."""
    dropped, kept = expected == NEG, expected != NEG
    finite_drops = bool((dropped & (got != NEG)).any()) and bool(torch.isfinite(got).all())
    if finite_drops and not bool((kept & (got != logits)).any()):
        return _INF_HINT
    if bool((kept & (got != NEG) & (got != logits)).any()):
        return "copy the logits you keep unchanged: no rescaling, no temperature, no softmax."
    if logits.ndim > 1 and len(logits.reshape(-1, logits.size(-1))) > 1:
        return batch_hint
    return ""


# --------------------------------------------------------------------- top-k
_BATCH_TOP_K = (
    "logits can be a batch of shape (..., V): filter each row on its own. Take the k-th "
    "largest along the last dim, keeping that dim: torch.topk(logits, k, dim=-1).values[..., -1:] "
    "has shape (..., 1) and broadcasts against (..., V)."
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
            f"you kept one token too many: keep the k = {k} largest logits. "
            "torch.topk(logits, k, dim=-1).values[..., -1:] is the k-th largest; drop what is "
            "below it.",
            lambda: _ref_top_k(logits, k + 1) if k < v else None,
        ),
        (
            f"you kept one token too few: keep the k = {k} largest logits, the k-th included "
            "(drop logits < kth, not <= kth).",
            lambda: _ref_top_k(logits, k - 1) if k > 1 else None,
        ),
        (
            "keep the k-th largest logit itself: drop only logits strictly below it (<, not <=).",
            lambda: logits.masked_fill(
                logits <= torch.topk(logits, min(k, v), dim=-1).values[..., -1:], NEG
            ),
        ),
        (
            "keep the k LARGEST logits, not the smallest.",
            lambda: torch.where(_ref_top_k(-logits, k) == NEG, NEG, logits),
        ),
        (
            "keep every logit tied with the k-th largest (a tie can keep more than k tokens): "
            "compare each logit with the k-th largest value (logits < kth -> -inf) instead of "
            "keeping exactly k indices.",
            lambda: _top_k_by_index(logits, k),
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


@check()
def top_k_filter(
    top_k_filter: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``top_k_filter(logits, k)`` against ``gptcore.sample.top_k_filter``: the k largest
    kept (ties with the k-th too), the rest -inf, along the last dim."""
    hand = torch.tensor([1.0, 3.0, 2.0, 0.0])
    inputs: list[tuple[torch.Tensor, int]] = [(hand, 2), (hand, 1), (hand, 4)]
    gen = generator(seed)
    inputs += [
        (torch.tensor([1.0, 2.0, 2.0, 0.0]), 1),  # a tie at the k-th: both kept
        (torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0]), 2),  # three tied for 2nd place
        (torch.tensor([1.0, 3.0, 2.0]), 10),  # k > V: keep everything
        (torch.tensor([NEG, 1.0, 2.0, NEG, 0.0]), 2),  # already filtered once
        (torch.tensor([NEG, 1.0, 2.0, NEG, 0.0]), 4),
        (torch.tensor([5.0]), 1),
        (distinct(gen, 4, 30, scale=2.0), 5),  # a batch: each row on its own
        (distinct(gen, 2, 3, 20, scale=2.0), 3),
        (distinct(gen, 6, 25, scale=2.0).double(), 7),
        (distinct(gen, 50, scale=2.0), 50),
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        v = rng.randint(5, 60)
        inputs.append((distinct(gen, v, scale=rng.uniform(0.5, 3.0)), rng.randint(1, v)))
    for logits, k in inputs:
        _check_filter(
            "top_k_filter",
            top_k_filter,
            logits,
            k,
            _ref_top_k(logits, k),
            _top_k_mistakes(logits, k),
            _top_k_error,
            _BATCH_TOP_K,
        )
    passed("top_k_filter", len(inputs))


# --------------------------------------------------------------------- top-p
_BATCH_TOP_P = (
    "logits can be a batch of shape (..., V): filter each row on its own. Sort, softmax and "
    "cumsum along dim=-1, and put "
    "the decisions back into vocabulary order with scatter along dim=-1 "
    "(drop_sorted.scatter(-1, order, drop_sorted)), not by indexing with a 1-D tensor of ids."
)


def _mass_before(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mass before each token in descending order, that order), along the last dim, in float64."""
    sorted_logits, order = torch.sort(logits.double(), dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return torch.cumsum(probs, dim=-1) - probs, order


def clear_of_boundaries(logits: torch.Tensor, p: float, margin: float = 1e-4) -> bool:
    """True if no token's mass-before lies within ``margin`` of p (so rounding cannot flip it)."""
    before, _ = _mass_before(logits)
    finite = torch.isfinite(torch.sort(logits.double(), dim=-1, descending=True).values)
    return not bool((((before - p).abs() < margin) & finite).any())


def _clear_input(make: Callable[[], torch.Tensor], p: float) -> torch.Tensor:
    """``make()``, drawn again until no token's mass-before is within 1e-4 of p."""
    while True:
        logits = make()
        if clear_of_boundaries(logits, p):
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
        (cross, lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: cum < p)),
        (cross, lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: cum <= p)),
        (
            cross,
            lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: (cum <= p) | (before == 0)),
        ),
        (
            "a token whose mass before is exactly p is dropped: the tokens ahead of it already "
            "reach p. Keep a token while the mass before it is BELOW p (drop it when mass "
            "before >= p, not > p).",
            lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: before <= p),
        ),
        (
            "sort in descending order (torch.sort(..., descending=True)): the nucleus is made "
            "of the MOST likely tokens.",
            lambda: _top_p_rule(logits, p, lambda pr, cum, before, s: before < p, ascending=True),
        ),
        (
            "accumulate probabilities (the softmax of the sorted logits), not the logits "
            "themselves.",
            lambda: _top_p_rule(
                logits, p, lambda pr, cum, before, s: (torch.cumsum(s, -1) - s) < p
            ),
        ),
        (
            "top-p is not a threshold on each token's own probability: keep the most likely "
            "tokens until their total reaches p.",
            lambda: logits.masked_fill(torch.softmax(logits.double(), -1) < p, NEG),
        ),
        (
            "the most likely token is always kept, however small p is: its mass before is 0 < p.",
            lambda: torch.full_like(logits, NEG),
        ),
    ]


def _top_p_error(e: BaseException) -> str:
    if isinstance(e, (IndexError, RuntimeError)):
        return _BATCH_TOP_P
    return ""


def _top_p_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, float]]:
    hand = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()  # sorted: 0.5, 0.3, 0.15, 0.05
    inputs: list[tuple[torch.Tensor, float]] = [
        (hand, 0.45),  # 0.5 alone reaches 0.45
        (hand, 0.6),  # 0.5 + 0.3: the token crossing 0.6 is kept
        (hand, 0.9),
        (hand, 1.0),  # everything
        (hand, 0.01),  # the most likely token is always kept
        # exp(-205) is 0 in float32 and vanishes next to 1 in float64: the mass before each
        # -200 token is exactly 1.0 = p, in any precision, so it is dropped (`>=`, not `>`).
        (torch.tensor([-200.0, 5.0, -200.0, -200.0]), 1.0),
    ]
    gen = generator(seed)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0])[:, None]
    random_edges: list[tuple[Callable[[], torch.Tensor], float]] = [
        (lambda: distinct(gen, 4, 30, scale=1.0) * scales, 0.8),  # a batch: each row on its own
        (lambda: distinct(gen, 2, 3, 25, scale=2.0), 0.5),
        (lambda: _ref_top_k(distinct(gen, 30, scale=2.0), 12), 0.7),  # already cut by top-k
        (lambda: distinct(gen, 6, 20, scale=2.0).double(), 0.6),  # float64
        (lambda: distinct(gen, 40, scale=2.0), 1e-4),  # only the most likely token
        (lambda: distinct(gen, 40, scale=1.0), 0.999),
    ]
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
        inputs.append((_clear_input(lambda v=v, scale=scale: distinct(gen, v, scale=scale), p), p))
    return inputs


@check(uses={"softmax_with_temperature": _check_softmax})
def top_p_filter(
    top_p_filter: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``top_p_filter(logits, p)`` against ``gptcore.sample.top_p_filter`` (nucleus
    sampling's cut).

    No input puts a token's mass-before within 1e-4 of p, where float rounding
    could decide either way.
    """
    inputs = _top_p_inputs(seed, cases)
    for logits, p in inputs:
        _check_filter(
            "top_p_filter",
            top_p_filter,
            logits,
            p,
            _ref_top_p(logits, p),
            _top_p_mistakes(logits, p),
            _top_p_error,
            _BATCH_TOP_P,
        )
    passed("top_p_filter", len(inputs))
