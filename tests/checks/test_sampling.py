"""gptcore.course.checks.sampling: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's own decoding code (``gptcore.sample``,
``KVCache.update``) and the solution cells of the lesson notebook (executed
here from the notebook's JSON). Each wrong answer is a mistake a learner could
make; its check must fail with a message that names it.
"""

from __future__ import annotations

import ast
import math
import re

import nbformat
import numpy as np
import pytest
import torch

from gptcore.course.checks import sampling as checks
from gptcore.model.attention import KVCache
from gptcore.sample import (
    apply_temperature,
    sample_token,
    softmax_with_temperature,
    top_k_filter,
    top_p_filter,
)

from ..lesson07_fixtures import LESSON07_POINTS, LESSON07_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook

HIDDEN = HIDDEN_BEGIN
NEG = float("-inf")

# The hidden calls' arguments, read from the notebook's test cells (the one place a seed
# is written); the visible calls give none (test_contract.py holds both).
LESSON_NB = LessonNotebook.for_lesson("07_sampling")
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()
_cells, _namespace = LESSON_NB.cells, LESSON_NB.namespace
cells, solution = LESSON_NB.fixtures()


def _args(check: str, which: str) -> dict:
    return {} if which == "visible" else HIDDEN_ARGS[check]


# --------------------------------------------------------- right answers pass
def ref_update(cache, k_new, v_new):
    return KVCache.update(cache, k_new, v_new)  # the reference, bypassing the check's guard


REFERENCE = {
    "softmax_with_temperature": softmax_with_temperature,
    "top_k_filter": top_k_filter,
    "top_p_filter": top_p_filter,
    "sample_token": sample_token,
    "kv_cache_update": ref_update,
}


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("which", ["visible", "hidden"])
def test_reference_passes(check, which):
    getattr(checks, check)(REFERENCE[check], **_args(check, which))


def test_cached_generation_passes():
    checks.cached_generation(sample_token, ref_update)
    checks.cached_generation(sample_token, ref_update, **HIDDEN_ARGS["cached_generation"])


# ------------------------------------------------------- wrong answers fail
class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = None


class EqualTensor(torch.Tensor):
    """A tensor that claims to equal anything."""

    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class EqualInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def _softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def soft_in_place(logits, t):
    return torch.softmax(logits.div_(t), dim=-1)


WRONG_SOFTMAX = [
    (lambda x, t: torch.softmax(x * t, dim=-1), "you multiplied"),
    (lambda x, t: torch.softmax(x, dim=-1), "use the temperature"),
    (lambda x, t: _softmax(x / t, dim=0), "last dim"),
    (lambda x, t: torch.exp(x / t - (x / t).amax(-1, keepdim=True)), "divide by the sum"),
    (lambda x, t: torch.log_softmax(x / t, dim=-1), "log-probabilities"),
    (lambda x, t: (x / t) / (x / t).sum(-1, keepdim=True), "apply exp"),
    (lambda x, t: torch.softmax(x / t, dim=-1).double(), "dtype"),
    (lambda x, t: torch.softmax(x / t, dim=-1).tolist(), "must be a torch.Tensor"),
    (lambda x, t: torch.softmax(x / t, dim=-1).numpy(), "stay in torch"),
    (lambda x, t: AlwaysEqual(), "must be a torch.Tensor"),
    (lambda x, t: torch.zeros_like(x).as_subclass(EqualTensor), "is wrong"),
    (lambda x, t: torch.softmax(x / t, dim=-1)[..., :-1], "shape"),
    (soft_in_place, "in place"),
]
# Once caught by the hidden tests only; the visible cell tries these rules too.
CAUGHT_VISIBLE_SOFTMAX = [
    (lambda x, t: torch.exp(x / t) / torch.exp(x / t).sum(-1, keepdim=True), "max"),
    (lambda x, t: torch.softmax(x.float() / t, dim=-1), "dtype"),
]


def topk_plus_one(logits, k):
    return top_k_filter(logits, k + 1)


def topk_le(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG)


