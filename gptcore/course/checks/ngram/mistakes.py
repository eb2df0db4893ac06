"""Lesson 2's references, random inputs and tables of known mistakes.

The references wrap gptcore's n-gram model (``gptcore.ngram``). Each
``*_mistakes`` function returns, for one input, a table of (hint, what a
function with that mistake returns), evaluated lazily by the framework's
``diagnose`` / ``recognise``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from gptcore.ngram import count_ngrams, nll

from ..report import Mistakes


# ------------------------------------------------------------------ references
def bigram_table(ids: Sequence[int], vocab_size: int) -> torch.Tensor:
    counts = torch.zeros((vocab_size, vocab_size), dtype=torch.int64)
    for (a, b), c in count_ngrams(list(ids), 2).items():
        counts[a, b] = c
    return counts


def transition_probs(probs: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    ids_t = torch.tensor(list(ids), dtype=torch.long)
    return probs[ids_t[:-1], ids_t[1:]]


def cross_entropy(probs: torch.Tensor, ids: Sequence[int]) -> float:
    return nll(transition_probs(probs, ids))


# ------------------------------------------------------------- random inputs
def random_ids(rng: random.Random, vocab_size: int, max_len: int) -> list[int]:
    # A few distinct ids, so that pairs repeat; the largest ids often never occur.
    alphabet = rng.sample(range(vocab_size), min(vocab_size, rng.randint(1, 6)))
    return [rng.choice(alphabet) for _ in range(rng.randint(0, max_len))]


def random_probs(rng: random.Random, rows: int, vocab_size: int) -> torch.Tensor:
    """A (rows, V) float64 table whose rows are distributions, some entries exactly 0."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    weights = torch.rand((rows, vocab_size), generator=g, dtype=torch.float64) ** 2
    weights[torch.rand((rows, vocab_size), generator=g) < 0.3] = 0.0
    weights[torch.arange(rows), torch.randint(vocab_size, (rows,), generator=g)] += 0.1
    return weights / weights.sum(-1, keepdim=True)


def random_counts(rng: random.Random, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    counts = torch.randint(0, rng.choice([3, 10, 1000]), shape, generator=g)
    counts[torch.rand(shape, generator=g) < 0.4] = 0
    return counts.to(dtype)


# ------------------------------------------------------------ known mistakes
def count_mistakes(ids: list[int], vocab_size: int) -> Mistakes:
    def ref(seq: Sequence[int]) -> torch.Tensor:
        return bigram_table(seq, vocab_size)

    return [
        (
            "row = the earlier token, column = the token that follows it: counts[ids[i], ids[i + 1]].",
            lambda: ref(ids).T,
        ),
        (
            "you missed the last pair (ids[-2], ids[-1]): pairs start at positions 0 .. len(ids) - 2.",
            lambda: ref(ids[:-1]),
        ),
        (
            "you missed the first pair (ids[0], ids[1]): pairs start at position 0.",
            lambda: ref(ids[1:]),
        ),
        (
            "the last token has no next token: do not wrap around to ids[0].",
            lambda: ref([*ids, ids[0]]) if ids else None,
        ),
        (
            "count how many times each pair occurs, not only whether it occurs.",
            lambda: (ref(ids) > 0).long(),
        ),
    ]


def smoothing_mistakes(counts: torch.Tensor, k: float) -> Mistakes:
    c = counts.to(torch.float64)
    V = c.shape[-1]
    return [
        (
            "each ROW is a distribution over the next token: sum over the last dimension "
            "(dim=-1, keepdim=True), not over dim 0.",
            lambda: (c + k) / (c + k).sum(0, keepdim=True),
        ),
        (
            "each row is its own distribution: divide by the row's total, not the whole table's.",
            lambda: (c + k) / (c + k).sum(),
        ),
        (
            "the denominator needs k * V too: each of the V entries of the row got k added.",
            lambda: (c + k) / c.sum(-1, keepdim=True),
        ),
        (
            "add k once per entry, V times per row: the denominator is the row total + k * V.",
            lambda: (c + k) / (c.sum(-1, keepdim=True) + k),
        ),
        ("add k to every count before normalising.", lambda: c / c.sum(-1, keepdim=True)),
        (
            "probabilities are proportional to counts + k: divide by the row total; softmax "
            "would exponentiate the counts.",
            lambda: (c + k).softmax(-1),
        ),
        (
            "every one of the V entries gets k, the denominator is the row total + k * V.",
            lambda: (c + k) / (c.sum(-1, keepdim=True) + k * (V - 1)),
        ),
    ]


def cross_entropy_mistakes(probs: torch.Tensor, ids: list[int]) -> Mistakes:
    p = transition_probs(probs, ids)
    ids_t = torch.tensor(ids)
    return [
        ("use the natural log (torch.log or math.log): the unit is nats, not bits.", lambda: float(-p.log2().mean())),
        ("average over the transitions (divide by len(ids) - 1) instead of summing.", lambda: float(-p.log().sum())),
        ("there are len(ids) - 1 transitions to average over, not len(ids): the first token has no previous token and is not scored.", lambda: float(-p.log().sum() / len(ids))),
        ("the negative log: -log p is positive, and larger for less likely tokens.", lambda: float(p.log().mean())),
        ("average the log-probabilities, not the probabilities: the mean of -log p.", lambda: float(-p.mean().log())),
        ("probs[a, b] is P(b | a): index with the previous token first, probs[ids[i - 1], ids[i]].", lambda: float(-probs[ids_t[1:], ids_t[:-1]].log().mean())),
        ("score each token given the token BEFORE it: probs[ids[i - 1], ids[i]].", lambda: float(-probs[ids_t, ids_t].log().mean())),
    ]  # fmt: skip


def perplexity_mistakes(probs: torch.Tensor, ids: list[int], ce: float) -> Mistakes:
    """Mistakes in perplexity(probs, ids), given the right cross-entropy ``ce``."""
    return [
        ("perplexity = exp(+cross-entropy).", lambda: math.exp(-ce)),
        ("the cross-entropy is in nats: perplexity = math.exp(cross_entropy), not 2 ** it.", lambda: 2**ce),
        ("perplexity is exp(cross-entropy), not the cross-entropy itself.", ce),
        ("perplexity is exp of the mean of -log p: a geometric mean, not 1 / the mean probability.", lambda: 1 / float(transition_probs(probs, ids).mean())),
    ]  # fmt: skip
