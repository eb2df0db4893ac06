"""gptcore.course.checks.attention and gptcore.model.attention: right answers pass, wrong answers fail with the hint.

The right answers are gptcore's references, other correct ways of writing each
exercise (einsum, comparisons instead of tril, reshape instead of view), and
the solution cells of the lesson notebook (executed here from the notebook's
JSON). Each wrong answer is a mistake a learner could make; its check must
fail with a message that names it. The last section tests gptcore.model.attention
itself: the explicit path against the fused one, the mask, the heads.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptcore.course.checks import attention as checks
from gptcore.model import GPTConfig
from gptcore.model import attention as ref
from gptcore.model.attention import CausalSelfAttention

from ..lesson04_fixtures import LESSON04_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook, one_thread_fixture

HIDDEN = HIDDEN_BEGIN
LESSON_NB = LessonNotebook.for_lesson("04_attention")

# The keyword arguments of each check's hidden call, read from the notebook (the one place
# the seeds are written); the visible call passes none.
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()
ARGS = ["visible", "hidden"]


def _args(check: str, which: str) -> dict:
    return {} if which == "visible" else HIDDEN_ARGS[check]


# The checks run many tiny tensor operations: one thread is much faster, as in the notebook.
_one_thread = one_thread_fixture()

cells, solution = LESSON_NB.fixtures()


# --------------------------------------------------------- right answers pass
def ref_attention(q, k, v, mask=None):
    return ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)


def ref_self_attention(x, attn):
    q, k, v = attn.c_attn(x).split(attn.n_embd, dim=2)
    q, k, v = (ref.split_heads(z, attn.n_head) for z in (q, k, v))
    y, w = ref.scaled_dot_product_attention(
        q, k, v, ref.causal_mask(x.size(1)), return_weights=True
    )
    return attn.c_proj(ref.merge_heads(y)), w


def scores_einsum(q, k):
    return torch.einsum("...id,...jd->...ij", q / math.sqrt(q.shape[-1]), k)


def mask_compare(t):
    i = torch.arange(t)
    return i[None, :] <= i[:, None]


def softmax_max_values(x, dim=-1):
    e = (x - x.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim, keepdim=True)


def attention_big_negative(q, k, v, mask=None):
    scores = q @ k.mT / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype))
    weights = softmax_max_values(scores)
    return torch.matmul(weights, v), weights


def split_reshape_permute(x, n_head):
    b, t, _ = x.shape
    return x.reshape(b, t, n_head, -1).permute(0, 2, 1, 3)


def merge_contiguous_view(x):
    b, _, t, _ = x.shape
    return x.permute(0, 2, 1, 3).contiguous().view(b, t, -1)


def self_attention_chunk(x, attn):
    q, k, v = attn.c_attn(x).chunk(3, dim=-1)
    q, k, v = (split_reshape_permute(z, attn.n_head) for z in (q, k, v))
    y, w = attention_big_negative(q, k, v, mask_compare(x.shape[1]))
    return attn.c_proj(merge_contiguous_view(y)), w


RIGHT = [
    ("attention_scores", ref.attention_scores),
    ("attention_scores", scores_einsum),
    ("causal_mask", ref.causal_mask),
    ("causal_mask", mask_compare),
    ("stable_softmax", ref.stable_softmax),
    ("stable_softmax", softmax_max_values),
    ("scaled_dot_product_attention", ref_attention),
    ("scaled_dot_product_attention", attention_big_negative),
    ("split_heads", ref.split_heads),
    ("split_heads", split_reshape_permute),
    ("merge_heads", ref.merge_heads),
    ("merge_heads", merge_contiguous_view),
    ("causal_self_attention", ref_self_attention),
    ("causal_self_attention", self_attention_chunk),
]


@pytest.mark.parametrize(("check", "fn"), RIGHT, ids=[f"{c}-{f.__name__}" for c, f in RIGHT])
@pytest.mark.parametrize("which", ARGS)
def test_right_answers_pass(check, fn, which):
    getattr(checks, check)(fn, **_args(check, which))


# ------------------------------------------------------- wrong answers fail
class EqualTensor(torch.Tensor):
    """A tensor subclass that claims to equal everything."""

    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class AlwaysEqual:
    shape = (2, 3)
    dtype = torch.float32

    def __eq__(self, other):
        return True

    __hash__ = None


def raw(q, k):
    return q @ k.transpose(-2, -1)


def scores_in_place(q, k):
    q /= math.sqrt(q.size(-1))
    return q @ k.transpose(-2, -1)


WRONG_SCORES = [
    (raw, "did you scale by sqrt(head_dim)?"),
    (lambda q, k: raw(q, k) / q.size(-1), "not by d itself"),
    (lambda q, k: raw(q, k) * math.sqrt(q.size(-1)), "you multiplied"),
    (lambda q, k: k @ q.transpose(-2, -1) / math.sqrt(q.size(-1)), "not k @ q.transpose(-2, -1)"),
    (lambda q, k: raw(q, k) / math.sqrt(q.size(-2)), "not by the number of positions"),
    (lambda q, k: q @ k.T / math.sqrt(q.size(-1)), "k.T"),
    (lambda q, k: raw(q.double(), k.double()) / math.sqrt(q.size(-1)), "dtype"),
    (lambda q, k: (raw(q, k) / math.sqrt(q.size(-1))).numpy(), "keep the computation in torch"),
    (lambda q, k: AlwaysEqual(), "must be a torch.Tensor"),
    (lambda q, k: ref.attention_scores(q, k).as_subclass(EqualTensor), "subclass"),
    (lambda q, k: ref.attention_scores(q, k).tolist(), "must be a torch.Tensor"),
    (scores_in_place, "changed its argument #1 in place"),
]

WRONG_MASK = [
    (lambda t: torch.ones(t, t, dtype=torch.bool).triu(), "lets position i see j > i"),
    (lambda t: torch.ones(t, t, dtype=torch.bool).tril(-1), "the diagonal must be True"),
    (lambda t: ~torch.ones(t, t, dtype=torch.bool).tril(), "reversed"),
    (lambda t: torch.ones(t, t, dtype=torch.bool), "everything is True"),
    (lambda t: torch.tril(torch.ones(t, t)), "dtype torch.float32, but it should be torch.bool"),
    (lambda t: torch.ones(t, t, dtype=torch.int64).tril(), "should be torch.bool"),
    (lambda t: torch.ones(t + 1, t + 1, dtype=torch.bool).tril(), "has shape"),
    (lambda t: torch.ones(t, t, dtype=torch.bool).tril().tolist(), "must be a torch.Tensor"),
    (lambda t: ref.causal_mask(t).as_subclass(EqualTensor), "subclass"),
]


def softmax_naive(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim, keepdim=True)


def softmax_global_max(x, dim=-1):
    e = (x - x.max()).exp()
    return e / e.sum(dim, keepdim=True)


def softmax_no_keepdim(x, dim=-1):
    e = (x - x.amax(dim)).exp()
    return e / e.sum(dim, keepdim=True)


def softmax_in_place(x, dim=-1):
    x -= x.amax(dim, keepdim=True)
    e = x.exp()
    return e / e.sum(dim, keepdim=True)


def softmax_last_dim(x, dim=-1):
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def softmax_float32(x, dim=-1):
    return ref.stable_softmax(x.float(), dim)


WRONG_SOFTMAX = [
    (softmax_naive, "softmax overflowed: subtract the row max"),
    (softmax_global_max, "each row's own max"),
    (softmax_no_keepdim, "keepdim=True"),
    (lambda x, dim=-1: (x - x.amax(dim, keepdim=True)).exp(), "divide by the sum"),
    (softmax_in_place, "changed its argument #1 in place"),
    (lambda x, dim=-1: torch.softmax(x, dim), "called torch's softmax"),
    (lambda x, dim=-1: F.softmax(x, dim=dim), "called torch's softmax"),
    (lambda x, dim=-1: x.softmax(dim), "called torch's softmax"),
    (lambda x, dim=-1: x.log_softmax(dim).exp(), "called torch's softmax"),
    (lambda x, dim=-1: torch.nn.Softmax(dim)(x), "called torch's softmax"),
    (lambda x, dim=-1: ref.stable_softmax(x, dim).as_subclass(EqualTensor), "subclass"),
    (lambda x, dim=-1: AlwaysEqual(), "must be a torch.Tensor"),
]
EDGE_SOFTMAX = [
    (softmax_last_dim, "use the dim argument"),
    (softmax_float32, "dtype"),
    (lambda x, axis=-1: ref.stable_softmax(x, axis), "stable_softmax(x, dim=-1)"),
]


def attention_variant(*, fill=float("-inf"), reverse=False, after=False, dim=-1, scale=True,
                      order="out", transpose_out=False):  # fmt: skip
    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / (math.sqrt(q.size(-1)) if scale else 1.0)
        if mask is not None and not after and fill is not None:
            scores = scores.masked_fill(mask if reverse else ~mask, fill)
        weights = ref.stable_softmax(scores, dim)
        if mask is not None and after:
            weights = weights * mask
        out = (weights.transpose(-2, -1) if transpose_out else weights) @ v
        if order == "weights":
            return weights, out
        if order == "only":
            return out
        if order == "list":
            return [out, weights]
        return out, weights

    return attention


def attention_no_none(q, k, v, mask=None):
    scores = ref.attention_scores(q, k).masked_fill(~mask, float("-inf"))
    weights = ref.stable_softmax(scores)
    return weights @ v, weights


WRONG_ATTENTION = [
    (attention_variant(fill=None), "lets position i see j > i"),
    (attention_variant(fill=None), "the mask was not applied"),
    (attention_variant(fill=0.0), "not 0"),
    (attention_variant(reverse=True), "MAY attend"),
    (attention_variant(after=True), "before the softmax"),
    (attention_variant(dim=-2), "over the keys"),
    (attention_variant(scale=False), "did you scale by sqrt(head_dim)?"),
    (attention_variant(order="weights"), "in the order (out, weights)"),
    (attention_variant(order="only"), "return both"),
    (attention_variant(order="list"), "return a tuple"),
    (attention_variant(transpose_out=True), "out = weights @ v"),
    (lambda q, k, v, mask=None: (AlwaysEqual(), AlwaysEqual()), "must be a torch.Tensor"),
    (
        lambda q, k, v, mask=None: tuple(t.as_subclass(EqualTensor) for t in ref_attention(q, k, v, mask)),
        "subclass",
    ),
]  # fmt: skip
EDGE_ATTENTION = [(attention_no_none, "mask may be None")]


def split_no_transpose(x, n_head):
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head)


WRONG_SPLIT = [
    (lambda x, n: x.reshape(x.shape[0], n, x.shape[1], -1), "heads split in the wrong order"),
    (lambda x, n: x.reshape(*x.shape[:2], -1, n).permute(0, 3, 1, 2), "contiguous slice"),
    (split_no_transpose, "transpose(1, 2)"),
    (lambda x, n: x.view(*x.shape[:2], n, x.shape[2] / n).transpose(1, 2), "integer division"),
    (lambda x, n: ref.split_heads(x, n).as_subclass(EqualTensor), "subclass"),
]


def merge_no_transpose(x):
    b, h, t, hs = x.shape
    return x.reshape(b, t, h * hs)


def merge_view_after_transpose(x):
    b, h, t, hs = x.shape
    return x.transpose(1, 2).view(b, t, h * hs)


WRONG_MERGE = [
    (merge_no_transpose, "heads merged in the wrong order: transpose before view"),
    (merge_view_after_transpose, "call .contiguous() first, or use .reshape"),
    (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), "keep each head's channels together"),
    (lambda x: x.transpose(1, 2), "flatten the last two dims"),
    (lambda x: ref.merge_heads(x).as_subclass(EqualTensor), "subclass"),
]  # fmt: skip


def self_attention_variant(*, order=(0, 1, 2), masked=True, proj=True, heads=True, ret="both"):
    def causal_self_attention(x, attn):
        qkv = attn.c_attn(x).split(attn.n_embd, dim=-1)
        n = attn.n_head if heads else 1
        q, k, v = (ref.split_heads(qkv[i], n) for i in order)
        mask = ref.causal_mask(x.size(1)) if masked else None
        y, w = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        y = ref.merge_heads(y)
        y = attn.c_proj(y) if proj else y
        return (y, w) if ret == "both" else y

    return causal_self_attention


def self_attention_calls_attn(x, attn):
    return attn(x, return_weights=True)


def self_attention_zeroes_bias(x, attn):
    if attn.c_proj.bias is not None:
        with torch.no_grad():
            attn.c_proj.bias.zero_()
    return ref_self_attention(x, attn)


WRONG_SELF_ATTENTION = [
    (self_attention_calls_attn, "not call attn(x)"),
    (self_attention_variant(masked=False), "lets position i see j > i"),
    (self_attention_variant(order=(1, 0, 2)), "in that order"),
    (self_attention_variant(order=(0, 2, 1)), "in that order"),
    (self_attention_variant(proj=False), "attn.c_proj"),
    (self_attention_variant(heads=False), "attn.n_head heads"),
    (self_attention_variant(ret="y"), "return both"),
    (self_attention_zeroes_bias, "changed attn's weights"),
]

WRONG = (
    [("attention_scores", f, h) for f, h in WRONG_SCORES]
    + [("causal_mask", f, h) for f, h in WRONG_MASK]
    + [("stable_softmax", f, h) for f, h in WRONG_SOFTMAX]
    + [("scaled_dot_product_attention", f, h) for f, h in WRONG_ATTENTION]
    + [("split_heads", f, h) for f, h in WRONG_SPLIT]
    + [("merge_heads", f, h) for f, h in WRONG_MERGE]
    + [("causal_self_attention", f, h) for f, h in WRONG_SELF_ATTENTION]
)
EDGE_SPLIT = [(lambda x, n: ref.split_heads(x, n).float(), "keep x's dtype")]
EDGE_CASES = (
    [("stable_softmax", f, h) for f, h in EDGE_SOFTMAX]
    + [("scaled_dot_product_attention", f, h) for f, h in EDGE_ATTENTION]
    + [("split_heads", f, h) for f, h in EDGE_SPLIT]
)


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")  # the k.T mistake
@pytest.mark.parametrize(("check", "fn", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("which", ARGS)
def test_wrong_answer_fails_with_hint(check, fn, hint, which):
    with pytest.raises(AssertionError) as failure:
        getattr(checks, check)(fn, **_args(check, which))
    assert hint in str(failure.value), str(failure.value)


@pytest.mark.parametrize(
    ("check", "fn", "hint"), EDGE_CASES, ids=[f"{c}-{h}" for c, _, h in EDGE_CASES]
)
@pytest.mark.parametrize("which", ARGS)
def test_edge_case_mistake_fails_visible_too(check, fn, hint, which):
    """Mistakes only the hidden tests used to catch: the visible call catches them now."""
    with pytest.raises(AssertionError) as failure:
        getattr(checks, check)(fn, **_args(check, which))
    assert hint in str(failure.value), str(failure.value)


def test_messages_name_the_input_and_the_first_difference():
    with pytest.raises(AssertionError) as failure:
        checks.attention_scores(raw)
    message = str(failure.value)
    assert (
        "attention_scores(tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]), tensor(" in message
    )
    assert "is wrong in the scores" in message
    assert "first difference at index [0, 0]: expected 1, got 2" in message
    assert "expected: [[1.0, 0.0, 2.0], [1.0, 4.0, 0.0]]" in message


def test_a_causal_mask_argument_is_named_as_such():
    with pytest.raises(AssertionError) as failure:
        checks.scaled_dot_product_attention(attention_variant(fill=None))
    assert "torch.float32" not in str(failure.value)
    assert str(failure.value).startswith(
        "scaled_dot_product_attention(tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), tensor([[0.0, 0.0], [0.0, 0.0], "
        "[0.0, 0.0]]), tensor([[1.0], [2.0], [3.0]]), causal_mask(3)) is wrong"
    )


def test_mask_message_draws_both_masks():
    with pytest.raises(AssertionError) as failure:
        checks.causal_mask(lambda t: torch.ones(t, t, dtype=torch.bool).triu())
    message = str(failure.value)
    assert "causal_mask(4) is wrong" in message
    assert "    1 . . .\n    1 1 . .\n    1 1 1 .\n    1 1 1 1" in message  # expected
    assert "    1 1 1 1\n    . 1 1 1\n    . . 1 1\n    . . . 1" in message  # got


def test_shape_and_dtype_failures_name_both():
    with pytest.raises(AssertionError, match=r"has shape \(3, 2\), but it should be \(2, 3\)"):
        checks.attention_scores(lambda q, k: k @ q.transpose(-2, -1))
    with pytest.raises(
        AssertionError, match=r"has dtype torch\.float64, but it should be torch\.float32"
    ):
        checks.stable_softmax(lambda x, dim=-1: ref.stable_softmax(x.double(), dim))


def test_checks_leave_torch_as_they_found_it():
    """The global RNG is untouched, and the refused softmax functions are restored."""
    state = torch.get_rng_state()
    checks.causal_self_attention(ref_self_attention, cases=2)
    checks.scaled_dot_product_attention(ref_attention, cases=2)
    with pytest.raises(AssertionError):
        checks.stable_softmax(lambda x, dim=-1: x.softmax(dim))
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.tensor([1.0, 2.0])
    for softmax in (torch.softmax, F.softmax, torch.Tensor.softmax, torch.special.softmax):
        assert torch.allclose(softmax(x, -1), ref.stable_softmax(x))
    assert "softmax" not in vars(torch.Tensor)  # the patch was removed, not shadowed
    assert CausalSelfAttention.forward.__name__ == "forward"


def test_an_overflow_of_another_kind_is_still_named():
    def overflow_in_sum(x, dim=-1):
        e = (x - x.amax(dim, keepdim=True)).exp()
        return (
            e / (e * torch.exp(x.abs().amax())).sum(dim, keepdim=True) * torch.exp(x.abs().amax())
        )

    with pytest.raises(AssertionError, match="softmax overflowed"):
        checks.stable_softmax(overflow_in_sum)


def test_numpy_integer_and_list_results_fail_on_type():
    with pytest.raises(AssertionError, match=r"must be a torch.Tensor, but it is a numpy.ndarray"):
        checks.split_heads(lambda x, n: np.asarray(ref.split_heads(x, n)))


# ------------------------------------------------- the notebook's test cells
@pytest.mark.parametrize("gid", sorted(LESSON04_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, gid):
    """A mistake that once passed the visible cell fails it now; every other cell passes."""
    ns = LESSON_NB.namespace(cells, replace={gid: LESSON04_WRONG_CAUGHT_VISIBLE[gid]})
    with pytest.raises(AssertionError):
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    for other in LESSON_NB.points:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))


UNNORMALISED_SOFTMAX = """\
def stable_softmax(x, dim=-1):
    return (x - x.amax(dim, keepdim=True)).exp()
