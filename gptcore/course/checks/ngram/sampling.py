"""Lesson 2's sampling check: ``generate(next_token_probs, context, num_tokens, generator)``.

The learner's ``generate`` is run on models that record every history they
are given (``_Spy``, ``_Recorder``), its tokens are tested statistically on a
Markov chain, and then draw for draw against the reference for the same seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NoReturn

import torch

from gptcore.ngram import NGramModel, sample_next

from ..report import (
    HINT_JOIN,
    Mistakes,
    call,
    check,
    diagnose,
    fail,
    first_difference,
    input_only,
    passed,
    show,
    type_name,
    wrong,
)
from ..values import check_int_list
from .mistakes import random_probs

__all__ = ["check_distribution", "generate"]

NextTokenProbs = Callable[[list[int]], torch.Tensor]


def _generate(
    next_token_probs: NextTokenProbs,
    context: Sequence[int],
    num_tokens: int,
    generator: torch.Generator,
    pick: Callable[[torch.Tensor, torch.Generator], int] = sample_next,
) -> list[int]:
    """The reference: one ``pick`` (``sample_next``) per new token, fed back into the history."""
    history, out = list(context), []
    for _ in range(num_tokens):
        token = pick(next_token_probs(list(history)), generator)
        out.append(token)
        history.append(token)
    return out


def _history(value: Any) -> list[int] | None:
    """The history a learner passed to next_token_probs, as a list of ints, or None."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or value.dtype.is_floating_point:
            return None
        return [int(x) for x in value.tolist()]
    if type(value) not in (list, tuple):
        return None
    if set(map(type, value)) - {int}:  # (C speed: called with every token's whole history)
        return None
    return list(value)


class _Recorder:
    """Wraps a model's next_token_probs and records the histories it is called with."""

    def __init__(self, next_token_probs: NextTokenProbs) -> None:
        self.next_token_probs = next_token_probs
        self.calls: list[list[int]] = []
        self.bad: list[Any] = []

    def __call__(self, history: Any) -> torch.Tensor:
        h = _history(history)
        if h is None:
            self.bad.append(history)
            h = []
        self.calls.append(h)
        return self.next_token_probs(h)