def topk_in_place(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
    logits[logits < kth] = NEG
    return logits


def topk_by_index(logits, k):
    k = min(k, logits.size(-1))
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(logits, k, dim=-1).indices, True)
    return logits.masked_fill(~keep, NEG)


def topk_no_clamp(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG)


def topk_one_row(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1))).values[-1]
    return logits.masked_fill(logits < kth, NEG)


WRONG_TOP_K = [
    (topk_plus_one, "one token too many"),
    (lambda x, k: top_k_filter(x, k - 1) if k > 1 else x.clone(), "too few"),
    (topk_le, "strictly below"),
    (lambda x, k: torch.where(top_k_filter(-x, k) == NEG, NEG, x), "LARGEST"),
    (lambda x, k: torch.where(top_k_filter(x, k) == NEG, 0.0, x), "-inf"),
    (lambda x, k: torch.where(top_k_filter(x, k) == NEG, -1e9, x), "-inf"),
    (lambda x, k: torch.softmax(top_k_filter(x, k), -1), "not probabilities"),
    (lambda x, k: top_k_filter(x, k).sort(descending=True).values, "vocabulary order"),
    (topk_in_place, "in place"),
    (lambda x, k: top_k_filter(x, k).as_subclass(EqualTensor) * 0, "is wrong"),
]
# Once caught by the hidden tests only; the visible cell tries these rules too.
CAUGHT_VISIBLE_TOP_K = [
    (topk_by_index, "tied with the k-th"),
    (topk_no_clamp, "min(k, logits.size(-1))"),
    (topk_one_row, "each row on its own"),
]


def _top_p_keep(logits, p, rule, descending=True, on_logits=False):
    s, order = torch.sort(logits, dim=-1, descending=descending)
    probs = s if on_logits else torch.softmax(s, dim=-1)
    cum = torch.cumsum(probs, dim=-1)
    drop = ~rule(cum - probs, cum)
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG)


def topp_one_row(logits, p):
    s, order = torch.sort(logits, descending=True)
    probs = torch.softmax(s, dim=-1)
    keep = order[(torch.cumsum(probs, -1) - probs) < p]
    out = torch.full_like(logits, NEG)
    out[keep] = logits[keep]
    return out


def topp_sorted_out(logits, p):
    s, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(s, dim=-1)
    return s.masked_fill(torch.cumsum(probs, -1) - probs >= p, NEG)


WRONG_TOP_P = [
    (lambda x, p: _top_p_keep(x, p, lambda before, cum: cum < p), "carries the total past p"),
    (lambda x, p: _top_p_keep(x, p, lambda before, cum: cum <= p), "carries the total past p"),
    (
        lambda x, p: _top_p_keep(x, p, lambda before, cum: before < p, descending=False),
        "descending",
    ),
    (
        lambda x, p: _top_p_keep(x, p, lambda before, cum: before < p, on_logits=True),
        "accumulate probabilities",
    ),
    (lambda x, p: x.masked_fill(torch.softmax(x, -1) < p, NEG), "not a threshold"),
    (topp_sorted_out, "vocabulary order"),
    (lambda x, p: torch.where(top_p_filter(x, p) == NEG, 0.0, x), "-inf"),
    (lambda x, p: torch.softmax(top_p_filter(x, p), -1), "not probabilities"),
    (lambda x, p: top_p_filter(x, p).double(), "dtype"),
]
# Once caught by the hidden tests only; the visible cell tries these rules too.
CAUGHT_VISIBLE_TOP_P = [
    (topp_one_row, "each row"),
    # issue 12: keeps a token whose mass before equals p exactly (`>` for `>=`).
    (lambda x, p: _top_p_keep(x, p, lambda before, cum: before <= p), "exactly p is dropped"),
]


def _step(logits, t, k, p, g, *, order="right", draw=None):
    if t == 0:
        return int(torch.argmax(logits))
    z = logits * t if order == "times" else logits if order in ("no_t", "t_last") else logits / t
    if order == "p_first":
        z = top_p_filter(z, p) if p is not None else z
        z = top_k_filter(z, k) if k is not None else z
    else:
        z = top_k_filter(z, k) if k is not None else z
        z = top_p_filter(z, p) if p is not None and p < 1 else z
    if order == "t_last":
        z = z / t
    probs = torch.softmax(z, -1)
    if draw is not None:
        return draw(probs, z, g)
    return int(torch.multinomial(probs, 1, generator=g))


