"""Checks for lesson 2 (n-gram language models): counts, add-k smoothing, sampling, perplexity.

Each check compares the learner's function with gptcore's n-gram reference
(``gptcore.ngram``) on hand-checkable examples, then on ``cases`` random
inputs drawn from ``random.Random(seed)``. ``edge_cases=True`` adds inputs at
the edges of the contract (empty or one-token sequences, a row of zeros with
``k = 0``, probability-0 transitions, tensors with more than two dimensions);
the hidden tests use it.

Tensors must be exactly ``torch.Tensor`` with the dtype and shape the
docstring names; floats must be exactly ``float``. Values are compared only
after those checks, with torch's own comparisons or as plain floats, so an
object whose ``__eq__`` always answers True cannot pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NoReturn

import torch

from gptcore.data import load_text, train_val_split
from gptcore.ngram import NGramModel, count_ngrams, nll, sample_next, smoothed_probs
from gptcore.tokenizer import CharTokenizer

from . import call, check_int_list, describe_call, fail, first_difference, passed, show, type_name

__all__ = [
    "add_k_smoothing",
    "bigram_counts",
    "bigram_shakespeare",
    "perplexity",
    "seeded_sampling",
]

NextTokenProbs = Callable[[list[int]], torch.Tensor]


# ------------------------------------------------------------------ references
def _bigram_table(ids: Sequence[int], vocab_size: int) -> torch.Tensor:
    counts = torch.zeros((vocab_size, vocab_size), dtype=torch.int64)
    for (a, b), c in count_ngrams(list(ids), 2).items():
        counts[a, b] = c
    return counts


def _generate(
    next_token_probs: NextTokenProbs,
    context: Sequence[int],
    num_tokens: int,
    generator: torch.Generator,
) -> list[int]:
    history, out = list(context), []
    for _ in range(num_tokens):
        token = sample_next(next_token_probs(list(history)), generator)
        out.append(token)
        history.append(token)
    return out


def _transition_probs(probs: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    ids_t = torch.tensor(list(ids), dtype=torch.long)
    return probs[ids_t[:-1], ids_t[1:]]


def _cross_entropy(probs: torch.Tensor, ids: Sequence[int]) -> float:
    return nll(_transition_probs(probs, ids))


# ------------------------------------------------------------------- helpers
class _Shown(str):
    """Text already formatted for a failure message."""


def _wrong(where: str, expected: Any, got: Any, *notes: str) -> NoReturn:
    def fmt(x: Any) -> str:
        return x if isinstance(x, _Shown) else show(x, 300)

    lines = [f"{where} is wrong.", f"  expected: {fmt(expected)}", f"  got:      {fmt(got)}"]
    lines += [n for n in notes if n]
    fail("\n".join(lines))


def _hint(text: str) -> str:
    return f"Hint: {text}" if text else ""


def _show_tensor(t: torch.Tensor, limit: int = 300) -> _Shown:
    text = show(t.tolist(), limit)
    return _Shown(f"tensor({text}, dtype={t.dtype})")


def _check_tensor(
    value: Any,
    what: str,
    *,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    dtype_hint: str = "",
) -> torch.Tensor:
    """``value`` itself, after checking it is a CPU ``torch.Tensor`` of this dtype and shape."""
    if type(value) is not torch.Tensor:
        if isinstance(value, torch.Tensor):
            problem = f"a {type_name(value)}, a subclass of torch.Tensor"
        elif type(value).__module__ == "numpy":
            problem = f"a {type_name(value)}; convert it with torch.from_numpy(...)"
        elif isinstance(value, (list, tuple)):
            problem = f"a {type_name(value)}; build a tensor, for example with torch.zeros(...)"
        else:
            problem = f"a {type_name(value)}: {show(value, 60)}"
        fail(f"{what} must be a torch.Tensor, but it is {problem}")
    if value.dtype != dtype:
        fail(
            f"{what} must have dtype {dtype}, but it has dtype {value.dtype}. {dtype_hint}".rstrip()
        )
    if tuple(value.shape) != shape:
        fail(f"{what} must have shape {shape}, but it has shape {tuple(value.shape)}")
    if value.device.type != "cpu":
        fail(f"{what} is on {value.device}; return a CPU tensor, as the input was")
    return value


def _check_float(value: Any, what: str) -> float:
    """``value`` itself, after checking it is exactly a Python ``float``."""
    if type(value) is float:
        return value
    if isinstance(value, torch.Tensor):
        problem = f"a torch.Tensor ({show(value, 40)}); convert it with .item() or float(...)"
    elif type(value).__module__ == "numpy":
        problem = f"a {type_name(value)} ({value}); convert it with float(...)"
    elif isinstance(value, bool):
        problem = f"a bool ({value})"
    elif isinstance(value, int):
        problem = f"an int ({value}); return a float, for example float(...)"
    else:
        problem = f"a {type_name(value)} ({show(value, 40)})"
    fail(f"{what} must be a float, but it is {problem}")


def _unchanged(before: torch.Tensor, after: torch.Tensor, where: str, name: str) -> None:
    if not torch.equal(before, after):
        fail(
            f"{where} changed its argument {name}: build the result as a new tensor instead of "
            "modifying the input in place (+=, add_, div_ and the like)."
        )


def _same_tensor(got: torch.Tensor, expected: torch.Tensor, exact: bool) -> bool:
    if got.shape != expected.shape:
        return False
    if exact:
        return torch.equal(got, expected)
    return torch.allclose(got, expected.to(got.dtype), rtol=1e-9, atol=0.0, equal_nan=True)


def _diagnose_tensor(
    got: torch.Tensor,
    mistakes: list[tuple[Callable[[], torch.Tensor], str]],
    exact: bool,
) -> str:
    """The hints of the known mistakes that reproduce ``got``."""
    hints = []
    for compute, hint in mistakes:
        try:
            variant = compute()
            if _same_tensor(got, variant, exact) and hint not in hints:
                hints.append(hint)
        except Exception:
            continue
    return "\n  or: ".join(hints)


def _random_ids(rng: random.Random, vocab_size: int, max_len: int) -> list[int]:
    # A few distinct ids, so that pairs repeat; the largest ids often never occur.
    alphabet = rng.sample(range(vocab_size), min(vocab_size, rng.randint(1, 6)))
    return [rng.choice(alphabet) for _ in range(rng.randint(0, max_len))]


def _random_probs(rng: random.Random, rows: int, vocab_size: int) -> torch.Tensor:
    """A (rows, V) float64 table whose rows are distributions, some entries exactly 0."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    weights = torch.rand((rows, vocab_size), generator=g, dtype=torch.float64) ** 2
    weights[torch.rand((rows, vocab_size), generator=g) < 0.3] = 0.0
    weights[torch.arange(rows), torch.randint(vocab_size, (rows,), generator=g)] += 0.1
    return weights / weights.sum(-1, keepdim=True)