class _Spy(_Recorder):
    """A model whose distribution depends on the whole history; it records every call."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(self._probs)
        self.table = table

    def row(self, history: list[int]) -> int:
        return (7 * len(history) + 3 * sum(history[-2:])) % self.table.shape[0]

    def _probs(self, history: list[int]) -> torch.Tensor:
        return self.table[self.row(history)].clone()  # a copy: the learner may not spoil the table


def _reference_run(table: torch.Tensor, context: list[int], num_tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = _generate(_Spy(table), context, num_tokens, g)
    return out, g.get_state()


def _sampling_mistakes(
    model: NextTokenProbs, context: list[int], num_tokens: int, seed: int
) -> Mistakes:
    """What generate would return on this input with each known mistake."""

    def run(pick: Callable[[torch.Tensor, torch.Generator], int]) -> list[int]:
        return _generate(model, context, num_tokens, torch.Generator().manual_seed(seed), pick)

    def twice(p: torch.Tensor, g: torch.Generator) -> int:
        sample_next(p, g)
        return sample_next(p, g)

    return [
        (
            "you always took the most likely token (argmax). Draw it at random instead: "
            "torch.multinomial(probs, 1, generator=generator).",
            lambda: run(lambda p, g: int(p.argmax())),
        ),
        (
            "you drew twice per token. Call torch.multinomial exactly once per new token: every "
            "extra draw moves the generator on and changes all later tokens.",
            lambda: run(twice),
        ),
    ]


_CHAIN = torch.tensor(
    [
        [0.10, 0.60, 0.30, 0.00],
        [0.50, 0.00, 0.25, 0.25],
        [0.20, 0.20, 0.20, 0.40],
        [0.05, 0.10, 0.00, 0.85],
    ],
    dtype=torch.float64,
)


@input_only  # check_distribution judges the tokens only, against _CHAIN as the runner holds it
def _chain_model(history: Any) -> torch.Tensor:
    h = _history(history)
    return _CHAIN[h[-1] if h else 0].clone()


def check_distribution(
    generate: Callable[..., list[int]], seeds: Sequence[int], num_tokens: int
) -> None:
    """Over many seeded draws, each next token must follow the distribution it was drawn from."""
    V = _CHAIN.shape[0]
    counts = torch.zeros((V, V), dtype=torch.float64)
    for seed in seeds:
        where = (
            f"generate(P[history[-1]], [0], {num_tokens}, torch.Generator().manual_seed({seed}))"
        )
        got = call(generate, _chain_model, [0], num_tokens, torch.Generator().manual_seed(seed),
                   name="generate", where=where)  # fmt: skip
        got = check_int_list(got, f"the result of {where}")
        if len(got) != num_tokens or any(not 0 <= t < V for t in got):
            fail(
                f"{where} must return {num_tokens} token ids in 0..{V - 1}, but returned {show(got)}"
            )
        seq = [0, *got]
        for a, b in pairwise(seq):
            counts[a, b] += 1
    totals = counts.sum(-1)
    for a in range(V):
        n = float(totals[a])
        for b in range(V):
            p, got_p = float(_CHAIN[a, b]), float(counts[a, b]) / max(n, 1.0)
            if p == 0.0 and counts[a, b] > 0:
                bad = f"token {b} came after token {a} {int(counts[a, b])} times, but P({b} | {a}) = 0."
            elif p > 0.0 and (n == 0 or abs(got_p - p) > 5 * math.sqrt(p * (1 - p) / n) + 1 / n):
                bad = (
                    f"after token {a} ({int(n)} times in {len(seeds)} runs of {num_tokens} tokens), "
                    f"token {b} came {got_p:.1%} of the time, but its probability is {p:.0%}."
                )
            else:
                continue
            fail(
                "generate's tokens do not follow the distribution they are drawn from. Sampling "
                "from a bigram model P, given by next_token_probs(history) = P[history[-1]]:\n"
                f"P = {_CHAIN.tolist()}\n{bad}",
                "each new token must be a random draw from "
                "next_token_probs(history), where history is the context followed by every token "
                "drawn so far: torch.multinomial(probs, 1, generator=generator). Taking the most "
                "likely token, or drawing uniformly, gives these frequencies.",
            )


@check()
def generate(
    generate: Callable[..., list[int]],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``generate(next_token_probs, context, num_tokens, generator)`` draw for draw.

    1. On gptcore's bigram model of a tiny corpus: the result is a list of
       ``num_tokens`` ints, and ``next_token_probs`` gets the whole history once
       per token.
    2. Statistics: over several seeded runs of 2,000 tokens from a Markov
       chain, each token follows its distribution (5 standard errors), and
       probability-0 tokens never appear.
    3. Draw for draw: every case gives exactly the reference's tokens for the
       same seed (``NGramModel.sample``'s, for the gptcore model), and leaves the
       generator where one ``torch.multinomial`` per token leaves it.
    """
    got = _check_hand_case(generate)
    check_distribution(generate, [seed * 7919 + i for i in range(3)], 2000)
    _check_hand_draws(generate, got)
    inputs = _generate_inputs(seed, cases)
    for table, context, num_tokens, s in inputs:
        _check_generate_case(generate, table, context, num_tokens, s)
    passed("generate", len(inputs) + 1)


_HAND_MODEL = ([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 4, 0], 5, 0.5)  # corpus, vocab_size, k
_HAND = "generate(model.next_token_probs, [0], 12, torch.Generator().manual_seed(0))"


def _hand_model() -> NGramModel:
    corpus, vocab_size, k = _HAND_MODEL
    return NGramModel(n=2, vocab_size=vocab_size, k=k).fit(corpus)


