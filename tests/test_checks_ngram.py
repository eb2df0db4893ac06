"""gptcore.course.checks.ngram: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's n-gram reference and the solution cells of the
lesson notebook (executed here from the notebook's JSON). Each wrong answer is
a mistake a learner could make; its check must fail with a message that names it.
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
from gptcore.ngram import NGramModel, count_ngrams, nll, sample_next, smoothed_probs

from .conftest import ROOT
from .lesson02_fixtures import LESSON02_POINTS, LESSON02_SOLUTION_IDS, LESSON02_WRONG_VISIBLE_ONLY
from .notebook_cells import HIDDEN_BEGIN, LessonNotebook

NOTEBOOK = ROOT / "solutions" / "02_ngram" / "02_ngram.ipynb"
HIDDEN = HIDDEN_BEGIN

# The arguments of the notebook's test cells: visible, then hidden.
VISIBLE: dict[str, dict] = {
    "bigram_counts": {},
    "add_k_smoothing": {},
    "seeded_sampling": {},
    "perplexity": {},
}
HIDDEN_ARGS: dict[str, dict] = {
    "bigram_counts": {"seed": 5113, "cases": 200, "edge_cases": True},
    "add_k_smoothing": {"seed": 6151, "cases": 150, "edge_cases": True},
    "seeded_sampling": {"seed": 7177, "cases": 60, "edge_cases": True},
    "perplexity": {"seed": 8123, "cases": 150, "edge_cases": True},
}


def run_check(check: str, fn, args: str) -> None:
    kwargs = (VISIBLE if args == "visible" else HIDDEN_ARGS)[check]
    fns = fn if isinstance(fn, tuple) else (fn,)
    getattr(checks, check)(*fns, **kwargs)


# ------------------------------------------------------------------ notebook
LESSON_NB = LessonNotebook(NOTEBOOK, LESSON02_SOLUTION_IDS, LESSON02_POINTS)
_cells, _namespace = LESSON_NB.cells, LESSON_NB.namespace
cells, solution = LESSON_NB.fixtures()


def test_fixture_ids_and_points_match_the_notebook():
    LESSON_NB.assert_metadata()


def test_test_cells_call_the_checks_with_these_arguments(cells):
    """VISIBLE and HIDDEN_ARGS above are what the notebook's test cells really use."""
    for check in VISIBLE:
        visible, hidden = cells[f"{check}_tests"].split(HIDDEN)
        assert f"checks.{check}(" in visible
        for key, value in HIDDEN_ARGS[check].items():
            assert f"{key}={value}" in hidden, (check, key)


# --------------------------------------------------------- right answers pass
def ref_count_bigrams(ids, vocab_size):
    counts = torch.zeros((vocab_size, vocab_size), dtype=torch.long)
    for (a, b), c in count_ngrams(ids, 2).items():
        counts[a, b] = c
    return counts


def ref_normalize(counts, k=1.0):
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
    "bigram_counts": ref_count_bigrams,
    "add_k_smoothing": ref_normalize,
    "seeded_sampling": ref_generate,
    "perplexity": (ref_cross_entropy, ref_perplexity),
}
LEARNER_NAMES = {
    "bigram_counts": ("count_bigrams",),
    "add_k_smoothing": ("normalize",),
    "seeded_sampling": ("generate",),
    "perplexity": ("cross_entropy", "perplexity"),
}


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_reference_passes(check, args):
    run_check(check, REFERENCE[check], args)


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_notebook_solution_passes(solution, check, args):
    run_check(check, tuple(solution[name] for name in LEARNER_NAMES[check]), args)


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


def test_put_it_together_passes(solution):
    pieces = [solution[name] for name in ("count_bigrams", "normalize", "generate", "perplexity")]
    checks.bigram_shakespeare(*pieces)
    refs = (ref_count_bigrams, ref_normalize, ref_generate, ref_perplexity)
    checks.bigram_shakespeare(*refs, k=1.0, seed=2024, context="JULIET:\n", num_tokens=50)


