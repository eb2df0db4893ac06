"""Lesson 7, exercise 4: ``sample_token``, one decoding step (temperature, top-k, top-p, draw).

The distribution is checked first, statistically: many draws from seeded
generators, each token's frequency within a tolerance (4.5 standard errors) of
its probability under the reference, and a token the reference can never draw
must never be drawn. A wrong filter (top-k off by one, top-p that drops the
token crossing p, filters in the wrong order) or a wrong temperature moves some
frequency far outside that tolerance. Then, with equal seeds, the draws must be
the reference's token for token: that needs ``torch.multinomial(probs, 1,
generator=generator)``, once per call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch

from gptcore.sample import sample_token as _ref_sample_token
from gptcore.sample import top_k_filter as _ref_top_k
from gptcore.sample import top_p_filter as _ref_top_p

from ..report import HINT_JOIN, call, call_repeated, check, fail, passed, wrong
from ..tensors import generator
from ..values import int_problem
from .common import GENERATOR, MUTATION_HINT, Name, describe, distinct
from .filters import clear_of_boundaries, top_k_filter, top_p_filter
from .softmax import softmax_with_temperature

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
STAT_SETTINGS_BOTH: tuple[Setting, ...] = (  # both filters: the order shows
    (1.0, 3, 0.65),  # top-k first keeps two; top-p first would keep three
    (0.8, 2, 0.5),  # top-k first keeps one; top-p first would keep two
    (0.7, 4, 0.8),
    (1.5, 2, 0.9),
    (1.0, 6, 1.0),  # nothing removed
)

# order of _expected_probs -> the mistake it makes
_STEP_MISTAKES = {
    "times_t": "divide the logits by the temperature; you multiplied.",
    "no_t": "use the temperature: divide the logits by it first.",
    "t_last": "divide by the temperature BEFORE the filters: top-p must see the distribution "
    "at this temperature.",
    "p_first": "apply top-k first, then top-p: top-p measures its p on what top-k kept.",
    "no_k": "apply top_k_filter when top_k is not None.",
    "no_p": "apply top_p_filter when top_p is not None.",
}


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


def describe_setting(setting: Setting) -> str:
    t, k, p = setting
    return f"temperature={t}, top_k={k}, top_p={p}"


def check_token(value: Any, where: str, vocab: int) -> int:
    """``value`` after checking it is a plain ``int`` token id, 0 <= id < vocab."""
    problem = int_problem(value)
    if problem:
        fail(
            f"{where} must return a token id, an int, but it returned {problem}",
            "turn the tensor into a plain int with int(...) or .item()."
            if isinstance(value, torch.Tensor)
            else "",
        )
    if not 0 <= value < vocab:
        fail(f"{where} returned {value}, which is not a token id: ids are 0..{vocab - 1}.")
    return value


def step_error(e: BaseException) -> str:
    """The hint for an exception raised by the learner's sampling step."""
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


def draw(
    fn: Callable[..., int], logits: torch.Tensor, setting: Setting, g: torch.Generator, where: str
) -> int:
    """One token from the learner's ``fn(logits, temperature, top_k, top_p, generator)``."""
    got = call(
        fn,
        logits,
        *setting,
        g,
        name="sample_token",
        where=where,
        error_hints=step_error,
        mutation_hint=MUTATION_HINT,
    )
    return check_token(got, where, logits.size(-1))


@check(
    uses={
        "softmax_with_temperature": softmax_with_temperature,
        "top_k_filter": top_k_filter,
        "top_p_filter": top_p_filter,
    }
)
def sample_token(
    sample_token: Callable[..., int],
    *,
    seed: int = 0,
    cases: int = 40,
    draws: int = 2000,
) -> None:
    """Check ``sample_token(logits, temperature, top_k, top_p, generator) -> int`` against
    ``gptcore.sample.sample_token``: greedy at temperature 0, then sampled frequencies, then
    seeded draws token for token."""
    n_checked = _check_greedy(sample_token, seed)
    settings = STAT_SETTINGS + STAT_SETTINGS_BOTH
    for i, setting in enumerate(settings):
        _check_frequencies(sample_token, setting, generator(seed * 1000 + i), draws)
    n_checked += len(settings)
    n_checked += _check_seeded_draws(sample_token, seed, cases)
    passed(f"sample_token ({draws:,} draws for each distribution)", n_checked)


