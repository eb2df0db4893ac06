"""Count-based n-gram language models over token ids.

An n-gram model predicts the next token from the previous ``n - 1`` tokens
alone, with probabilities read off counts in a training corpus:

    P(w | ctx) = (count(ctx + w) + k) / (count(ctx) + k * V)          (add-k)

Three ways to handle contexts the corpus never showed:

- ``"add_k"``: add ``k`` to every count (``k = 1`` is Laplace smoothing). A
  context never seen at all gives the uniform distribution when ``k > 0``; with
  ``k = 0`` it falls back to the longest shorter context that was seen.
- ``"backoff"``: use the longest context (n-1, n-2, ..., 0 tokens) that occurs
  in training, add-k smoothed at that order.
- ``"interpolate"``: mix the add-k estimates of every order 1..n with weights
  ``lambdas``; orders whose context was never seen drop out and the remaining
  weights are renormalised.

Every variant is a proper distribution over the vocabulary. The first tokens of
a sequence, which have fewer than ``n - 1`` predecessors, are predicted from the
shorter context they do have, so models of every order score the same tokens
and their losses can be compared directly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from .data import train_val_split

__all__ = [
    "NGramModel",
    "count_ngrams",
    "ngram_baselines",
    "nll",
    "perplexity",
    "sample_next",
    "smoothed_probs",
]

Smoothing = Literal["add_k", "backoff", "interpolate"]


def _as_ids(tokens: Iterable[int] | torch.Tensor, vocab_size: int, what: str) -> list[int]:
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    ids = list(tokens)
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int):
            raise ValueError(f"{what}[{i}] = {t!r} is not an int token id")
        if not 0 <= t < vocab_size:
            raise ValueError(
                f"{what}[{i}] = {t} is outside the vocabulary 0..{vocab_size - 1}; "
                "was the text encoded with another tokenizer?"
            )
    return ids


# ------------------------------------------------------------ building blocks
def count_ngrams(tokens: Sequence[int], n: int) -> Counter[tuple[int, ...]]:
    """How often each run of ``n`` consecutive tokens occurs: {(t0, ..., t{n-1}): count}.

    >>> count_ngrams([1, 2, 1, 2], 2)
    Counter({(1, 2): 2, (2, 1): 1})
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an int >= 1")
    return Counter(zip(*(tokens[i:] for i in range(n))))


