"""Lesson 7, exercise 1: ``softmax_with_temperature``, probabilities at a temperature."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from gptcore.sample import softmax_with_temperature as _ref_softmax

from ..report import Mistakes, call, check, diagnose, passed, wrong
from ..tensors import generator, matches
from .common import (
    MUTATION_HINT,
    NEG,
    describe,
    first_bad,
    randn,
    result_tensor,
    show_logits,
)


def _softmax_mistakes(logits: torch.Tensor, t: float) -> Mistakes:
    x = logits.double()
    return [
        (
            "divide the logits by the temperature; you multiplied. T = 2 must flatten the "
            "distribution, T = 0.5 sharpen it.",
            lambda: torch.softmax(x * t, dim=-1),
        ),
        (
            "use the temperature: the result is softmax(logits / temperature).",
            lambda: torch.softmax(x, dim=-1) if t != 1 else None,
        ),
        (
            "normalise along the last dim (dim=-1): each row of a batch is its own distribution "
            "over the vocabulary.",
            lambda: torch.softmax(x / t, dim=0) if x.ndim > 1 else None,
        ),
        (
            "normalise each row on its own (along dim=-1, with keepdim=True), not the whole batch "
            "at once.",
            lambda: torch.softmax((x / t).flatten(), dim=0).view(x.shape) if x.ndim > 1 else None,
        ),
        (
            "divide by the sum along the last dim, so that each row sums to 1.",
            lambda: torch.exp(x / t - (x / t).amax(dim=-1, keepdim=True)),
        ),
        (
            "divide by the sum along the last dim, so that each row sums to 1.",
            lambda: torch.exp(x / t),
        ),
        (
            "return probabilities, not log-probabilities.",
            lambda: torch.log_softmax(x / t, dim=-1),
        ),
        (
            "apply exp before normalising: probabilities are exp(z) / sum(exp(z)).",
            lambda: (x / t) / (x / t).sum(dim=-1, keepdim=True),
        ),
    ]


_OVERFLOW_HINT = (
    "exp overflowed (exp(89) is already inf in float32, and inf / inf is nan) or "
    "underflowed (exp(-1000) is 0, and 0 / 0 is nan). Subtract each row's max first, "
    "z - z.amax(dim=-1, keepdim=True): softmax(z - c) == softmax(z) for any constant c, "
    "and then every exponent is <= 0 and the largest term is exactly 1."
)


def _softmax_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, float]]:
    hand = torch.tensor([2.0, 1.0, 0.0])
    inputs: list[tuple[torch.Tensor, float]] = [(hand, 1.0), (hand, 0.5), (hand, 2.0)]
    gen = generator(seed)
    inputs += [
        (torch.tensor([1000.0, 999.0, 998.0]), 1.0),  # exp(1000) overflows
        (torch.tensor([-1000.0, -1001.0, -1002.0]), 1.0),  # exp(-1000) underflows to 0
        (torch.tensor([[30.0, 10.0, -5.0], [0.0, 0.0, 0.0]]), 0.1),  # z = 300
        (torch.tensor([1.0, 2.0, 3.0]), 1e-3),  # nearly one-hot
        (torch.tensor([0.0, NEG, 1.0, NEG]), 0.7),  # filtered tokens get exactly 0
        (torch.tensor([[NEG, 500.0, 499.0], [2.0, NEG, NEG]]), 1.0),
        (torch.tensor([3.0]), 1.0),  # a vocabulary of one
        (randn(gen, 2, 3, 17, scale=3.0), 1.3),  # a 3-D batch
        (randn(gen, 5, 11, scale=4.0, dtype=torch.float64), 0.25),  # float64 stays float64
        (randn(gen, 30, scale=2.0), 100.0),  # nearly uniform
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        v = rng.randint(2, 40)
        shape = (v,) if rng.random() < 0.5 else (rng.randint(1, 5), v)
        inputs.append(
            (randn(gen, *shape, scale=rng.uniform(0.5, 3.0)), rng.choice([0.5, 0.7, 1.0, 1.5, 3.0]))
        )
    return inputs


@check()
def softmax_with_temperature(
    softmax_with_temperature: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``softmax_with_temperature(logits, temperature) -> probs`` against
    softmax(logits / T) along the last dim (``gptcore.sample.softmax_with_temperature``)."""
    inputs = _softmax_inputs(seed, cases)
    for logits, t in inputs:
        where = describe("softmax_with_temperature", logits, t)
        got = call(
            softmax_with_temperature,
            logits,
            t,
            name="softmax_with_temperature",
            where=where,
            mutation_hint=MUTATION_HINT,
        )
        got = result_tensor(
            got,
            f"the result of {where}",
            logits,
            dtype_hint="compute in the dtype you are given: do not convert with .float() or "
            ".double().",
            shape_hint="return one probability per logit, in the same shape: softmax along "
            "dim=-1 keeps the shape.",
        )
        expected = _ref_softmax(logits, t)
        if matches(got, expected, atol=1e-6, rtol=1e-4):
            continue
        if not bool(torch.isfinite(got).all()):
            wrong(where, show_logits(expected), show_logits(got), hint_text=_OVERFLOW_HINT)
        hint_text = diagnose(
            got,
            _softmax_mistakes(logits, t),
            same=lambda g, c: matches(g, c.to(g.dtype), atol=1e-6, rtol=1e-4),
        )
        wrong(
            where,
            show_logits(expected),
            show_logits(got),
            first_bad(got, expected, exact=False),
            hint_text=hint_text,
        )
    passed("softmax_with_temperature", len(inputs))