def step_global_rng(logits, t, k, p, g):
    return _step(logits, t, k, p, g, draw=lambda probs, z, g: int(torch.multinomial(probs, 1)))


def step_twice(logits, t, k, p, g):
    def draw(probs, z, g):
        torch.multinomial(probs, 1, generator=g)
        return int(torch.multinomial(probs, 1, generator=g))

    return _step(logits, t, k, p, g, draw=draw)


def step_no_greedy(logits, t, k, p, g):
    return int(torch.multinomial(torch.softmax(logits / t, -1), 1, generator=g))


def step_t_last(logits, t, k, p, g):
    return _step(logits, t, k, p, g, order="t_last") if t else int(logits.argmax())


WRONG_STEP = [
    (lambda x, t, k, p, g: int(torch.argmax(x)), "do not match"),
    (lambda x, t, k, p, g: _step(x, t, k, p, g, order="times"), "you multiplied"),
    (lambda x, t, k, p, g: _step(x, t, k, p, g, order="no_t"), "use the temperature"),
    (step_t_last, "BEFORE the filters"),
    (
        lambda x, t, k, p, g: _step(
            x, t, k, p, g, draw=lambda probs, z, g: int(torch.multinomial(z, 1, generator=g))
        ),
        "not logits",
    ),
    (step_global_rng, "global random state"),
    (step_twice, "exactly once per call"),
    (lambda x, t, k, p, g: torch.tensor(_step(x, t, k, p, g)), "int(...) or .item()"),
    (lambda x, t, k, p, g: np.int64(_step(x, t, k, p, g)), "numpy.int64"),
    (lambda x, t, k, p, g: EqualInt(_step(x, t, k, p, g)), "int"),
    (lambda x, t, k, p, g: AlwaysEqual(), "must return a token id"),
    (lambda x, t, k, p, g: _step(x, t, k, p, g) + len(x), "not a token id"),
    (step_no_greedy, "At temperature 0, return the argmax"),
]
# Once caught by the hidden tests only; the visible cell tries these rules too.
CAUGHT_VISIBLE_STEP = [
    (lambda x, t, k, p, g: _step(x, t, k, p, g, order="p_first"), "apply top-k first"),
    (
        lambda x, t, k, p, g: _step(x, t, None if p is not None else k, p, g),
        "apply top_k_filter when top_k",
    ),
]


def _cache_write(cache, k_new, v_new, at):
    end = at + k_new.size(2)
    cache.k[:, :, at:end] = k_new
    cache.v[:, :, at:end] = v_new


def cache_overwrite(cache, k_new, v_new):
    _cache_write(cache, k_new, v_new, 0)
    cache.length += k_new.size(2)
    return cache.k[:, :, : cache.length], cache.v[:, :, : cache.length]


def cache_only_new(cache, k_new, v_new):
    KVCache.update(cache, k_new, v_new)
    return k_new, v_new


def cache_whole_buffer(cache, k_new, v_new):
    KVCache.update(cache, k_new, v_new)
    return cache.k, cache.v


def cache_no_length(cache, k_new, v_new):
    _cache_write(cache, k_new, v_new, cache.length)
    end = cache.length + k_new.size(2)
    return cache.k[:, :, :end], cache.v[:, :, :end]


def cache_cat(cache, k_new, v_new):
    cache.k = torch.cat([cache.k[:, :, : cache.length], k_new], dim=2)
    cache.v = torch.cat([cache.v[:, :, : cache.length], v_new], dim=2)
    cache.length += k_new.size(2)
    return cache.k, cache.v


def cache_swapped(cache, k_new, v_new):
    k, v = KVCache.update(cache, k_new, v_new)
    return v, k


def cache_list(cache, k_new, v_new):
    return list(KVCache.update(cache, k_new, v_new))


