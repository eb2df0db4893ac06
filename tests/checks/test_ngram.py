"""gptcore.course.checks.ngram: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's n-gram reference (the notebook's solution cells
are test_contract.py's). Each wrong answer is a mistake a learner could make;
its check must fail with a message that names it.
"""

from __future__ import annotations

import math
import random
import re
from itertools import pairwise

import numpy as np
import pytest
import torch

from gptcore.course.checks import ngram as checks
from gptcore.course.checks.ngram.sampling import check_distribution
from gptcore.ngram import NGramModel, count_ngrams, nll, sample_next, smoothed_probs

from ..lesson02_fixtures import LESSON02_POINTS, LESSON02_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook

HIDDEN = HIDDEN_BEGIN

# The hidden calls' arguments, read from the notebook's test cells (the one place a seed
# is written); the visible calls give none (test_contract.py holds both).
LESSON_NB = LessonNotebook.for_lesson("02_ngram")
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()


def run_check(check: str, fn, args: str) -> None:
    kwargs = {} if args == "visible" else HIDDEN_ARGS[check]
    fns = fn if isinstance(fn, tuple) else (fn,)
    getattr(checks, check)(*fns, **kwargs)


# ------------------------------------------------------------------ notebook
_namespace = LESSON_NB.namespace
cells, solution = LESSON_NB.fixtures()


# --------------------------------------------------------- right answers pass
def ref_count_bigrams(ids, vocab_size):
    counts = torch.zeros((vocab_size, vocab_size), dtype=torch.long)
    for (a, b), c in count_ngrams(ids, 2).items():
        counts[a, b] = c
    return counts


def ref_smoothed_probs(counts, k=1.0):
    return smoothed_probs(counts, k)


def ref_generate(next_token_probs, context, num_tokens, generator):
    history, out = list(context), []
    for _ in range(num_tokens):
        token = sample_next(next_token_probs(history), generator)
        out.append(token)
        history.append(token)
    return out


def ref_cross_entropy(probs, ids):
    return nll([float(probs[a, b]) for a, b in pairwise(ids)])  # nll([]) raises ValueError


def ref_perplexity(probs, ids):
    return math.exp(ref_cross_entropy(probs, ids))


REFERENCE = {
    "count_bigrams": ref_count_bigrams,
    "smoothed_probs": ref_smoothed_probs,
    "generate": ref_generate,
    "perplexity": (ref_cross_entropy, ref_perplexity),
}


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_reference_passes(check, args):
    run_check(check, REFERENCE[check], args)


def test_generate_matches_ngram_model_sample(solution):
    """The docstring's promise: the same seed gives NGramModel.sample's tokens."""
    model = NGramModel(n=3, vocab_size=7, k=0.1).fit(
        [random.Random(0).randrange(7) for _ in range(300)]
    )
    for seed in range(5):
        got = solution["generate"](
            model.next_token_probs, [1, 2], 50, torch.Generator().manual_seed(seed)
        )
        assert got == model.sample([1, 2], 50, seed=seed)


def test_put_it_together_passes():
    # The notebook's functions on the test cell's calls are test_contract.py's.
    refs = (ref_count_bigrams, ref_smoothed_probs, ref_generate, ref_perplexity)
    checks.bigram_shakespeare(*refs, **HIDDEN_ARGS["bigram_shakespeare"], num_tokens=50)


def test_one_unfinished_function_raises_not_implemented():
    # test_contract.py releases a whole exercise cell; a check that takes two functions
    # of one cell must also say "not done" when only one of them is unfinished.
    def stub(*args):
        raise NotImplementedError()

    for check, refs in REFERENCE.items():
        if not isinstance(refs, tuple):
            continue
        for i in range(len(refs)):  # each of the functions may be the unfinished one
            fns = tuple(stub if j == i else ref for j, ref in enumerate(refs))
            with pytest.raises(NotImplementedError):
                run_check(check, fns, "hidden")


# ------------------------------------------------------- wrong answers fail
class EqualTensor(torch.Tensor):
    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class EqualList(list):
    def __eq__(self, other):
        return True


class EqualFloat(float):
    def __eq__(self, other):
        return True

    __hash__ = float.__hash__


class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = None


# count_bigrams
def bigrams_inferred_vocab(ids, vocab_size):
    size = max(ids) + 1 if ids else vocab_size
    return ref_count_bigrams(ids, size)


def bigrams_pop(ids, vocab_size):
    counts = torch.zeros((vocab_size, vocab_size), dtype=torch.long)
    while len(ids) > 1:
        counts[ids[0], ids[1]] += 1
        ids.pop(0)
    return counts