# ---------------------------------------------------------------- bigram counts
def _count_mistakes(ids: list[int], vocab_size: int):
    ref = lambda seq: _bigram_table(seq, vocab_size)  # noqa: E731
    return [
        (
            lambda: ref(ids).T,
            "row = the earlier token, column = the token that follows it: counts[ids[i], ids[i + 1]].",
        ),
        (
            lambda: ref(ids[:-1]),
            "you missed the last pair (ids[-2], ids[-1]): pairs start at positions 0 .. len(ids) - 2.",
        ),
        (
            lambda: ref(ids[1:]),
            "you missed the first pair (ids[0], ids[1]): pairs start at position 0.",
        ),
        (
            lambda: ref([*ids, ids[0]]) if ids else None,
            "the last token has no next token: do not wrap around to ids[0].",
        ),
        (
            lambda: (ref(ids) > 0).long(),
            "count how many times each pair occurs, not only whether it occurs.",
        ),
    ]


def bigram_counts(
    count_bigrams: Callable[[list[int], int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 40,
    edge_cases: bool = False,
) -> None:
    """Check ``count_bigrams(ids, vocab_size)`` against ``count_ngrams(ids, 2)`` as a (V, V) table."""
    inputs: list[tuple[list[int], int]] = [
        ([0, 1, 2, 0, 1], 3),  # [[0, 2, 0], [0, 0, 1], [1, 0, 0]]
        ([1, 1, 1], 2),  # overlapping pairs both count: [[0, 0], [0, 2]]
        ([3, 0, 3], 6),  # tokens 1, 2, 4 and 5 never occur, but still get a row and a column
    ]
    if edge_cases:
        rng_big = random.Random(seed + 1)
        inputs += [
            ([], 4),
            ([2], 3),
            ([0] * 50, 1),
            ([5, 4, 3, 2, 1, 0], 6),
            ([rng_big.randrange(65) for _ in range(20_000)], 65),
            ([0, 999, 0, 999, 500], 1000),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        vocab_size = rng.randint(1, 40)
        inputs.append((_random_ids(rng, vocab_size, 60), vocab_size))
    for ids, vocab_size in inputs:
        where = describe_call("count_bigrams", ids, vocab_size)
        hints = {
            IndexError: "the table has vocab_size rows and vocab_size columns, whatever ids occur: "
            "start from torch.zeros((vocab_size, vocab_size), dtype=torch.long).",
        }
        got = call(
            count_bigrams, ids, vocab_size, name="count_bigrams", where=where, error_hints=hints
        )
        got = _check_tensor(
            got,
            f"the result of {where}",
            dtype=torch.int64,
            shape=(vocab_size, vocab_size),
            dtype_hint="Counts are whole numbers: create the table with dtype=torch.long (int64).",
        )
        expected = _bigram_table(ids, vocab_size)
        if not torch.equal(got, expected):
            diff = (got != expected).nonzero()[0].tolist()
            a, b = diff
            _wrong(
                where,
                _show_tensor(expected),
                _show_tensor(got),
                f"  first wrong cell: counts[{a}, {b}] should be {int(expected[a, b])}, "
                f"not {int(got[a, b])}",
                _hint(_diagnose_tensor(got, _count_mistakes(ids, vocab_size), exact=True)),
            )
    passed("count_bigrams", len(inputs))


# ------------------------------------------------------------- add-k smoothing
def _normalize_mistakes(counts: torch.Tensor, k: float):
    c = counts.to(torch.float64)
    V = c.shape[-1]
    return [
        (
            lambda: (c + k) / (c + k).sum(0, keepdim=True),
            "each ROW is a distribution over the next token: sum over the last dimension "
            "(dim=-1, keepdim=True), not over dim 0.",
        ),
        (
            lambda: (c + k) / (c + k).sum(),
            "each row is its own distribution: divide by the row's total, not the whole table's.",
        ),
        (
            lambda: (c + k) / c.sum(-1, keepdim=True),
            "the denominator needs k * V too: each of the V entries of the row got k added.",
        ),
        (
            lambda: (c + k) / (c.sum(-1, keepdim=True) + k),
            "add k once per entry, V times per row: the denominator is the row total + k * V.",
        ),
        (
            lambda: c / c.sum(-1, keepdim=True),
            "add k to every count before normalising.",
        ),
        (
            lambda: (c + k).softmax(-1),
            "probabilities are proportional to counts + k: divide by the row total; softmax "
            "would exponentiate the counts.",
        ),
        (
            lambda: (c + k) / (c.sum(-1, keepdim=True) + k * (V - 1)),
            "every one of the V entries gets k, the denominator is the row total + k * V.",
        ),
    ]


def _random_counts(rng: random.Random, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    counts = torch.randint(0, rng.choice([3, 10, 1000]), shape, generator=g)
    counts[torch.rand(shape, generator=g) < 0.4] = 0
    return counts.to(dtype)


def add_k_smoothing(
    normalize: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 30,
    edge_cases: bool = False,
) -> None:
    """Check ``normalize(counts, k)`` against ``smoothed_probs(counts, k)``: add-k, row by row."""
    inputs: list[tuple[torch.Tensor, float]] = [
        (torch.tensor([[2, 0, 1], [0, 0, 3]]), 0.0),  # [[2/3, 0, 1/3], [0, 0, 1]]
        (torch.tensor([[2, 0, 1], [0, 0, 3]]), 1.0),  # [[3/6, 1/6, 2/6], [1/6, 1/6, 4/6]]
        (torch.tensor([4, 0, 0, 0]), 0.5),  # one row, a 1-D tensor: [4.5, .5, .5, .5] / 6
        (torch.tensor([[0, 0], [1, 3]]), 0.01),  # a context never seen: uniform when k > 0
    ]
    if edge_cases:
        inputs += [
            (torch.tensor([[2, 0, 1], [0, 0, 0]]), 0.0),  # no distribution: ValueError
            (torch.zeros(3, 5, dtype=torch.long), 1.0),
            (torch.tensor([7]), 0.0),  # a vocabulary of one token
            (torch.tensor([[1e9, 1.0, 0.0]], dtype=torch.float64), 1e-6),
            (_random_counts(random.Random(seed), (2, 3, 7), torch.int64), 0.1),  # 3-D
            (_random_counts(random.Random(seed + 1), (65, 65), torch.int64), 0.01),
            (_random_counts(random.Random(seed + 2), (4, 6), torch.float32), 2),  # an int k
            (torch.tensor([[5, 1], [3, 3]], dtype=torch.float64), 100.0),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        shape = (
            (rng.randint(1, 30),)
            if rng.random() < 0.2
            else (rng.randint(1, 12), rng.randint(1, 30))
        )
        counts = _random_counts(rng, shape, rng.choice([torch.int64, torch.int64, torch.float64]))
        k = rng.choice([0.0, 0.001, 0.01, 0.5, 1.0, 3.0])
        if k == 0.0:
            counts[..., rng.randrange(shape[-1])] += 1  # k = 0 needs every row to hold a count
        inputs.append((counts, k))
    for counts, k in inputs:
        where = f"normalize({_show_tensor(counts, 100)}, k={k!r})"
        try:
            expected = smoothed_probs(counts, k)
        except ValueError:
            expected = None
        arg = counts.clone()
        hints = {
            IndexError: "counts can be one row (V,) or a table (V, V), or have more dimensions: "
            "sum over the last dimension with dim=-1, keepdim=True.",
            RuntimeError: "build a new float64 tensor, e.g. counts.to(torch.float64) + k, instead of "
            "changing counts in place.",
        }
        if expected is None:
            try:
                got = normalize(arg, k)
            except NotImplementedError:
                raise
            except ValueError:
                _unchanged(counts, arg, where, "counts")
                continue
            except Exception as e:
                fail(
                    f"{where} raised {type(e).__name__}: {e}\nHint: with k = 0, a row of zeros "
                    "(a context never seen) has no distribution: 0 / 0. Raise ValueError for it."
                )
            shown = _show_tensor(got, 200) if isinstance(got, torch.Tensor) else show(got, 200)
            fail(
                f"{where} returned {shown}, but a row is all zeros and k = 0: 0 / 0 is no "
                "distribution.\nHint: with k = 0, raise ValueError when any row sums to 0, as the "
                "docstring says (check the totals before dividing)."
            )
        got = call(normalize, arg, k, name="normalize", where=where, error_hints=hints)
        _unchanged(counts, arg, where, "counts")
        got = _check_tensor(
            got,
            f"the result of {where}",
            dtype=torch.float64,
            shape=tuple(counts.shape),
            dtype_hint="Convert the counts with counts.to(torch.float64) first: probabilities "
            "are fractions, and float32 keeps only about 7 digits.",
        )
        if _same_tensor(got, expected, exact=False):
            continue
        sums = got.sum(-1)
        notes = []
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-9):
            notes.append(
                f"  your rows sum to {show(sums.flatten().tolist(), 120)}; each must sum to 1"
            )
        _wrong(
            where,
            _show_tensor(expected),
            _show_tensor(got),
            *notes,
            _hint(_diagnose_tensor(got, _normalize_mistakes(counts, k), exact=False)),
        )
    passed("normalize", len(inputs))


# ------------------------------------------------------------- seeded sampling
def _history(value: Any) -> list[int] | None:
    """The history a learner passed to next_token_probs, as a list of ints, or None."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or value.dtype.is_floating_point:
            return None
        return [int(x) for x in value.tolist()]
    if type(value) not in (list, tuple):
        return None
    if not all(type(x) is int for x in value):
        return None
    return list(value)


class _Spy:
    """A model whose distribution depends on the whole history; it records every call."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.calls: list[list[int]] = []
        self.bad: list[Any] = []

    def row(self, history: list[int]) -> int:
        return (7 * len(history) + 3 * sum(history[-2:])) % self.table.shape[0]

    def __call__(self, history: Any) -> torch.Tensor:
        h = _history(history)
        if h is None:
            self.bad.append(history)
            h = []
        self.calls.append(h)
        return self.table[self.row(h)].clone()  # a copy: the learner may not spoil the table


def _reference_run(table: torch.Tensor, context: list[int], num_tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = _generate(_Spy(table), context, num_tokens, g)
    return out, g.get_state()


def _sampling_mistakes(
    model: NextTokenProbs, context: list[int], num_tokens: int, seed: int
) -> list[tuple[Callable[[], list[int]], str]]:
    """What generate would return on this input with each known mistake."""

    def run(pick: Callable[[torch.Tensor, torch.Generator], int]) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        history, out = list(context), []
        for _ in range(num_tokens):
            token = pick(model(list(history)), g)
            out.append(token)
            history.append(token)
        return out

    def twice(p: torch.Tensor, g: torch.Generator) -> int:
        sample_next(p, g)
        return sample_next(p, g)

    return [
        (
            lambda: run(lambda p, g: int(p.argmax())),
            "you always took the most likely token (argmax). Draw it at random instead: "
            "torch.multinomial(probs, 1, generator=generator).",
        ),
        (
            lambda: run(twice),
            "you drew twice per token. Call torch.multinomial exactly once per new token: every "
            "extra draw moves the generator on and changes all later tokens.",
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


def _chain_model(history: Any) -> torch.Tensor:
    h = _history(history)
    return _CHAIN[h[-1] if h else 0].clone()


def _check_distribution(
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
                f"P = {_CHAIN.tolist()}\n{bad}\nHint: each new token must be a random draw from "
                "next_token_probs(history), where history is the context followed by every token "
                "drawn so far: torch.multinomial(probs, 1, generator=generator). Taking the most "
                "likely token, or drawing uniformly, gives these frequencies."
            )


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


def seeded_sampling(
    generate: Callable[..., list[int]],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
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
    model = NGramModel(n=2, vocab_size=5, k=0.5).fit([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 4, 0])
    hand = "generate(model.next_token_probs, [0], 12, torch.Generator().manual_seed(0))"
    recorder = _Recorder(model.next_token_probs)
    got = call(generate, recorder, [0], 12, torch.Generator().manual_seed(0), name="generate",
               where=hand)  # fmt: skip
    got = _check_result(got, hand, [0], 12)
    _check_calls(recorder, hand, [0], got)

    _check_distribution(generate, [seed * 7919 + i for i in range(3 if edge_cases else 2)], 2000)

    def run_model(s: int) -> list[int]:
        return generate(model.next_token_probs, [0], 12, torch.Generator().manual_seed(s))

    expected = model.sample([0], 12, seed=0)
    if got != expected:
        _sampling_failure(
            hand, got, expected, run_model, lambda s: model.sample([0], 12, seed=s), 0,
            _sampling_mistakes(model.next_token_probs, [0], 12, 0),
        )  # fmt: skip
    inputs: list[tuple[torch.Tensor, list[int], int, int]] = [
        (_random_probs(random.Random(1), 3, 5), [2], 10, 0),
        (_random_probs(random.Random(2), 4, 8), [1, 2, 3], 25, 42),
    ]
    if edge_cases:
        inputs += [
            (_random_probs(random.Random(3), 3, 5), [2], 0, 1),  # nothing to generate
            (_random_probs(random.Random(4), 2, 6), [], 8, 2),  # an empty context
            (torch.eye(4, dtype=torch.float64), [1], 10, 3),  # certain tokens: no randomness
            (_random_probs(random.Random(5), 5, 300), [7, 250], 200, 4),
            (_random_probs(random.Random(6), 1, 2), [0], 64, 5),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        vocab_size = rng.randint(2, 40)
        context = [rng.randrange(vocab_size) for _ in range(rng.randint(0, 4))]
        inputs.append(
            (_random_probs(rng, rng.randint(1, 6), vocab_size), context, rng.randint(1, 40),
             rng.randrange(2**31))
        )  # fmt: skip
    for table, context, num_tokens, s in inputs:
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
                gen = torch.Generator().manual_seed(s2)
                return generate(_Spy(table), list(context), num_tokens, gen)  # noqa: B023

            _sampling_failure(
                where, got, expected, rerun,
                lambda s2: _reference_run(table, context, num_tokens, s2)[0],  # noqa: B023
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
    passed("generate", len(inputs) + 1)


def _check_result(got: Any, where: str, context: list[int], num_tokens: int) -> list[int]:
    if type(got) is list and any(isinstance(t, torch.Tensor) for t in got):
        fail(
            f"{where} returned a list of tensors, {show(got, 80)}. Convert each token to an int: "
            "int(torch.multinomial(probs, 1, generator=generator)) or .item()."
        )
    got = check_int_list(got, f"the result of {where}")
    if len(got) != num_tokens:
        hint = ""
        if context and len(got) == len(context) + num_tokens and got[: len(context)] == context:
            hint = "\nHint: return only the new tokens, without the context in front."
        elif abs(len(got) - num_tokens) == 1:
            hint = "\nHint: an off-by-one: make exactly num_tokens draws."
        fail(
            f"{where} must return {num_tokens} new tokens, but it returned {len(got)}: {show(got)}{hint}"
        )
    return got


def _check_calls(spy: _Spy | _Recorder, where: str, context: list[int], got: list[int]) -> None:
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
            f"but it got {show(seen)}.\nHint: {hint}"
        )


def _sampling_failure(
    where: str,
    got: list[int],
    expected: list[int],
    rerun: Callable[[int], list[int]],
    reference: Callable[[int], list[int]],
    seed: int,
    mistakes: list[tuple[Callable[[], Any], str]],
) -> NoReturn:
    """Fail on tokens that differ from the reference's, naming the likely mistake.

    ``rerun(s)`` runs the learner's generate again with seed ``s``, and
    ``reference(s)`` gives the reference's tokens for seed ``s``.
    """
    i = first_difference(got, expected)
    hints = [h for compute, h in mistakes if _reproduces(compute, got)]
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
    if not hints:
        hints.append(
            "your tokens follow the right distribution, but not the same draws: draw each token "
            "with torch.multinomial(probs, 1, generator=generator), exactly once per token, with "
            "the generator you were given. Other ways of sampling (torch.rand with a cumulative "
            "sum, the random module, a different num_samples) draw other random numbers."
        )
    _wrong(
        where, expected, got, f"  first difference at new token {i}", _hint("\n  or: ".join(hints))
    )


def _attempt(rerun: Callable[[int], list[int]], seed: int) -> list[int] | None:
    try:
        return rerun(seed)
    except Exception:
        return None


def _reproduces(compute: Callable[[], Any], got: Any) -> bool:
    try:
        return compute() == got
    except Exception:
        return False


# ------------------------------------------------------------------ perplexity
def _perplexity_mistakes(probs: torch.Tensor, ids: list[int]):
    p = _transition_probs(probs, ids)
    ids_t = torch.tensor(ids)
    return [
        (lambda: float(-p.log2().mean()), "use the natural log (torch.log or math.log): the unit is nats, not bits."),
        (lambda: float(-p.log().sum()), "average over the transitions (divide by len(ids) - 1) instead of summing."),
        (lambda: float(-p.log().sum() / len(ids)), "there are len(ids) - 1 transitions to average over, not len(ids): the first token has no previous token and is not scored."),
        (lambda: float(p.log().mean()), "the negative log: -log p is positive, and larger for less likely tokens."),
        (lambda: float(-p.mean().log()), "average the log-probabilities, not the probabilities: the mean of -log p."),
        (lambda: float(-probs[ids_t[1:], ids_t[:-1]].log().mean()), "probs[a, b] is P(b | a): index with the previous token first, probs[ids[i - 1], ids[i]]."),
        (lambda: float(-probs[ids_t, ids_t].log().mean()), "score each token given the token BEFORE it: probs[ids[i - 1], ids[i]]."),
    ]  # fmt: skip


def _close(got: float, expected: float) -> bool:
    if math.isinf(expected) or math.isinf(got):
        return got == expected
    return abs(got - expected) <= 1e-6 * max(1.0, abs(expected))


def perplexity(
    cross_entropy: Callable[[torch.Tensor, list[int]], float],
    perplexity: Callable[[torch.Tensor, list[int]], float],
    *,
    seed: int = 0,
    cases: int = 30,
    edge_cases: bool = False,
) -> None:
    """Check ``cross_entropy(probs, ids)`` (nats per token) and ``perplexity(probs, ids)``.

    The reference is ``gptcore.ngram.nll`` of ``probs[ids[i - 1], ids[i]]`` for
    i = 1 .. len(ids) - 1, and its exponential.
    """
    uniform = torch.full((4, 4), 0.25, dtype=torch.float64)
    certain = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    inputs: list[tuple[torch.Tensor, list[int]]] = [
        (uniform, [0, 3, 1, 1, 2]),  # ln 4 nats per token; perplexity 4: four equal choices
        (certain, [0, 1, 2, 0, 1]),  # every transition has probability 1: 0 nats, perplexity 1
        (
            torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64),
            [0, 1, 0],
        ),  # ln(1/.5)/2 + ln(1/.9)/2
    ]
    bad_inputs: list[tuple[torch.Tensor, list[int]]] = []
    if edge_cases:
        inputs += [
            (certain, [0, 2]),  # probability 0: infinitely surprised
            (certain, [1, 2, 0, 1, 2, 1]),  # the last transition is impossible
            (uniform, [3, 3]),  # one transition
            (_random_probs(random.Random(seed), 65, 65), [random.Random(seed).randrange(65) for _ in range(5000)]),
        ]  # fmt: skip
        bad_inputs = [(uniform, [2]), (uniform, [])]
    rng = random.Random(seed)
    for _ in range(cases):
        vocab_size = rng.randint(1, 30)
        probs = _random_probs(rng, vocab_size, vocab_size)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        ids = [rng.randrange(vocab_size)]
        for _ in range(rng.randint(1, 60)):  # a sequence the model can produce: no zeros
            ids.append(sample_next(probs[ids[-1]], g))
        inputs.append((probs, ids))
    for fn, name in ((cross_entropy, "cross_entropy"), (perplexity, "perplexity")):
        for probs, ids in bad_inputs:
            where = f"{name}(probs, {ids!r})"
            try:
                got = fn(probs.clone(), list(ids))
            except NotImplementedError:
                raise
            except ValueError:
                continue
            except Exception as e:
                got = f"raised {type(e).__name__}: {e}"
            fail(
                f"{where} gave {show(got, 80)}.\nHint: with fewer than 2 tokens there is no "
                "transition to score; raise ValueError, as the docstring says."
            )
    for probs, ids in inputs:
        expected = _cross_entropy(probs, ids)
        for fn, name in ((cross_entropy, "cross_entropy"), (perplexity, "perplexity")):
            where = f"{name}({_show_tensor(probs, 80)}, {show(ids, 60)})"
            arg = probs.clone()
            hints = {
                ValueError: "a transition with probability 0 must give math.inf (math.log(0) raises; "
                "torch.log gives -inf).",
                OverflowError: "math.exp(math.inf) is math.inf: only convert inf, don't exponentiate a huge number.",
            }
            got = call(fn, arg, ids, name=name, where=where, error_hints=hints)
            _unchanged(probs, arg, where, "probs")
            got = _check_float(got, f"the result of {where}")
            want = expected if name == "cross_entropy" else math.exp(expected)
            if _close(got, want):
                continue
            if name == "cross_entropy":
                mistakes = _perplexity_mistakes(probs, ids)
            else:
                mistakes = [
                    (lambda: math.exp(-expected), "perplexity = exp(+cross-entropy)."),  # noqa: B023
                    (lambda: 2**expected, "the cross-entropy is in nats: perplexity = math.exp(cross_entropy), not 2 ** it."),  # noqa: B023
                    (lambda: expected, "perplexity is exp(cross-entropy), not the cross-entropy itself."),  # noqa: B023
                    (lambda: 1 / float(_transition_probs(probs, ids).mean()), "perplexity is exp of the mean of -log p: a geometric mean, not 1 / the mean probability."),  # noqa: B023
                ]  # fmt: skip
            hint = next((h for compute, h in mistakes if _close_safe(compute, got)), "")
            if not hint and math.isinf(want):
                hint = "a transition with probability 0 makes the cross-entropy (and the perplexity) math.inf."
            _wrong(where, want, got, _hint(hint))
    passed("cross_entropy and perplexity", 2 * len(inputs) + 2 * len(bad_inputs))


def _close_safe(compute: Callable[[], float], got: float) -> bool:
    try:
        return _close(got, float(compute()))
    except Exception:
        return False


# -------------------------------------------------------- put it together
def bigram_shakespeare(
    count_bigrams: Callable[[list[int], int], torch.Tensor],
    normalize: Callable[[torch.Tensor, float], torch.Tensor],
    generate: Callable[..., list[int]],
    perplexity: Callable[[torch.Tensor, list[int]], float],
    *,
    k: float = 0.01,
    seed: int = 0,
    context: str = "ROMEO:\n",
    num_tokens: int = 300,
) -> None:
    """Your four pieces, as one character-level bigram model of Tiny Shakespeare.

    The table must equal gptcore's ``NGramModel(n=2, k=k)`` distributions, the
    text sampled from it must equal ``NGramModel.sample`` token for token, and
    the validation perplexity must match.
    """
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    train, val = train_val_split(tok.encode(text))
    V = tok.vocab_size
    model = NGramModel(n=2, vocab_size=V, k=k).fit(train)
    reference = torch.stack([model.next_token_probs([a]) for a in range(V)])
    step = "your table: normalize(count_bigrams(train, V), k)"
    counts = call(count_bigrams, train, V, name="count_bigrams",
                  where=f"count_bigrams(train, {V}) on Tiny Shakespeare's training characters")  # fmt: skip
    counts = _check_tensor(counts, "count_bigrams(train, V)", dtype=torch.int64, shape=(V, V))
    table = call(normalize, counts, k, name="normalize", where=f"normalize(counts, k={k})")
    table = _check_tensor(table, "normalize(counts, k)", dtype=torch.float64, shape=(V, V))
    if not torch.allclose(table, reference, rtol=1e-9, atol=0.0):
        a = int((table - reference).abs().amax(-1).argmax())
        fail(
            f"{step} differs from gptcore's NGramModel(n=2, k={k}) on Tiny Shakespeare: in the "
            f"row of character {tok.decode([a])!r}, the largest difference is "
            f"{float((table[a] - reference[a]).abs().max()):.3g}.\nHint: run the checks of "
            "exercises 1 and 2 first; they try smaller inputs and name the mistake."
        )
    prompt = tok.encode(context)
    got = call(generate, lambda h: table[h[-1]], prompt, num_tokens,
               torch.Generator().manual_seed(seed), name="generate",
               where=f"generate(lambda h: table[h[-1]], encode({context!r}), {num_tokens}, generator)")  # fmt: skip
    got = check_int_list(got, "the tokens generated from your table")
    expected = model.sample(prompt, num_tokens, seed=seed)
    if got != expected:
        i = first_difference(got, expected)
        fail(
            f"the text sampled from your table with seed {seed} differs from gptcore's "
            f"NGramModel.sample from character {i} on.\n  expected: {tok.decode(expected)[:120]!r}\n"
            f"  got:      {tok.decode([t for t in got if 0 <= t < V])[:120]!r}\nHint: run the "
            "check of exercise 3 first."
        )
    want = math.exp(_cross_entropy(reference, val))
    got_ppl = _check_float(
        call(perplexity, table, val, name="perplexity", where="perplexity(table, val)"),
        "perplexity(table, val)",
    )
    if not _close(got_ppl, want):
        fail(
            f"perplexity(table, val) on Tiny Shakespeare's validation characters is {got_ppl!r}, "
            f"but gptcore's bigram model gives {want!r}.\nHint: run the check of exercise 4 first."
        )
    print(f"✓ your bigram model of Tiny Shakespeare (k={k}): the same table, the same "
          f"{num_tokens} sampled characters and the same validation perplexity ({want:.3f}) "
          "as gptcore's NGramModel(n=2)")  # fmt: skip