def _check_hand_case(generate: Callable[..., list[int]]) -> list[int]:
    """Type, length and the histories passed to the model, on gptcore's bigram model."""
    recorder = _Recorder(_hand_model().next_token_probs)
    got = call(generate, recorder, [0], 12, torch.Generator().manual_seed(0), name="generate",
               where=_HAND)  # fmt: skip
    got = _check_result(got, _HAND, [0], 12)
    _check_calls(recorder, _HAND, [0], got)
    return got


def _check_hand_draws(generate: Callable[..., list[int]], got: list[int]) -> None:
    """The hand case's tokens must be NGramModel.sample's for the same seed."""
    model = _hand_model()

    def run_model(s: int) -> list[int]:
        return generate(model.next_token_probs, [0], 12, torch.Generator().manual_seed(s))

    expected = model.sample([0], 12, seed=0)
    if got != expected:
        _sampling_failure(
            _HAND, got, expected, run_model, lambda s: model.sample([0], 12, seed=s), 0,
            _sampling_mistakes(model.next_token_probs, [0], 12, 0),
        )  # fmt: skip


def _generate_inputs(
    seed: int, cases: int
) -> list[tuple[torch.Tensor, list[int], int, int]]:
    """(table, context, num_tokens, seed) cases for the draw-for-draw comparison."""
    inputs: list[tuple[torch.Tensor, list[int], int, int]] = [
        (random_probs(random.Random(1), 3, 5), [2], 10, 0),
        (random_probs(random.Random(2), 4, 8), [1, 2, 3], 25, 42),
    ]
    inputs += [
        (random_probs(random.Random(3), 3, 5), [2], 0, 1),  # nothing to generate
        (random_probs(random.Random(4), 2, 6), [], 8, 2),  # an empty context
        (torch.eye(4, dtype=torch.float64), [1], 10, 3),  # certain tokens: no randomness
        (random_probs(random.Random(5), 5, 300), [7, 250], 200, 4),
        (random_probs(random.Random(6), 1, 2), [0], 64, 5),
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        vocab_size = rng.randint(2, 40)
        context = [rng.randrange(vocab_size) for _ in range(rng.randint(0, 4))]
        inputs.append(
            (random_probs(rng, rng.randint(1, 6), vocab_size), context, rng.randint(1, 40),
             rng.randrange(2**31))
        )  # fmt: skip
    return inputs


def _check_generate_case(
    generate: Callable[..., list[int]],
    table: torch.Tensor,
    context: list[int],
    num_tokens: int,
    s: int,
) -> None:
    where = (
        f"generate(next_token_probs, {show(context)}, {num_tokens}, "
        f"torch.Generator().manual_seed({s}))"
    )
    spy = _Spy(table)
    g = torch.Generator().manual_seed(s)
    got = call(generate, spy, context, num_tokens, g, name="generate", where=where)
    got = _check_result(got, where, context, num_tokens)
    _check_calls(spy, where, context, got)
    expected, state = _reference_run(table, context, num_tokens, s)
    if got != expected:

        def rerun(s2: int) -> list[int]:
            return generate(_Spy(table), list(context), num_tokens, torch.Generator().manual_seed(s2))

        _sampling_failure(
            where, got, expected, rerun,
            lambda s2: _reference_run(table, context, num_tokens, s2)[0],
            s, _sampling_mistakes(_Spy(table), context, num_tokens, s),
        )  # fmt: skip
    if not torch.equal(g.get_state(), state):
        if torch.equal(g.get_state(), torch.Generator().manual_seed(s).get_state()):
            fail(
                f"{where} returned the right tokens, but it never used the generator you "
                "were given, so another seed would give the same tokens. Do not create or "
                "reseed a generator; draw with torch.multinomial(probs, 1, generator=generator)."
            )
        fail(
            f"{where} returned the right tokens, but then drew more random numbers from the "
            "generator. Draw exactly once per new token, with torch.multinomial(probs, 1, "
            "generator=generator), and nothing else: whoever uses the generator next must "
            "find it where one draw per token leaves it."
        )


def _check_result(got: Any, where: str, context: list[int], num_tokens: int) -> list[int]:
    if type(got) is list and any(isinstance(t, torch.Tensor) for t in got):
        fail(
            f"{where} returned a list of tensors, {show(got, 80)}. Convert each token to an int: "
            "int(torch.multinomial(probs, 1, generator=generator)) or .item()."
        )
    got = check_int_list(got, f"the result of {where}")
    if len(got) != num_tokens:
        hint_text = ""
        if context and len(got) == len(context) + num_tokens and got[: len(context)] == context:
            hint_text = "return only the new tokens, without the context in front."
        elif abs(len(got) - num_tokens) == 1:
            hint_text = "an off-by-one: make exactly num_tokens draws."
        fail(
            f"{where} must return {num_tokens} new tokens, but it returned {len(got)}: {show(got)}",
            hint_text,
        )
    return got


def _check_calls(spy: _Recorder, where: str, context: list[int], got: list[int]) -> None:
    if spy.bad:
        fail(
            f"{where} called next_token_probs with {show(spy.bad[0], 60)} "
            f"({type_name(spy.bad[0])}). Pass the whole history so far: a list of ints, the "
            "context followed by every token generated so far."
        )
    if len(spy.calls) != len(got):
        fail(
            f"{where} called next_token_probs {len(spy.calls)} times for {len(got)} new tokens. "
            "Call it exactly once per new token: it gives the distribution to draw that token from."
        )
    for j, seen in enumerate(spy.calls):
        want = [*context, *got[:j]]
        if seen == want:
            continue
        if seen == context:
            hint = "append each new token to the history before the next call."
        elif seen == want[-1:] or seen == want[-2:]:
            hint = "pass the whole history, not only its last tokens: the model decides how much of it to use."
        elif seen == got[:j]:
            hint = "the history starts with the context: context + the tokens generated so far."
        else:
            hint = "the history is the context followed by every token generated so far, in order."
        fail(
            f"{where}: for new token {j}, next_token_probs must get the history {show(want)}, "
            f"but it got {show(seen)}.",
            hint,
        )


def _sampling_failure(
    where: str,
    got: list[int],
    expected: list[int],
    rerun: Callable[[int], list[int]],
    reference: Callable[[int], list[int]],
    seed: int,
    mistakes: Mistakes,
) -> NoReturn:
    """Fail on tokens that differ from the reference's, naming the likely mistake.

    ``rerun(s)`` runs the learner's generate again with seed ``s``, and
    ``reference(s)`` gives the reference's tokens for seed ``s``.
    """
    i = first_difference(got, expected)
    hints = [diagnose(got, mistakes)]
    again = _attempt(rerun, seed)
    if again is not None and again != got:
        hints.append(
            "the same seed gave different tokens on a second run: the generator you were given "
            "was not used (torch.multinomial without generator=..., torch.rand or the random "
            "module draw from a global state). Pass generator=generator."
        )
    elif again is not None and _attempt(rerun, seed + 1) == got and reference(seed + 1) != expected:
        hints.append(
            "another seed gave the same tokens: your tokens do not depend on the generator you "
            "were given. Do not create or reseed a generator; use generator=generator."
        )
    hint_text = HINT_JOIN.join(h for h in hints if h) or (
            "your tokens follow the right distribution, but not the same draws: draw each token "
            "with torch.multinomial(probs, 1, generator=generator), exactly once per token, with "
            "the generator you were given. Other ways of sampling (torch.rand with a cumulative "
            "sum, the random module, a different num_samples) draw other random numbers."
    )
    wrong(where, expected, got, f"  first difference at new token {i}", hint_text=hint_text)


def _attempt(rerun: Callable[[int], list[int]], seed: int) -> list[int] | None:
    try:
        return rerun(seed)
    except Exception:
        return None