def cache_not_stored(cache, k_new, v_new):
    k = torch.cat([cache.k[:, :, : cache.length], k_new], dim=2)
    v = torch.cat([cache.v[:, :, : cache.length], v_new], dim=2)
    cache.length += k_new.size(2)
    return k, v


def cache_calls_update(cache, k_new, v_new):
    return cache.update(k_new, v_new)


def cache_no_check(cache, k_new, v_new):
    _cache_write(cache, k_new, v_new, cache.length)
    cache.length += k_new.size(2)
    return cache.k[:, :, : cache.length], cache.v[:, :, : cache.length]


def cache_off_by_one(cache, k_new, v_new):
    if cache.length + k_new.size(2) >= cache.max_len:
        raise ValueError("full")
    return cache_no_check(cache, k_new, v_new)


def cache_length_first(cache, k_new, v_new):
    cache.length += k_new.size(2)
    if cache.length > cache.max_len:
        raise ValueError("full")
    _cache_write(cache, k_new, v_new, cache.length - k_new.size(2))
    return cache.k[:, :, : cache.length], cache.v[:, :, : cache.length]


WRONG_CACHE = [
    (cache_overwrite, "not from position 0"),
    (cache_only_new, "every position cached so far"),
    (cache_whole_buffer, "only the positions filled"),
    (cache_no_length, "advance cache.length"),
    (cache_cat, "preallocated"),
    (cache_swapped, "(keys, values)"),
    (cache_list, "tuple of two tensors"),
    (cache_not_stored, "store the new positions"),
    (cache_calls_update, "called cache.update"),
]
# Once caught by the hidden tests only; the visible cell tries these rules too.
CAUGHT_VISIBLE_CACHE = [
    (cache_no_check, "raise ValueError"),
    (cache_off_by_one, "raised ValueError"),
    (cache_length_first, "changed cache.length"),
]

WRONG = {
    "softmax_with_temperature": WRONG_SOFTMAX + CAUGHT_VISIBLE_SOFTMAX,
    "top_k_filter": WRONG_TOP_K + CAUGHT_VISIBLE_TOP_K,
    "top_p_filter": WRONG_TOP_P + CAUGHT_VISIBLE_TOP_P,
    "sample_token": WRONG_STEP + CAUGHT_VISIBLE_STEP,
    "kv_cache_update": WRONG_CACHE + CAUGHT_VISIBLE_CACHE,
}



def _cases(table):
    return [
        pytest.param(check, fn, hint, id=f"{check}-{i}")
        for check, rows in table.items()
        for i, (fn, hint) in enumerate(rows)
    ]


@pytest.mark.parametrize(("check", "fn", "hint"), _cases(WRONG))
@pytest.mark.parametrize("which", ["visible", "hidden"])
def test_wrong_answer_fails_with_hint(check, fn, hint, which):
    with pytest.raises(AssertionError, match=_literal(hint)):
        getattr(checks, check)(fn, **_args(check, which))


def _literal(text: str) -> str:
    return re.escape(text)


# cached_generation: the pieces are checked one by one above; here, the messages.
def test_cached_generation_names_the_broken_piece():
    with pytest.raises(AssertionError, match="logits for the next token differ"):
        checks.cached_generation(sample_token, cache_overwrite)
    with pytest.raises(AssertionError, match="logits for the next token differ"):
        checks.cached_generation(sample_token, cache_only_new)
    with pytest.raises(AssertionError, match="the model failed while using your kv_cache_update"):
        checks.cached_generation(sample_token, lambda c, k, v: KVCache.update(c, k, v) and None)
    with pytest.raises(AssertionError, match=r"run checks\.sample_token"):
        checks.cached_generation(step_global_rng, ref_update)
    with pytest.raises(AssertionError, match="raised ValueError"):  # cannot fill the cache
        checks.cached_generation(sample_token, cache_off_by_one)
    # Mistakes that only their own exercise's cell catches pass generation.
    checks.cached_generation(lambda *a: _step(*a, order="p_first"), cache_no_check)
    checks.cached_generation(
        lambda *a: _step(*a, order="p_first"), cache_no_check, **HIDDEN_ARGS["cached_generation"]
    )