WRONG_COUNTS = [
    (lambda ids, V: ref_count_bigrams(ids, V).T, "counts[ids[i], ids[i + 1]]"),
    (lambda ids, V: ref_count_bigrams(ids[:-1], V), "missed the last pair"),
    (lambda ids, V: ref_count_bigrams(ids[1:], V), "missed the first pair"),
    (lambda ids, V: ref_count_bigrams([*ids, ids[0]] if ids else ids, V), "wrap around"),
    (lambda ids, V: (ref_count_bigrams(ids, V) > 0).long(), "not only whether it occurs"),
    (lambda ids, V: ref_count_bigrams(ids, V).double(), "dtype=torch.long"),
    (lambda ids, V: ref_count_bigrams(ids, V).int(), "dtype=torch.long"),
    (lambda ids, V: ref_count_bigrams(ids, V) > 0, "must have dtype torch.int64"),
    (lambda ids, V: ref_count_bigrams(ids, V).tolist(), "must be a torch.Tensor"),
    (lambda ids, V: ref_count_bigrams(ids, V).numpy(), "torch.from_numpy"),
    (lambda ids, V: ref_count_bigrams(ids, V).as_subclass(EqualTensor), "subclass"),
    (lambda ids, V: AlwaysEqual(), "must be a torch.Tensor"),
    (bigrams_inferred_vocab, "must have shape (6, 6)"),
    (bigrams_pop, "changed its argument"),
]


# smoothed_probs
def normalize_in_place(counts, k=1.0):
    counts = counts if counts.is_floating_point() else counts.double()
    counts += k
    totals = counts.sum(-1, keepdim=True)
    if (totals == 0).any():
        raise ValueError("no distribution")
    return counts / totals


WRONG_NORMALIZE = [
    (lambda c, k=1.0: (c.double() + k) / (c.double() + k).sum(0, keepdim=True), "not over dim 0"),
    (lambda c, k=1.0: (c.double() + k) / (c.double() + k).sum(), "not the whole table's"),
    (lambda c, k=1.0: (c.double() + k) / c.double().sum(-1, keepdim=True), "k * V too"),
    (
        lambda c, k=1.0: (c.double() + k) / (c.double().sum(-1, keepdim=True) + k),
        "row total + k * V",
    ),
    (lambda c, k=1.0: c.double() / c.double().sum(-1, keepdim=True), "add k to every count"),
    (lambda c, k=1.0: (c.double() + k).softmax(-1), "softmax"),
    (lambda c, k=1.0: smoothed_probs(c, k).float(), "torch.float64"),
    (lambda c, k=1.0: (c.double() + k) / (c.double() + k).sum(1, keepdim=True), "dim=-1"),
    (lambda c, k=1.0: smoothed_probs(c, k).tolist(), "must be a torch.Tensor"),
    (lambda c, k=1.0: smoothed_probs(c, k).as_subclass(EqualTensor), "subclass"),
    (lambda c, k=1.0: smoothed_probs(c, k)[..., :-1], "must have shape"),
    (normalize_in_place, "changed its argument counts"),
]


# generate
def sampler(pick, *, history_mode="full", extra_draw=False, keep_context=False, count=0):
    """A generate() with one configurable mistake."""

    def generate(next_token_probs, context, num_tokens, generator):
        history, out = list(context), []
        for _ in range(num_tokens + count):
            if history_mode == "full":
                h = history
            elif history_mode == "context":
                h = list(context)
            elif history_mode == "last":
                h = history[-1:]
            else:  # "new": the generated tokens only
                h = out
            token = pick(next_token_probs(list(h)), generator)
            out.append(token)
            history.append(token)
        if extra_draw:
            torch.rand(1, generator=generator)
        return [*context, *out] if keep_context else out

    return generate


def draw(probs, g):
    return int(torch.multinomial(probs, 1, generator=g))


def draw_twice(probs, g):
    torch.multinomial(probs, 1, generator=g)
    return int(torch.multinomial(probs, 1, generator=g))


def draw_inverse_cdf(probs, g):  # right distribution, other random numbers
    u = torch.rand((), generator=g, dtype=torch.float64)
    return min(int(torch.searchsorted(probs.cumsum(0), u * probs.sum())), len(probs) - 1)


def draw_global(probs, g):
    return int(torch.multinomial(probs, 1))


def generate_own_generator(next_token_probs, context, num_tokens, generator):
    return ref_generate(next_token_probs, context, num_tokens, torch.Generator().manual_seed(0))