"""
MERGE_WITHOUT_TRANSPOSE = """\
def merge_heads(x):
    b, h, t, hs = x.shape
    return x.reshape(b, t, h * hs)
"""


@pytest.mark.parametrize(
    ("exercise", "source", "cell", "named"),
    [
        ("stable_softmax", UNNORMALISED_SOFTMAX, "scaled_dot_product_attention_tests", "stable_softmax"),
        ("merge_heads", MERGE_WITHOUT_TRANSPOSE, "causal_self_attention_tests", "merge_heads"),
    ],
)
def test_a_failure_caused_by_an_earlier_exercise_names_it(cells, exercise, source, cell, named):
    ns = LESSON_NB.namespace(cells, replace={exercise: source})
    with pytest.raises(AssertionError) as failure:
        exec(cells[cell].split(HIDDEN)[0], dict(ns))
    assert str(failure.value).startswith(f"this uses your {named}, which is wrong: "), str(
        failure.value
    )
    assert f"fix {named} first" in str(failure.value)


def test_a_right_answer_blames_nothing(cells, solution):
    """Only a failing check looks at the earlier exercises; a wrong attention with right
    pieces is reported as its own mistake."""
    with pytest.raises(AssertionError) as failure:
        checks.scaled_dot_product_attention(
            attention_variant(fill=None),
            depends_on={k: solution[k] for k in ("attention_scores", "stable_softmax")},
        )
    assert "this uses your" not in str(failure.value)
    assert "the mask was not applied" in str(failure.value)


def test_a_warning_from_the_learners_code_never_reaches_stderr(capsys):
    """nbgrader fails a graded cell that writes to stderr: a right answer that makes torch
    warn must still pass, with the warning shown on stdout."""

    def noisy(q, k):
        warnings.warn("something the learner's code says", UserWarning, stacklevel=1)
        return ref.attention_scores(q, k)

    checks.attention_scores(noisy)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "something the learner's code says" in captured.out


# ------------------------------------------------------------ gptcore.model.attention
def _layer(seed: int = 0, **overrides) -> CausalSelfAttention:
    torch.manual_seed(seed)
    config = GPTConfig.preset("test", **overrides)
    attn = CausalSelfAttention(config)
    with torch.no_grad():  # larger than GPT's init, so the weights are far from uniform
        for p in attn.parameters():
            p.normal_(0.0, 0.3)
    return attn


@pytest.mark.parametrize("n_head", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_explicit_path_equals_fused_path_outputs_and_gradients(n_head, bias):
    attn = _layer(n_head=n_head, bias=bias).eval()
    x = torch.randn(3, 11, 16, requires_grad=True)
    upstream = torch.randn(3, 11, 16)
    results = []
    for explicit in (False, True):
        attn.zero_grad()
        x.grad = None
        y = attn(x, return_weights=True)[0] if explicit else attn(x)
        (y * upstream).sum().backward()
        grads = [x.grad.clone()] + [p.grad.clone() for p in attn.parameters()]
        results.append((y.detach(), grads))
    (fused, fused_grads), (explicit, explicit_grads) = results
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)
    for a, b in zip(explicit_grads, fused_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_weights_rows_sum_to_one_and_are_zero_above_the_diagonal():
    attn = _layer(n_head=4).eval()
    _, weights = attn(torch.randn(2, 9, 16), return_weights=True)
    assert weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))


def test_position_zero_attends_only_to_itself_and_the_future_has_no_effect():
    attn = _layer().eval()
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[:, 5:] = torch.randn(1, 3, 16)  # change only the future of positions 0..4
    with torch.no_grad():
        y, weights = attn(x, return_weights=True)
        y_changed = attn(changed)
    assert torch.equal(weights[..., 0, :], F.one_hot(torch.tensor(0), 8).float().expand(1, 2, 8))
    torch.testing.assert_close(y[:, :5], y_changed[:, :5])
    assert not torch.allclose(y[:, 5:], y_changed[:, 5:])


def test_causal_mask_semantics():
    mask = ref.causal_mask(6)
    assert mask.dtype == torch.bool and mask.shape == (6, 6)
    for i in range(6):
        for j in range(6):
            assert bool(mask[i, j]) == (j <= i)
    q, k, v = torch.randn(3, 2, 3, 6, 8).unbind(0)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # True = may attend, as torch
    torch.testing.assert_close(masked, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(ref.scaled_dot_product_attention(q, k, v, mask), masked)
    assert ref.causal_mask(1).tolist() == [[True]]


def test_scaled_dot_product_attention_matches_torch_without_mask_and_with_other_masks():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 5)
    torch.testing.assert_close(
        ref.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )
    mask = torch.rand(4, 7) < 0.5
    mask[:, 0] = True
    out, weights = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.equal(weights[:, ~mask], torch.zeros_like(weights[:, ~mask]))


def test_attention_scores_is_the_scaled_dot_product():
    q, k = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 7, 16)
    scores = ref.attention_scores(q, k)
    assert scores.shape == (2, 3, 5, 7)
    torch.testing.assert_close(scores, torch.einsum("bhid,bhjd->bhij", q, k) / 4.0)
    big_q, big_k = torch.randn(4000, 1, 256), torch.randn(4000, 1, 256)
    assert 0.9 < ref.attention_scores(big_q, big_k).std().item() < 1.1  # unit spread at any d


def test_stable_softmax_matches_torch_and_never_overflows():
    x = torch.randn(4, 5, 6) * 10
    for dim in (0, 1, 2, -1, -2):
        torch.testing.assert_close(ref.stable_softmax(x, dim), torch.softmax(x, dim))
    huge = torch.tensor([[1000.0, 1001.0], [-1000.0, -1001.0]])
    torch.testing.assert_close(ref.stable_softmax(huge), torch.softmax(huge, -1))
    assert torch.isfinite(ref.stable_softmax(huge)).all()
    masked = torch.tensor([0.0, float("-inf"), 1.0])
    assert ref.stable_softmax(masked)[1] == 0
    x64 = torch.randn(3, 4, dtype=torch.float64)
    assert ref.stable_softmax(x64).dtype == torch.float64
    all_masked = torch.full((3,), float("-inf"))
    assert torch.isnan(ref.stable_softmax(all_masked)).all()  # as torch.softmax: no softmax exists
    assert torch.isnan(torch.softmax(all_masked, -1)).all()


def test_stable_softmax_gradient_matches_torch():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 7, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((ref.stable_softmax(x) * g).sum(), x)
    (grad_torch,) = torch.autograd.grad((torch.softmax(x, -1) * g).sum(), x)
    torch.testing.assert_close(grad_ours, grad_torch)


def test_split_and_merge_heads_are_inverses_and_slice_channels():
    x = torch.randn(2, 5, 12)
    for n_head in (1, 2, 3, 4, 6, 12):
        heads = ref.split_heads(x, n_head)
        hs = 12 // n_head
        assert heads.shape == (2, n_head, 5, hs)
        for h in range(n_head):
            assert torch.equal(heads[:, h], x[..., h * hs : (h + 1) * hs])
        assert torch.equal(ref.merge_heads(heads), x)
    y = torch.randn(2, 3, 5, 4)
    assert torch.equal(ref.split_heads(ref.merge_heads(y), 3), y)


def test_n_embd_not_divisible_by_n_head_raises_value_error():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    config = SimpleNamespace(n_embd=10, n_head=3, dropout=0.0, bias=True)  # skips GPTConfig's check
    with pytest.raises(ValueError, match="not divisible by n_head=3"):
        CausalSelfAttention(config)