# ------------------------------------------------------------------ messages
def test_messages_name_the_input_and_both_results():
    with pytest.raises(AssertionError) as e:
        checks.top_k_filter(topk_plus_one)
    message = str(e.value)
    assert "top_k_filter(tensor([1, 3, 2, 0], dtype=float32), 2)" in message
    assert "expected: tensor([-inf, 3, 2, -inf], dtype=float32)" in message
    assert "got:      tensor([1, 3, 2, -inf], dtype=float32)" in message

    with pytest.raises(AssertionError) as e:
        checks.sample_token(lambda *a: _step(*a, order="times"))
    message = str(e.value)
    assert "temperature=0.5" in message and "probability" in message and "drawn" in message

    with pytest.raises(AssertionError) as e:
        checks.sample_token(lambda x, t, k, p, g: _step(x, t, k + 1 if k else k, p, g))
    assert "rules out were drawn" in str(e.value) and "can never be drawn" in str(e.value)


def test_checks_leave_the_random_state_alone():
    state = torch.get_rng_state()
    checks.cached_generation(sample_token, ref_update)
    checks.sample_token(sample_token, cases=3, draws=200)
    assert torch.equal(torch.get_rng_state(), state)


def test_fixed_top_p_inputs_are_clear_of_boundaries():
    """No random top-p input puts a token's mass before within 1e-4 of p (the one input at
    exactly p has it exactly, in float32 and float64 alike), so these all pass."""
    for seed in (0, 9091, 1, 2, 3):
        checks.top_p_filter(top_p_filter, seed=seed, cases=60)
    for dtype in (torch.float32, torch.float64):
        checks.top_p_filter(lambda x, p, d=dtype: top_p_filter(x.to(d), p).to(x.dtype), cases=0)


# ------------------------------------------------- the registry's wrong answers
@pytest.mark.parametrize("gid", sorted(LESSON07_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, gid):
    """A mistake that once passed the visible cell fails it now; every other cell passes."""
    ns = _namespace(cells, replace={gid: LESSON07_WRONG_CAUGHT_VISIBLE[gid]})
    with pytest.raises(AssertionError):
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    for other in LESSON07_POINTS:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))


# ----------------------------------------------------------- the wrong fixture
# -------------------------------------------- gptcore.sample.softmax_with_temperature
def test_softmax_with_temperature_reference():
    logits = torch.tensor([[2.0, 1.0, 0.0], [1000.0, 999.0, NEG]])
    for t in (0.25, 1.0, 3.0):
        probs = softmax_with_temperature(logits, t)
        assert probs.shape == logits.shape and probs.dtype == torch.float32
        torch.testing.assert_close(probs[0], torch.softmax(logits[0] / t, -1))
        torch.testing.assert_close(probs.sum(-1), torch.ones(2))
        assert probs[1, 2] == 0.0 and bool(torch.isfinite(probs).all())
    assert softmax_with_temperature(logits.double()).dtype == torch.float64
    torch.testing.assert_close(
        softmax_with_temperature(logits, 2.0),
        softmax_with_temperature(apply_temperature(logits, 2.0)),
    )
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(logits, 0.0)
    assert math.isclose(float(softmax_with_temperature(torch.tensor([0.0, 0.0]))[0]), 0.5)


# ------------------------------------------------------------------ the notebook
def test_widget_labels_are_shown_in_full():
    """issue 12: the widget cut its labels ("top_k (0: off)" showed as "top_k (0..."): every
    control is named and sized to its label."""
    (source,) = [
        c.source
        for c in nbformat.read(LESSON_NB.path, as_version=4).cells
        if "interact_manual" in c.source and c.cell_type == "code"
    ]
    controls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "widgets"
        and node.func.attr != "interact_manual"
    ]
    assert len(controls) == 6
    assert 'wide = {"style": {"description_width": "initial"}}' in source
    for node in controls:
        names = {k.arg for k in node.keywords}
        assert "description" in names and None in names, ast.unparse(node)  # None: **wide