def test_notebook_test_cells_run_on_the_solution(cells, solution):
    for gid in LESSON02_POINTS:
        exec(cells[gid], dict(solution))


def test_unfinished_exercise_raises_not_implemented():
    def stub(*args):
        raise NotImplementedError()

    for check, ref in REFERENCE.items():
        n = len(ref) if isinstance(ref, tuple) else 1
        for i in range(n):  # each of the functions a check takes may be the unfinished one
            fns = tuple(stub if j == i else (ref[j] if n > 1 else ref) for j in range(n))
            with pytest.raises(NotImplementedError):
                run_check(check, fns, "hidden")
    with pytest.raises(NotImplementedError):
        checks.bigram_shakespeare(ref_count_bigrams, stub, stub, stub)


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


# normalize
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
HIDDEN_ONLY_PERPLEXITY = [
    (with_ppl(ce_math_log), "math.log(0) raises"),
    (with_ppl(ce_no_check), "raise ValueError"),
]

WRONG = (
    [("bigram_counts", f, h) for f, h in WRONG_COUNTS]
    + [("add_k_smoothing", f, h) for f, h in WRONG_NORMALIZE]
    + [("seeded_sampling", f, h) for f, h in WRONG_GENERATE]
    + [("perplexity", f, h) for f, h in WRONG_PERPLEXITY]
)


@pytest.mark.parametrize(("check", "fn", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_wrong_answer_fails_with_hint(check, fn, hint, args):
    with pytest.raises(AssertionError) as failure:
        run_check(check, fn, args)
    assert hint in str(failure.value), str(failure.value)


@pytest.mark.parametrize(("fns", "hint"), HIDDEN_ONLY_PERPLEXITY)
def test_edge_case_mistakes_fail_only_hidden(fns, hint):
    run_check("perplexity", fns, "visible")
    with pytest.raises(AssertionError, match=re.escape(hint)):
        run_check("perplexity", fns, "hidden")


def test_missing_value_error_fails_only_hidden():
    wrong = lambda c, k=1.0: (c.double() + k) / (c.double() + k).sum(-1, keepdim=True)  # noqa: E731
    run_check("add_k_smoothing", wrong, "visible")
    with pytest.raises(AssertionError, match="raise ValueError"):
        run_check("add_k_smoothing", wrong, "hidden")


def test_statistical_check_alone_catches_a_wrong_distribution():
    """The frequency check fails wrong samplers before any exact comparison."""
    for pick in (lambda p, g: int(p.argmax()), draw_uniform):
        with pytest.raises(AssertionError, match="do not follow the distribution"):
            checks._check_distribution(sampler(pick), [0, 1], 2000)
    for pick in (draw, draw_inverse_cdf, draw_global):  # right distribution: the check passes
        checks._check_distribution(sampler(pick), [0, 1], 2000)


def test_put_it_together_failures():
    good = [ref_count_bigrams, ref_normalize, ref_generate, ref_perplexity]
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
        checks.bigram_counts(lambda ids, V: ref_count_bigrams(ids, V).T)
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

    checks.add_k_smoothing(spy, cases=20)
    assert all(torch.equal(a, b) for a, b in seen)


# ----------------------------------------------------------- the wrong fixture
def test_wrong_visible_only_fixture(cells):
    """The fixture passes its exercise's visible test cell and fails the hidden tests."""
    for gid, source in LESSON02_WRONG_VISIBLE_ONLY.items():
        assert gid in LESSON02_SOLUTION_IDS
        ns = _namespace(cells, replace={gid: source})
        test_source = cells[f"{gid}_tests"]
        visible = test_source.split(HIDDEN)[0]
        exec(visible, dict(ns))  # passes
        with pytest.raises(AssertionError):
            exec(test_source, dict(ns))
        for other in LESSON02_POINTS:  # every other test cell still passes
            if other != f"{gid}_tests":
                exec(cells[other], dict(ns))
