"""gptcore.ngram: counts, smoothing variants, sampling, scoring, errors."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from gptcore.ngram import (
    NGramModel,
    count_ngrams,
    ngram_baselines,
    nll,
    perplexity,
    sample_next,
    smoothed_probs,
)

CORPUS = [0, 1, 0, 2, 0, 1]  # bigrams: 01 x2, 10, 02, 20


def test_hand_checkable_bigram():
    m = NGramModel(n=2, vocab_size=3, k=0.0).fit(CORPUS)
    assert m.count([0, 1]) == 2 and m.count([0]) == 3 and m.count([]) == 6
    assert m.next_token_probs([0]).tolist() == [0.0, 2 / 3, 1 / 3]
    assert m.next_token_probs([5 - 4]).tolist() == [1.0, 0.0, 0.0]  # after 1 always 0
    # Laplace: (c + 1) / (3 + 3) after token 0.
    lap = NGramModel(n=2, vocab_size=3, k=1.0).fit(CORPUS)
    assert lap.next_token_probs([0]).tolist() == pytest.approx([1 / 6, 3 / 6, 2 / 6])


def test_count_ngrams_matches_counter():
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    for n in range(1, 5):
        want = Counter(tuple(ids[i : i + n]) for i in range(len(ids) - n + 1))
        assert count_ngrams(ids, n) == want
    assert count_ngrams([1], 2) == Counter()


def test_smoothed_probs_rows_sum_to_one_and_reject_empty_rows():
    counts = torch.tensor([[1, 0, 3], [0, 0, 0]])
    p = smoothed_probs(counts, k=0.5)
    assert p.dtype == torch.float64 and p.shape == (2, 3)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    assert p[0].tolist() == pytest.approx([1.5 / 5.5, 0.5 / 5.5, 3.5 / 5.5])
    assert p[1].tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="use k > 0"):
        smoothed_probs(counts, k=0.0)
    with pytest.raises(ValueError, match="k >= 0"):
        smoothed_probs(counts, k=-1)


@pytest.mark.parametrize("smoothing", ["add_k", "backoff", "interpolate"])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_every_variant_is_a_distribution(smoothing, n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 7, (400,), generator=g).tolist()
    for k in (0.0, 0.1):
        m = NGramModel(n=n, vocab_size=8, k=k, smoothing=smoothing).fit(ids)
        for ctx in ([], [1], [7, 7, 7, 7], ids[:10]):
            p = m.next_token_probs(ctx)
            assert p.shape == (8,) and p.dtype == torch.float64
            assert float(p.sum()) == pytest.approx(1.0) and bool((p >= 0).all())


def test_unseen_context_fallbacks():
    ids = [0, 1, 2, 0, 1, 2]
    # Context (2, 2) never occurs; with k = 0 add_k and backoff fall back to context (2,).
    for smoothing in ("add_k", "backoff"):
        m = NGramModel(n=3, vocab_size=4, k=0.0, smoothing=smoothing).fit(ids)
        assert m.next_token_probs([2, 2]).tolist() == [1.0, 0.0, 0.0, 0.0]
    # With k > 0, add_k keeps the order: an unseen context is uniform.
    m = NGramModel(n=3, vocab_size=4, k=1.0).fit(ids)
    assert m.next_token_probs([2, 2]).tolist() == [0.25] * 4
    # Backoff with k > 0 still prefers the longest *seen* context.
    b = NGramModel(n=3, vocab_size=4, k=1.0, smoothing="backoff").fit(ids)
    assert b.next_token_probs([2, 2]).tolist() == pytest.approx([2 / 5, 1 / 5, 1 / 5, 1 / 5])


def test_interpolation_mixes_orders():
    ids = [0, 1, 0, 2, 0, 1]
    m = NGramModel(n=2, vocab_size=3, k=0.0, smoothing="interpolate", lambdas=(0.25, 0.75)).fit(ids)
    uni = torch.tensor([3 / 6, 2 / 6, 1 / 6], dtype=torch.float64)
    bi = torch.tensor([0, 2 / 3, 1 / 3], dtype=torch.float64)
    assert torch.allclose(m.next_token_probs([0]), 0.25 * uni + 0.75 * bi)


def test_cross_entropy_and_perplexity_by_hand():
    m = NGramModel(n=2, vocab_size=3, k=0.0).fit(CORPUS)
    # Scored: 0 from the unigram (3/6), then 1|0 (2/3), 0|1 (1).
    want = -(math.log(0.5) + math.log(2 / 3) + math.log(1.0)) / 3
    assert m.cross_entropy([0, 1, 0]) == pytest.approx(want)
    assert m.perplexity([0, 1, 0]) == pytest.approx(math.exp(want))
    assert m.cross_entropy([1, 2]) == math.inf and m.perplexity([1, 2]) == math.inf
    assert nll([0.5, 0.25]) == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert perplexity([0.25] * 4) == pytest.approx(4.0)


def test_uniform_model_perplexity_is_vocab_size():
    m = NGramModel(n=1, vocab_size=10, k=1e9).fit([0, 1, 2])
    assert m.perplexity(list(range(10))) == pytest.approx(10.0, rel=1e-6)


def test_sampling_is_seeded_and_follows_the_distribution():
    m = NGramModel(n=2, vocab_size=3, k=0.0).fit(CORPUS)
    a = m.sample([0], 50, seed=123)
    assert a == m.sample([0], 50, seed=123) and a != m.sample([0], 50, seed=124)
    assert all(isinstance(t, int) for t in a)
    # After a 1 comes a 0 with probability 1; after 2 always 0 too.
    seq = [0, *a]
    assert all(nxt == 0 for prev, nxt in itertools.pairwise(seq) if prev in (1, 2))
    g = torch.Generator().manual_seed(0)
    draws = Counter(sample_next(m.next_token_probs([0]), g) for _ in range(6000))
    assert draws[0] == 0 and abs(draws[1] / 6000 - 2 / 3) < 0.03


def test_unseen_fraction():
    m = NGramModel(n=2, vocab_size=3).fit(CORPUS)
    assert m.unseen_fraction([0, 1, 0, 1]) == 0.0
    assert m.unseen_fraction([1, 1, 2, 2]) == 1.0
    assert m.unseen_fraction([0, 1, 1]) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "vocab_size": 3}, "n >= 1"),
        ({"n": 2, "vocab_size": 3, "k": -0.5}, "k >= 0"),
        ({"n": 2, "vocab_size": 0}, "vocab_size"),
        ({"n": 2, "vocab_size": 3, "smoothing": "kneser"}, "choose"),
        ({"n": 2, "vocab_size": 3, "smoothing": "interpolate", "lambdas": (0.5, 0.6)}, "sum to 1"),
        ({"n": 2, "vocab_size": 3, "lambdas": (0.5, 0.5)}, "only apply"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramModel(**kwargs)


def test_bad_inputs():
    m = NGramModel(n=2, vocab_size=3)
    with pytest.raises(ValueError, match="not been fitted"):
        m.next_token_probs([0])
    with pytest.raises(ValueError, match="empty corpus"):
        m.fit([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.fit([0, 1, 3])
    with pytest.raises(ValueError, match="not an int"):
        m.fit([0, 1.0])
    m.fit(CORPUS)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.next_token_probs([7])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.cross_entropy([0, -1])
    with pytest.raises(ValueError, match="empty"):
        m.cross_entropy([])
    with pytest.raises(ValueError, match="num_tokens"):
        m.sample([0], -1)


def test_tensor_inputs_work():
    m = NGramModel(n=2, vocab_size=3, k=0.1).fit(torch.tensor(CORPUS))
    assert m.cross_entropy(torch.tensor([0, 1])) == m.cross_entropy([0, 1])


def test_baselines_on_shakespeare_chars(shakespeare):
    from gptcore.tokenizer import CharTokenizer

    text = shakespeare[:200_000]
    tok = CharTokenizer.from_text(shakespeare)
    rows = ngram_baselines(tok.encode(text), tok.vocab_size, ns=(1, 2, 3), k=0.01)
    assert [r["n"] for r in rows] == [1, 2, 3]
    val = [r["val_loss"] for r in rows]
    train = [r["train_loss"] for r in rows]
    assert val[0] > val[1] > val[2], "more context helps at small n"
    assert train[2] < val[2], "the gap between train and validation opens as n grows"
    assert 3.0 < val[0] < math.log(tok.vocab_size)
    assert rows[0]["val_unseen"] <= rows[1]["val_unseen"] <= rows[2]["val_unseen"]