def draw_uniform(probs, g):
    return int(torch.randint(len(probs), (1,), generator=g))


def generate_mutates(next_token_probs, context, num_tokens, generator):
    start = len(context)
    for _ in range(num_tokens):
        context.append(draw(next_token_probs(context), generator))
    return context[start:]


WRONG_GENERATE = [
    (sampler(lambda p, g: int(p.argmax())), "do not follow the distribution"),
    (sampler(draw_uniform), "do not follow the distribution"),
    (sampler(draw_inverse_cdf), "right distribution, but not the same draws"),
    (sampler(draw_twice), "drew twice per token"),
    (sampler(draw_global), "was not used"),
    (generate_own_generator, "the generator you were given"),
    (sampler(draw, extra_draw=True), "drew more random numbers"),
    (sampler(draw, history_mode="context"), "append each new token"),
    (sampler(draw, history_mode="last"), "pass the whole history"),
    (sampler(draw, history_mode="new"), "starts with the context"),
    (sampler(draw, keep_context=True), "return only the new tokens"),
    (sampler(draw, count=-1), "off-by-one"),
    (sampler(lambda p, g: torch.multinomial(p, 1, generator=g)), "list of tensors"),
    (sampler(lambda p, g: np.int64(draw(p, g))), "int(...)"),
    (lambda f, c, n, g: EqualList(ref_generate(f, c, n, g)), "must be a list of ints"),
    (lambda f, c, n, g: tuple(ref_generate(f, c, n, g)), "must be a list of ints"),
    (generate_mutates, "changed its argument"),
]


# cross_entropy and perplexity
def ce_with(transform):
    def cross_entropy(probs, ids):
        if len(ids) < 2:
            raise ValueError
        a, b = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
        return transform(probs, a, b)

    return cross_entropy


def right_ce(probs, a, b):
    return float(-probs[a, b].log().mean())


def with_ppl(ce, ppl=lambda ce: math.exp(ce)):
    return (ce, lambda probs, ids: ppl(ce(probs, ids)))


def ce_math_log(probs, ids):
    if len(ids) < 2:
        raise ValueError
    return -sum(math.log(probs[a, b]) for a, b in pairwise(ids)) / (len(ids) - 1)


def ce_no_check(probs, ids):
    t = torch.tensor(ids, dtype=torch.long)
    return float(-probs[t[:-1], t[1:]].log().mean())  # nan for fewer than 2 tokens


WRONG_PERPLEXITY = [
    (with_ppl(ce_with(lambda p, a, b: float(-p[a, b].log2().mean()))), "nats, not bits"),
    (with_ppl(ce_with(lambda p, a, b: float(-p[a, b].log().sum()))), "instead of summing"),
    (with_ppl(ce_with(lambda p, a, b: float(-p[a, b].log().sum() / (len(a) + 1)))), "not len(ids)"),
    (with_ppl(ce_with(lambda p, a, b: float(p[a, b].log().mean()))), "the negative log"),
    (with_ppl(ce_with(lambda p, a, b: float(-p[a, b].mean().log()))), "not the probabilities"),
    (with_ppl(ce_with(lambda p, a, b: float(-p[b, a].log().mean()))), "P(b | a)"),
    (with_ppl(ce_with(lambda p, a, b: -p[a, b].log().mean())), "must be a float"),
    (with_ppl(ce_with(lambda p, a, b: np.float64(right_ce(p, a, b)))), "convert it with float"),
    (with_ppl(ce_with(lambda p, a, b: EqualFloat(right_ce(p, a, b) + 1))), "must be a float"),
    (with_ppl(ce_with(right_ce), lambda ce: math.exp(-ce)), "exp(+cross-entropy)"),
    (with_ppl(ce_with(right_ce), lambda ce: 2**ce), "not 2 ** it"),
    (with_ppl(ce_with(right_ce), lambda ce: ce), "not the cross-entropy itself"),
    (with_ppl(ce_with(right_ce), lambda ce: torch.tensor(ce).exp()), "must be a float"),
]
EDGE_PERPLEXITY = [
    (with_ppl(ce_math_log), "math.log(0) raises"),
    (with_ppl(ce_no_check), "raise ValueError"),
]

WRONG = (
    [("count_bigrams", f, h) for f, h in WRONG_COUNTS]
    + [("smoothed_probs", f, h) for f, h in WRONG_NORMALIZE]
    + [("generate", f, h) for f, h in WRONG_GENERATE]
    + [("perplexity", f, h) for f, h in WRONG_PERPLEXITY]
)


