"""Checks for lesson 2 (n-gram language models): counts, add-k smoothing, sampling, perplexity.

Each check compares the learner's function with gptcore's n-gram reference
(``gptcore.ngram``) on hand-checkable examples, then on ``cases`` random
inputs drawn from ``random.Random(seed)``. Every call also runs the inputs at
the edges of the contract (empty or one-token sequences, a row of zeros with
``k = 0``, probability-0 transitions, tensors with more than two dimensions,
zero new tokens): the visible test cells grade every rule the hidden ones do,
which only add other seeds and more cases.

Tensors must be exactly ``torch.Tensor`` with the dtype and shape the
docstring names; floats must be exactly ``float``. Values are compared only
after those checks, with torch's own comparisons or as plain floats, so an
object whose ``__eq__`` always answers True cannot pass.

The sampling check lives in ``sampling.py``; the references, random inputs
and tables of known mistakes in ``mistakes.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch

from gptcore import ngram as ref
from gptcore.data import load_text, train_val_split
from gptcore.tokenizer import CharTokenizer

from ..report import (
    call,
    check,
    describe_call,
    diagnose,
    fail,
    first_difference,
    not_written,
    passed,
    show,
    show_tensor,
    unchanged,
    wrong,
)
from ..tensors import check_tensor, matches, recognise
from ..values import check_float, check_int_list, close
from . import mistakes as known
from .sampling import generate

__all__ = ["bigram_shakespeare", "count_bigrams", "generate", "perplexity", "smoothed_probs"]

Probs = Callable[[torch.Tensor, list[int]], float]


# ---------------------------------------------------------------- bigram counts
def _count_inputs(seed: int, cases: int
) -> list[tuple[list[int], int]]:
    inputs: list[tuple[list[int], int]] = [
        ([0, 1, 2, 0, 1], 3),  # [[0, 2, 0], [0, 0, 1], [1, 0, 0]]
        ([1, 1, 1], 2),  # overlapping pairs both count: [[0, 0], [0, 2]]
        ([3, 0, 3], 6),  # tokens 1, 2, 4 and 5 never occur, but still get a row and a column
    ]
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
        inputs.append((known.random_ids(rng, vocab_size, 60), vocab_size))
    return inputs


@check()
def count_bigrams(
    count_bigrams: Callable[[list[int], int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 40,
) -> None:
    """Check ``count_bigrams(ids, vocab_size)`` against ``count_ngrams(ids, 2)`` as a (V, V) table."""
    inputs = _count_inputs(seed, cases)
    hints = {
        IndexError: "the table has vocab_size rows and vocab_size columns, whatever ids occur: "
        "start from torch.zeros((vocab_size, vocab_size), dtype=torch.long).",
    }
    for ids, vocab_size in inputs:
        where = describe_call("count_bigrams", ids, vocab_size)
        got = call(
            count_bigrams, ids, vocab_size, name="count_bigrams", where=where, error_hints=hints
        )
        got = check_tensor(
            got,
            f"the result of {where}",
            dtype=torch.int64,
            shape=(vocab_size, vocab_size),
            dtype_hint="counts are whole numbers: create the table with dtype=torch.long (int64).",
        )
        expected = known.bigram_table(ids, vocab_size)
        if not torch.equal(got, expected):
            a, b = (got != expected).nonzero()[0].tolist()
            wrong(
                where,
                show_tensor(expected),
                show_tensor(got),
                f"  first wrong cell: counts[{a}, {b}] should be {int(expected[a, b])}, "
                f"not {int(got[a, b])}",
                hint_text=recognise(got, known.count_mistakes(ids, vocab_size), atol=0, rtol=0),
            )
    passed("count_bigrams", len(inputs))


# ------------------------------------------------------------- add-k smoothing
def _smoothing_inputs(seed: int, cases: int
) -> list[tuple[torch.Tensor, float]]:
    inputs: list[tuple[torch.Tensor, float]] = [
        (torch.tensor([[2, 0, 1], [0, 0, 3]]), 0.0),  # [[2/3, 0, 1/3], [0, 0, 1]]
        (torch.tensor([[2, 0, 1], [0, 0, 3]]), 1.0),  # [[3/6, 1/6, 2/6], [1/6, 1/6, 4/6]]
        (torch.tensor([4, 0, 0, 0]), 0.5),  # one row, a 1-D tensor: [4.5, .5, .5, .5] / 6
        (torch.tensor([[0, 0], [1, 3]]), 0.01),  # a context never seen: uniform when k > 0
    ]
    inputs += [
        (torch.tensor([[2, 0, 1], [0, 0, 0]]), 0.0),  # no distribution: ValueError
        (torch.zeros(3, 5, dtype=torch.long), 1.0),
        (torch.tensor([7]), 0.0),  # a vocabulary of one token
        (torch.tensor([[1e9, 1.0, 0.0]], dtype=torch.float64), 1e-6),
        (known.random_counts(random.Random(seed), (2, 3, 7), torch.int64), 0.1),  # 3-D
        (known.random_counts(random.Random(seed + 1), (65, 65), torch.int64), 0.01),
        (known.random_counts(random.Random(seed + 2), (4, 6), torch.float32), 2),  # an int k
        (torch.tensor([[5, 1], [3, 3]], dtype=torch.float64), 100.0),
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        shape = (
            (rng.randint(1, 30),)
            if rng.random() < 0.2
            else (rng.randint(1, 12), rng.randint(1, 30))
        )
        counts = known.random_counts(rng, shape, rng.choice([torch.int64, torch.int64, torch.float64]))
        k = rng.choice([0.0, 0.001, 0.01, 0.5, 1.0, 3.0])
        if k == 0.0:
            counts[..., rng.randrange(shape[-1])] += 1  # k = 0 needs every row to hold a count
        inputs.append((counts, k))
    return inputs


def _check_no_distribution(
    smoothed_probs: Callable[[torch.Tensor, float], torch.Tensor],
    counts: torch.Tensor,
    k: float,
    where: str,
) -> None:
    """With k = 0 and a row of zeros there is no distribution: the learner must raise ValueError."""
    arg = counts.clone()
    try:
        got = smoothed_probs(arg, k)
    except NotImplementedError as e:
        raise not_written("smoothed_probs") from e
    except ValueError:
        unchanged(counts, arg, where, "counts")
        return
    except Exception as e:
        fail(
            f"{where} raised {type(e).__name__}: {e}",
            "with k = 0, a row of zeros (a context never seen) has no distribution: 0 / 0. "
            "Raise ValueError for it.",
        )
    shown = show_tensor(got, 200) if isinstance(got, torch.Tensor) else show(got, 200)
    fail(
        f"{where} returned {shown}, but a row is all zeros and k = 0: 0 / 0 is no distribution.",
        "with k = 0, raise ValueError when any row sums to 0, as the docstring says (check the "
        "totals before dividing).",
    )


@check()
def smoothed_probs(
    smoothed_probs: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 30,
) -> None:
    """Check ``smoothed_probs(counts, k)`` against ``gptcore.ngram.smoothed_probs``: add-k, row by row."""
    inputs = _smoothing_inputs(seed, cases)
    hints = {
        IndexError: "counts can be one row (V,) or a table (V, V), or have more dimensions: "
        "sum over the last dimension with dim=-1, keepdim=True.",
        RuntimeError: "build a new float64 tensor, e.g. counts.to(torch.float64) + k, instead of "
        "changing counts in place.",
    }
    for counts, k in inputs:
        where = f"smoothed_probs({show_tensor(counts, 100)}, k={k!r})"
        try:
            expected = ref.smoothed_probs(counts, k)
        except ValueError:
            _check_no_distribution(smoothed_probs, counts, k, where)
            continue
        got = call(smoothed_probs, counts, k, name="smoothed_probs", where=where,
                   error_hints=hints, arg_names=("counts", "k"))  # fmt: skip
        got = check_tensor(
            got,
            f"the result of {where}",
            dtype=torch.float64,
            shape=tuple(counts.shape),
            dtype_hint="convert the counts with counts.to(torch.float64) first: probabilities "
            "are fractions, and float32 keeps only about 7 digits.",
        )
        if matches(got, expected, atol=0.0, rtol=1e-9, equal_nan=True):
            continue
        sums = got.sum(-1)
        notes = []
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-9):
            notes.append(
                f"  your rows sum to {show(sums.flatten().tolist(), 120)}; each must sum to 1"
            )
        wrong(
            where,
            show_tensor(expected),
            show_tensor(got),
            *notes,
            hint_text=recognise(got, known.smoothing_mistakes(counts, k), atol=0.0, rtol=1e-9),
        )
    passed("smoothed_probs", len(inputs))


# ------------------------------------------------------------------ perplexity
_PERPLEXITY_ERRORS = {
    ValueError: "a transition with probability 0 must give math.inf (math.log(0) raises; "
    "torch.log gives -inf).",
    OverflowError: "math.exp(math.inf) is math.inf: only convert inf, don't exponentiate a huge number.",
}


def _perplexity_inputs(
    seed: int, cases: int
) -> list[tuple[torch.Tensor, list[int]]]:
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
    inputs += [
        (certain, [0, 2]),  # probability 0: infinitely surprised
        (certain, [1, 2, 0, 1, 2, 1]),  # the last transition is impossible
        (uniform, [3, 3]),  # one transition
        (known.random_probs(random.Random(seed), 65, 65), [random.Random(seed).randrange(65) for _ in range(5000)]),
    ]  # fmt: skip
    rng = random.Random(seed)
    for _ in range(cases):
        vocab_size = rng.randint(1, 30)
        probs = known.random_probs(rng, vocab_size, vocab_size)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        ids = [rng.randrange(vocab_size)]
        for _ in range(rng.randint(1, 60)):  # a sequence the model can produce: no zeros
            ids.append(ref.sample_next(probs[ids[-1]], g))
        inputs.append((probs, ids))
    return inputs


def _check_too_short(fn: Probs, name: str) -> int:
    """With fewer than 2 tokens there is no transition: ``fn`` must raise ValueError."""
    uniform = torch.full((4, 4), 0.25, dtype=torch.float64)
    too_short: list[list[int]] = [[2], []]
    for ids in too_short:
        try:
            got = fn(uniform.clone(), list(ids))
        except NotImplementedError as e:
            raise not_written(name) from e
        except ValueError:
            continue
        except Exception as e:
            got = f"raised {type(e).__name__}: {e}"
        fail(
            f"{name}(probs, {ids!r}) gave {show(got, 80)}.",
            "with fewer than 2 tokens there is no transition to score; raise ValueError, as the "
            "docstring says.",
        )
    return len(too_short)


def _check_perplexity_case(fn: Probs, name: str, probs: torch.Tensor, ids: list[int]) -> None:
    expected = known.cross_entropy(probs, ids)
    where = f"{name}({show_tensor(probs, 80)}, {show(ids, 60)})"
    got = call(fn, probs, ids, name=name, where=where, error_hints=_PERPLEXITY_ERRORS,
               arg_names=("probs", "ids"))  # fmt: skip
    got = check_float(got, f"the result of {where}")
    want = expected if name == "cross_entropy" else math.exp(expected)
    if close(got, want):
        return
    if name == "cross_entropy":
        mistakes = known.cross_entropy_mistakes(probs, ids)
    else:
        mistakes = known.perplexity_mistakes(probs, ids, expected)
    hint_text = diagnose(got, mistakes, same=lambda a, b: close(a, float(b)))
    if not hint_text and math.isinf(want):
        hint_text = "a transition with probability 0 makes the cross-entropy (and the perplexity) math.inf."
    wrong(where, want, got, hint_text=hint_text)


@check()
def perplexity(
    cross_entropy: Probs,
    perplexity: Probs,
    *,
    seed: int = 0,
    cases: int = 30,
) -> None:
    """Check ``cross_entropy(probs, ids)`` (nats per token) and ``perplexity(probs, ids)``.

    The reference is ``gptcore.ngram.nll`` of ``probs[ids[i - 1], ids[i]]`` for
    i = 1 .. len(ids) - 1, and its exponential.
    """
    inputs = _perplexity_inputs(seed, cases)
    functions = ((cross_entropy, "cross_entropy"), (perplexity, "perplexity"))
    total = 0
    total += sum(_check_too_short(fn, name) for fn, name in functions)
    for probs, ids in inputs:
        for fn, name in functions:
            _check_perplexity_case(fn, name, probs, ids)
    passed("cross_entropy and perplexity", 2 * len(inputs) + total)


# -------------------------------------------------------- put it together
# A wrong earlier exercise is named first (perplexity's check needs cross_entropy too).
@check(uses={"count_bigrams": count_bigrams, "smoothed_probs": smoothed_probs, "generate": generate})
def bigram_shakespeare(
    count_bigrams: Callable[[list[int], int], torch.Tensor],
    smoothed_probs: Callable[[torch.Tensor, float], torch.Tensor],
    generate: Callable[..., list[int]],
    perplexity: Probs,
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
    model = ref.NGramModel(n=2, vocab_size=V, k=k).fit(train)
    reference = torch.stack([model.next_token_probs([a]) for a in range(V)])
    table = _shakespeare_table(count_bigrams, smoothed_probs, train, V, k)
    if not torch.allclose(table, reference, rtol=1e-9, atol=0.0):
        a = int((table - reference).abs().amax(-1).argmax())
        fail(
            f"your table, smoothed_probs(count_bigrams(train, V), k), differs from gptcore's "
            f"NGramModel(n=2, k={k}) on Tiny Shakespeare: in the row of character "
            f"{tok.decode([a])!r}, the largest difference is "
            f"{float((table[a] - reference[a]).abs().max()):.3g}.",
            "run the checks of exercises 1 and 2 first; they try smaller inputs and name the mistake.",
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
            f"  got:      {tok.decode([t for t in got if 0 <= t < V])[:120]!r}",
            "run the check of exercise 3 first.",
        )
    want = math.exp(known.cross_entropy(reference, val))
    got_ppl = check_float(
        call(perplexity, table, val, name="perplexity", where="perplexity(table, val)"),
        "perplexity(table, val)",
    )
    if not close(got_ppl, want):
        fail(
            f"perplexity(table, val) on Tiny Shakespeare's validation characters is {got_ppl!r}, "
            f"but gptcore's bigram model gives {want!r}.",
            "run the check of exercise 4 first.",
        )
    print(f"✓ your bigram model of Tiny Shakespeare (k={k}): the same table, the same "
          f"{num_tokens} sampled characters and the same validation perplexity ({want:.3f}) "
          "as gptcore's NGramModel(n=2)")  # fmt: skip


def _shakespeare_table(
    count_bigrams: Callable[[list[int], int], torch.Tensor],
    smoothed_probs: Callable[[torch.Tensor, float], torch.Tensor],
    train: list[int],
    V: int,
    k: float,
) -> torch.Tensor:
    """The learner's table of Tiny Shakespeare: ``smoothed_probs(count_bigrams(train, V), k)``."""
    counts = call(count_bigrams, train, V, name="count_bigrams",
                  where=f"count_bigrams(train, {V}) on Tiny Shakespeare's training characters")  # fmt: skip
    counts = check_tensor(counts, "count_bigrams(train, V)", dtype=torch.int64, shape=(V, V))
    table = call(smoothed_probs, counts, k, name="smoothed_probs",
                 where=f"smoothed_probs(counts, k={k})")  # fmt: skip
    return check_tensor(table, "smoothed_probs(counts, k)", dtype=torch.float64, shape=(V, V))