def smoothed_probs(counts: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Add-k smoothing: turn counts (..., V) into next-token probabilities (..., V).

    P(w) = (count(w) + k) / (sum of counts + k * V), row by row. With k = 0 a
    row of zeros has no distribution, and raises.
    """
    if not isinstance(counts, torch.Tensor) or counts.ndim < 1:
        raise ValueError("counts must be a tensor whose last dimension is the vocabulary")
    if k < 0:
        raise ValueError(f"k={k!r}: add-k smoothing needs k >= 0")
    counts = counts.to(torch.float64) + k
    totals = counts.sum(-1, keepdim=True)  # (..., 1)
    if bool((totals == 0).any()):
        raise ValueError("a context with no counts has no distribution when k=0; use k > 0")
    return counts / totals


def sample_next(probs: torch.Tensor, generator: torch.Generator) -> int:
    """Draw one token id from a distribution (V,), reproducibly for a seeded generator."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def nll(target_probs: Sequence[float] | torch.Tensor) -> float:
    """Mean negative log of the probabilities given to the actual tokens: nats per token."""
    p = torch.as_tensor(target_probs, dtype=torch.float64)
    if p.numel() == 0:
        raise ValueError("cannot score an empty sequence")
    return float(-p.log().mean())


def perplexity(target_probs: Sequence[float] | torch.Tensor) -> float:
    """exp(nll): the number of equally likely choices that would be as surprising."""
    return math.exp(nll(target_probs))


@dataclass(eq=False)
class NGramModel:
    """An n-gram model; ``fit`` it on token ids, then query, sample and score.

    >>> m = NGramModel(n=2, vocab_size=3, k=0.0).fit([0, 1, 0, 2, 0, 1])
    >>> m.prob([0], 1), m.prob([0], 2), m.prob([1], 0)
    (0.6666666666666666, 0.3333333333333333, 1.0)
    """

    n: int
    vocab_size: int
    k: float = 1.0
    smoothing: Smoothing = "add_k"
    lambdas: Sequence[float] | None = None  # interpolation weights of orders 1..n
    _grams: list[Counter[tuple[int, ...]]] = field(default_factory=list, init=False, repr=False)
    _index: dict[int, dict[tuple[int, ...], tuple[list[int], list[int]]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(
                f"n={self.n!r}: an n-gram model needs an int n >= 1 (n=1 is a unigram)"
            )
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ValueError(f"vocab_size={self.vocab_size!r} must be a positive int")
        if not isinstance(self.k, (int, float)) or self.k < 0 or math.isnan(self.k):
            raise ValueError(f"k={self.k!r}: add-k smoothing needs k >= 0 (k=1 is Laplace)")
        if self.smoothing not in ("add_k", "backoff", "interpolate"):
            raise ValueError(
                f"smoothing={self.smoothing!r}: choose 'add_k', 'backoff' or 'interpolate'"
            )
        if self.smoothing == "interpolate":
            lam = (
                [1.0 / self.n] * self.n
                if self.lambdas is None
                else [float(x) for x in self.lambdas]
            )
            if len(lam) != self.n or any(x < 0 for x in lam) or not math.isclose(sum(lam), 1.0):
                raise ValueError(
                    f"lambdas={self.lambdas!r}: give {self.n} non-negative weights "
                    "(orders 1..n) that sum to 1"
                )
            self.lambdas = tuple(lam)
        elif self.lambdas is not None:
            raise ValueError("lambdas only apply to smoothing='interpolate'")

    # ------------------------------------------------------------------ counts
    def fit(self, tokens: Iterable[int] | torch.Tensor) -> NGramModel:
        """Count every m-gram, m = 1..n, in ``tokens``. Returns self."""
        ids = _as_ids(tokens, self.vocab_size, "tokens")
        if not ids:
            raise ValueError("cannot fit an n-gram model on an empty corpus")
        # _grams[m] counts m-grams; _grams[0][()] is the number of tokens, so the
        # empty context of the unigram has a count like every other context.
        self._grams = [Counter({(): len(ids)})]
        for m in range(1, self.n + 1):
            self._grams.append(count_ngrams(ids, m))
        self._index = {}
        return self

    def _check_fitted(self) -> None:
        if not self._grams:
            raise ValueError("this model has not been fitted; call fit(train_tokens) first")

    def count(self, gram: Sequence[int]) -> int:
        """How often the token sequence ``gram`` (length 0..n) occurred in training."""
        self._check_fitted()
        gram = tuple(gram)
        if len(gram) > self.n:
            raise ValueError(f"this model counts sequences of at most n={self.n} tokens")
        return self._grams[len(gram)].get(gram, 0)

    def _context_count(self, ctx: tuple[int, ...]) -> int:
        # Contexts are counted as prefixes of (len+1)-grams, so count(ctx) is
        # exactly the number of times ctx was followed by some token.
        if not ctx:
            return self._grams[0][()]
        m = len(ctx) + 1
        if m not in self._index:
            self._build_index(m)
        entry = self._index[m].get(ctx)
        return 0 if entry is None else sum(entry[1])

    def _build_index(self, m: int) -> None:
        """context -> (next ids, counts), for whole-distribution queries of order m."""
        groups: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}
        for gram, c in self._grams[m].items():
            ws, cs = groups.setdefault(gram[:-1], ([], []))
            ws.append(gram[-1])
            cs.append(c)
        # Plain lists: tensors are made per query. Making two per context here
        # took seconds for GPT-2's hundreds of thousands of contexts.
        self._index[m] = groups

    def _order_probs(self, ctx: tuple[int, ...]) -> torch.Tensor | None:
        """Add-k distribution of order len(ctx)+1, or None if ctx was never seen and k = 0."""
        m = len(ctx) + 1
        if m not in self._index:
            self._build_index(m)
        V, k = self.vocab_size, float(self.k)
        entry = self._index[m].get(ctx)
        if entry is None:
            return None if k == 0 else torch.full((V,), 1.0 / V, dtype=torch.float64)
        ws, cs = entry
        counts = torch.zeros(V, dtype=torch.float64)
        counts[torch.tensor(ws)] = torch.tensor(cs, dtype=torch.float64)
        return smoothed_probs(counts, k)

    # ----------------------------------------------------------- distributions
    def _context(self, context: Sequence[int] | torch.Tensor) -> tuple[int, ...]:
        ids = _as_ids(context, self.vocab_size, "context")
        return tuple(ids[len(ids) - (self.n - 1) :]) if self.n > 1 else ()

    def next_token_probs(self, context: Sequence[int] | torch.Tensor = ()) -> torch.Tensor:
        """P(next token | the last n-1 tokens of ``context``), a float64 tensor of shape (V,)."""
        self._check_fitted()
        ctx = self._context(context)
        if self.smoothing == "interpolate":
            assert self.lambdas is not None
            total = torch.zeros(self.vocab_size, dtype=torch.float64)
            weight = 0.0
            for m in range(1, len(ctx) + 2):
                probs = self._order_probs(ctx[len(ctx) - (m - 1) :] if m > 1 else ())
                if probs is not None:
                    total += self.lambdas[m - 1] * probs
                    weight += self.lambdas[m - 1]
            if weight == 0:  # only possible when the unigram weight is 0 and nothing else was seen
                return torch.full((self.vocab_size,), 1.0 / self.vocab_size, dtype=torch.float64)
            return total / weight
        # add_k and backoff: the longest usable context wins.
        for start in range(len(ctx) + 1):
            sub = ctx[start:]
            if self.smoothing == "backoff" and sub and self._context_count(sub) == 0:
                continue
            probs = self._order_probs(sub)
            if probs is not None:
                return probs
        raise AssertionError("the empty context is always seen in a fitted model")

    def prob(self, context: Sequence[int], token: int) -> float:
        """P(token | context)."""
        if (
            isinstance(token, bool)
            or not isinstance(token, int)
            or not 0 <= token < self.vocab_size
        ):
            raise ValueError(f"token {token!r} is outside the vocabulary 0..{self.vocab_size - 1}")
        return float(self.next_token_probs(context)[token])

    # ---------------------------------------------------------------- sampling
    def sample(
        self,
        context: Sequence[int],
        num_tokens: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Extend ``context`` by ``num_tokens`` sampled tokens; returns only the new ones.

        Each step draws ``torch.multinomial(probs, 1, generator=g)`` with
        ``g = torch.Generator().manual_seed(seed)``: the same seed gives the same text.
        """
        if not isinstance(num_tokens, int) or num_tokens < 0:
            raise ValueError(f"num_tokens={num_tokens!r} must be an int >= 0")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        history = list(_as_ids(context, self.vocab_size, "context"))
        out: list[int] = []
        for _ in range(num_tokens):
            probs = self.next_token_probs(history[-(self.n - 1) :] if self.n > 1 else ())
            nxt = sample_next(probs, generator)
            out.append(nxt)
            history.append(nxt)
        return out

    # ----------------------------------------------------------------- scoring
    def cross_entropy(self, tokens: Sequence[int] | torch.Tensor) -> float:
        """Mean negative log-likelihood of ``tokens``, in nats per token.

        Every token is scored, the first ones from the shorter context they
        have. A token the model gives probability 0 makes the result ``inf``.
        """
        self._check_fitted()
        ids = _as_ids(tokens, self.vocab_size, "tokens")
        if not ids:
            raise ValueError("cannot score an empty sequence")
        # Group positions by context: each (V,) distribution is built once and
        # dropped after use. Keeping them all would need gigabytes for GPT-2's
        # 50,257 tokens (one float64 vector per distinct context).
        positions: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(ids)):
            positions.setdefault(tuple(ids[max(0, i - self.n + 1) : i]), []).append(i)
        target_probs = [0.0] * len(ids)
        for ctx, where in positions.items():
            probs = self.next_token_probs(ctx)
            for i in where:
                target_probs[i] = float(probs[ids[i]])
        return nll(target_probs)

    def perplexity(self, tokens: Sequence[int] | torch.Tensor) -> float:
        """exp(cross-entropy): the effective number of equally likely choices per token."""
        ce = self.cross_entropy(tokens)
        return math.inf if math.isinf(ce) else math.exp(ce)

    def unseen_fraction(self, tokens: Sequence[int] | torch.Tensor) -> float:
        """Share of the n-grams of ``tokens`` that never occurred in training."""
        self._check_fitted()
        ids = _as_ids(tokens, self.vocab_size, "tokens")
        grams = list(zip(*(ids[i:] for i in range(self.n))))
        if not grams:
            raise ValueError(f"need at least n={self.n} tokens")
        seen = self._grams[self.n]
        return sum(g not in seen for g in grams) / len(grams)


def ngram_baselines(
    tokens: Sequence[int] | torch.Tensor,
    vocab_size: int,
    ns: Iterable[int] = range(1, 6),
    *,
    val_fraction: float = 0.1,
    max_eval_tokens: int | None = None,
    **model_kwargs,
) -> list[dict[str, float]]:
    """Train and validation loss (nats/token) of n-gram models on the standard split.

    The split is ``gptcore.data.train_val_split``, the same one the GPT lessons
    use, so these numbers sit on the same axis as a GPT's loss curve.
    """
    ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    train, val = train_val_split(ids, val_fraction)
    if max_eval_tokens is not None:
        train_eval, val = train[:max_eval_tokens], val[:max_eval_tokens]
    else:
        train_eval = train
    rows = []
    for n in ns:
        model = NGramModel(n=n, vocab_size=vocab_size, **model_kwargs).fit(train)
        rows.append(
            {
                "n": n,
                "train_loss": model.cross_entropy(train_eval),
                "val_loss": model.cross_entropy(val),
                "val_unseen": model.unseen_fraction(val),
            }
        )
    return rows