def _check_greedy(sample_token: Callable[..., int], seed: int) -> int:
    """Temperature 0 is argmax, whatever the filters say."""
    gen = generator(seed)
    greedy: list[tuple[torch.Tensor, Setting]] = [
        (torch.tensor([0.1, 5.0, 0.2, -1.0]), (0.0, None, None)),
        (torch.tensor([0.1, 5.0, 0.2, -1.0]), (0.0, 2, 0.5)),
    ]
    greedy += [(distinct(gen, 20, scale=2.0), (0.0, None, None)) for _ in range(3)]
    for logits, setting in greedy:
        where = describe("sample_token", logits, *setting, GENERATOR)
        got = draw(sample_token, logits, setting, generator(seed), where)
        expected = int(torch.argmax(logits))
        if got != expected:
            fail(
                f"{where} returned {got}, but temperature 0 means greedy decoding: the most "
                f"likely token, {expected} (torch.argmax(logits)), every time."
            )
    return len(greedy)


def _check_seeded_draws(
    sample_token: Callable[..., int], seed: int, cases: int
) -> int:
    """Token for token against gptcore's sample_token, with equal seeds."""
    rng = random.Random(seed)
    gen = generator(seed + 1)
    for case in range(cases):
        v = rng.randint(5, 50)
        logits = distinct(gen, v, scale=rng.uniform(0.5, 2.0))
        t = rng.choice([0.5, 0.8, 1.0, 1.3, 2.0])
        k = rng.choice([None, rng.randint(1, v)])
        p = rng.choice([None, rng.uniform(0.2, 0.95)])
        if case % 5 == 0:  # the edges: a filter that keeps everything, or greedy by top-k
            k, p = rng.choice([(v, None), (None, 1.0), (v, 1.0), (1, 0.5)])
        scaled = logits.double() / t
        if p is not None and p < 1:
            if not clear_of_boundaries(_ref_top_k(scaled, k) if k else scaled, p, 1e-3):
                p = None
        s = seed * 7919 + case
        g_ref, g_got = generator(s), generator(s)
        seeded_gen = Name(f"torch.Generator().manual_seed({s})")
        where = describe("sample_token", logits, t, k, p, seeded_gen)
        expected = [_ref_sample_token(logits, t, k, p, g_ref) for _ in range(5)]
        got = [draw(sample_token, logits, (t, k, p), g_got, where) for _ in range(5)]
        if got != expected:
            wrong(
                f"5 draws of {where}, one generator",
                expected,
                got,
                hint_text="with the same seeded generator, the same distribution must give the "
                "same tokens. Apply temperature, then top_k_filter, then top_p_filter, turn the "
                "result into probabilities (softmax_with_temperature(x, 1.0)), and draw with "
                "torch.multinomial(probs, num_samples=1, generator=generator), exactly once per "
                "call. Do not use the global random state, and do not draw more than once.",
            )
    return cases


def _within(counts: list[int], probs: list[float], n: int) -> list[bool]:
    """Per token: is its frequency within 4.5 standard errors (+ 0.005) of its probability,
    and never drawn if its probability is 0?"""
    return [
        (c == 0 or q > 0) and abs(c / n - q) <= 4.5 * math.sqrt(q * (1 - q) / n) + 0.005
        for c, q in zip(counts, probs)
    ]


def _check_frequencies(
    sample_token: Callable[..., int], setting: Setting, g: torch.Generator, n: int
) -> None:
    logits = torch.tensor(STAT_PROBS).log()
    where = describe("sample_token", logits, *setting, GENERATOR)
    counts = [0] * len(STAT_PROBS)
    drawn = call_repeated(
        sample_token,
        logits,
        *setting,
        g,
        times=n,
        name="sample_token",
        where=where,
        error_hints=step_error,
        mutation_hint=MUTATION_HINT,
    )
    for got in drawn:
        counts[check_token(got, where, logits.size(-1))] += 1
    probs = _expected_probs(logits, setting).tolist()
    impossible = [i for i, (c, p) in enumerate(zip(counts, probs)) if c and p == 0]
    off = [i for i, ok in enumerate(_within(counts, probs, n)) if not ok and i not in impossible]
    if not impossible and not off:
        return
    table = "\n".join(
        f"    token {i}: probability {p:.3f}, drawn {c / n:.3f} of the time"
        + ("   <- can never be drawn" if i in impossible else "")
        + ("   <- too far off" if i in off else "")
        for i, (p, c) in enumerate(zip(probs, counts))
    )
    hints = [
        h
        for order, h in _STEP_MISTAKES.items()
        if all(_within(counts, _expected_probs(logits, setting, order).tolist(), n))
    ]
    what = (
        f"{len(impossible)} token(s) that {describe_setting(setting)} rules out were drawn"
        if impossible
        else "the frequencies do not match the probabilities"
    )
    fail(
        f"{n} draws of {where}: {what}.\n"
        f"  the filtered distribution (probs {list(STAT_PROBS)}, {describe_setting(setting)}):\n"
        f"{table}",
        HINT_JOIN.join(hints)
        or "sample from softmax(top_p(top_k(logits / temperature))): temperature first, then "
        "top-k, then top-p, then softmax, then torch.multinomial(probs, 1, generator=generator).",
    )