@pytest.mark.parametrize(("check", "fn", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_wrong_answer_fails_with_hint(check, fn, hint, args):
    with pytest.raises(AssertionError) as failure:
        run_check(check, fn, args)
    assert hint in str(failure.value), str(failure.value)


# The visible cells grade every rule the hidden ones do (issue 12): each mistake
# below only the hidden tests used to catch; now the visible call alone fails it.
@pytest.mark.parametrize(("fns", "hint"), EDGE_PERPLEXITY)
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_edge_case_mistakes_fail_the_visible_check(fns, hint, args):
    with pytest.raises(AssertionError, match=re.escape(hint)):
        run_check("perplexity", fns, args)


@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_missing_value_error_fails_the_visible_check(args):
    # k = 0 and a row of zeros: 0 / 0 = nan instead of the ValueError the docstring asks for.
    wrong = lambda c, k=1.0: (c.double() + k) / (c.double() + k).sum(-1, keepdim=True)  # noqa: E731
    with pytest.raises(AssertionError, match="raise ValueError"):
        run_check("smoothed_probs", wrong, args)


def generate_at_least_one(next_token_probs, context, num_tokens, generator):
    """Draws before testing the length: num_tokens=0 still gives one token."""
    history, out = list(context), []
    while True:
        token = sample_next(next_token_probs(history), generator)
        out.append(token)
        history.append(token)
        if len(out) >= num_tokens:
            return out


@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_zero_new_tokens_fails_the_visible_check(args):
    with pytest.raises(AssertionError, match="must return 0 new tokens, but it returned 1"):
        run_check("generate", generate_at_least_one, args)


def test_statistical_check_alone_catches_a_wrong_distribution():
    """The frequency check fails wrong samplers before any exact comparison."""
    for pick in (lambda p, g: int(p.argmax()), draw_uniform):
        with pytest.raises(AssertionError, match="do not follow the distribution"):
            check_distribution(sampler(pick), [0, 1], 2000)
    for pick in (draw, draw_inverse_cdf, draw_global):  # right distribution: the check passes
        check_distribution(sampler(pick), [0, 1], 2000)


def test_put_it_together_failures():
    good = [ref_count_bigrams, ref_smoothed_probs, ref_generate, ref_perplexity]
    for i, wrong, hint in [
        (1, lambda c, k=1.0: (c.double() + k) / (c.double().sum(-1, keepdim=True) + k), "differs from gptcore's NGramModel(n=2"),
        (2, sampler(lambda p, g: int(p.argmax())), "NGramModel.sample"),
        (3, lambda probs, ids: ref_perplexity(probs, ids[1:]), "perplexity(table, val)"),
        (0, lambda ids, V: ref_count_bigrams(ids, V).double(), "dtype torch.int64"),
    ]:  # fmt: skip
        pieces = list(good)
        pieces[i] = wrong
        with pytest.raises(AssertionError, match=re.escape(hint)):
            checks.bigram_shakespeare(*pieces, num_tokens=50)


def test_messages_name_the_input_and_both_results():
    with pytest.raises(AssertionError) as failure:
        checks.count_bigrams(lambda ids, V: ref_count_bigrams(ids, V).T)
    message = str(failure.value)
    assert "count_bigrams([0, 1, 2, 0, 1], 3)" in message
    assert "expected: tensor([[0, 2, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.int64)" in message
    assert "got:      tensor([[0, 0, 1], [2, 0, 0], [0, 1, 0]], dtype=torch.int64)" in message

    with pytest.raises(AssertionError) as failure:
        checks.perplexity(*with_ppl(ce_with(lambda p, a, b: float(-p[a, b].log2().mean()))))
    message = str(failure.value)
    assert "cross_entropy(tensor([[0.25, 0.25, 0.25, 0.25]" in message
    assert f"expected: {math.log(4)!r}" in message


def test_checks_leave_their_inputs_alone():
    # A learner that records its inputs sees the same values the check compares against.
    seen = []

    def spy(counts, k=1.0):
        seen.append((counts, counts.clone()))
        return smoothed_probs(counts, k)

    checks.smoothed_probs(spy, cases=20)
    assert all(torch.equal(a, b) for a, b in seen)


# ----------------------------------------------------------- the wrong fixtures
@pytest.mark.parametrize("gid", sorted(LESSON02_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, gid):
    """A mistake that once passed the visible cell fails it now; every other cell passes."""
    ns = _namespace(cells, replace={gid: LESSON02_WRONG_CAUGHT_VISIBLE[gid]})
    with pytest.raises(AssertionError):
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    for other in LESSON02_POINTS:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))
