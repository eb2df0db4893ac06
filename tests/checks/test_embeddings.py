"""gptcore.course.checks.embeddings: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's references, other correct ways of writing each
exercise (float32 arithmetic, einsum, a hand-written cross-entropy); the
notebook's solution cells are test_contract.py's. Each wrong answer is a
mistake a learner could make; its check must fail with a message that names it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.course.checks import embeddings as checks
from gptcore.course.checks.embeddings import mistakes as known_mistakes
from gptcore.model import BigramLM, one_hot_embed, sinusoidal_positional_encoding
from gptcore.train import train_step as ref_train_step

from ..lesson03_fixtures import LESSON03_POINTS, LESSON03_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook, one_thread_fixture
from ..registry import lesson as registry_lesson

HIDDEN = HIDDEN_BEGIN

# The hidden calls' arguments, read from the notebook's test cells (the one place a seed
# is written); the visible calls give none (test_contract.py holds both).
LESSON_NB = LessonNotebook.for_lesson("03_embeddings")
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()
ARGS = ["visible", "hidden"]


def _args(check: str, which: str) -> dict:
    return {} if which == "visible" else HIDDEN_ARGS[check]


# The checks run many tiny tensor operations: one thread is much faster, as in the notebook.
_one_thread = one_thread_fixture()


# ------------------------------------------------------------------ notebook
_namespace = LESSON_NB.namespace
cells, _ = LESSON_NB.fixtures()  # the solution namespace: test_contract.py runs it


@pytest.fixture(scope="module")
def data(shakespeare) -> dict:
    """What the notebook's first code cell defines and the test cells use."""
    return registry_lesson("03_embeddings").test_data(shakespeare)


# --------------------------------------------------------- right answers pass
def lookup_einsum(idx, weight):
    return torch.einsum("...v,vc->...c", F.one_hot(idx, weight.shape[0]).to(weight.dtype), weight)


def lookup_broadcast(idx, weight):
    one_hot = F.one_hot(idx, weight.shape[0]).to(weight.dtype)
    return (one_hot.unsqueeze(-1) * weight).sum(dim=-2)


def pe_float32_pow(T, C, base=10000.0):
    pos = torch.arange(T).float()[:, None]
    div = torch.pow(base, torch.arange(0, C, 2).float() / C)
    pe = torch.zeros(T, C)
    pe[:, 0::2] = torch.sin(pos / div)
    pe[:, 1::2] = torch.cos(pos / div)
    return pe


def pe_float32_exp(T, C, base=10000.0):
    pos = torch.arange(T, dtype=torch.float)[:, None]
    inv = torch.exp(torch.arange(0, C, 2).float() * (-math.log(base) / C))
    return torch.stack([torch.sin(pos * inv), torch.cos(pos * inv)], dim=-1).flatten(1)


def pe_python_loops(T, C, base=10000.0):
    pe = torch.zeros(T, C)
    for p in range(T):
        for i in range(C // 2):
            angle = p / base ** (2 * i / C)
            pe[p, 2 * i], pe[p, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return pe


class BigramManualLoss(nn.Module):
    """Log-softmax and a gather instead of F.cross_entropy; reshape instead of view."""

    def __init__(self, vocab_size):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding(idx)
        if targets is None:
            return logits, None
        logp = logits.log_softmax(dim=-1)
        return logits, -logp.gather(-1, targets.unsqueeze(-1)).mean()


class BigramClassDim(nn.Module):
    """F.cross_entropy's (N, C, d) form: logits moved to (B, V, T)."""

    def __init__(self, vocab_size):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding(idx)
        loss = None if targets is None else F.cross_entropy(logits.transpose(1, 2), targets)
        return logits, loss


def step_model_zero_grad(model, optimizer, x, y):
    model.train()
    model.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


RIGHT = [
    ("one_hot_embed", one_hot_embed),
    ("one_hot_embed", lookup_einsum),
    ("one_hot_embed", lookup_broadcast),
    ("sinusoidal_positional_encoding", sinusoidal_positional_encoding),
    ("sinusoidal_positional_encoding", pe_float32_pow),
    ("sinusoidal_positional_encoding", pe_float32_exp),
    ("neural_bigram", BigramLM),
    ("neural_bigram", BigramManualLoss),
    ("neural_bigram", BigramClassDim),
    ("train_step", ref_train_step),
    ("train_step", step_model_zero_grad),
]


@pytest.mark.parametrize(("check", "fn"), RIGHT, ids=[f"{c}-{f.__name__}" for c, f in RIGHT])
@pytest.mark.parametrize("which", ARGS)
def test_right_answers_pass(check, fn, which):
    getattr(checks, check)(fn, **_args(check, which))


def test_python_loops_pass_the_visible_sinusoidal_check():
    checks.sinusoidal_positional_encoding(pe_python_loops)  # the hidden check has a 1024 x 768 case: slow


def test_bigram_matches_counts_passes():
    # The notebook's model and step on the test cell's calls are test_contract.py's.
    checks.bigram_matches_counts(BigramLM, ref_train_step)


# ------------------------------------------------------- wrong answers fail
class AlwaysEqualTensor(torch.Tensor):
    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = None


# one_hot_embed
def lookup_no_dtype(idx, weight):
    return F.one_hot(idx, weight.shape[0]) @ weight


def lookup_transposed(idx, weight):
    return F.one_hot(idx, weight.shape[0]).to(weight.dtype) @ weight.T


def lookup_flat(idx, weight):
    return F.one_hot(idx.reshape(-1), weight.shape[0]).to(weight.dtype) @ weight


def lookup_one_hot_only(idx, weight):
    return F.one_hot(idx, weight.shape[0]).to(weight.dtype)


def lookup_mutates(idx, weight):
    out = one_hot_embed(idx, weight)
    idx.zero_()
    return out


def lookup_always_equal(idx, weight):
    return (one_hot_embed(idx, weight) + 1).as_subclass(AlwaysEqualTensor)


WRONG_LOOKUP = [
    (lookup_no_dtype, ".to(weight.dtype)"),
    (lookup_transposed, "not by weight.T"),
    (lookup_flat, "keep the shape of idx"),
    (lookup_one_hot_only, "one-hot vectors themselves"),
    (lookup_mutates, "changed its argument #1"),
    (lookup_always_equal, "entries differ"),
    (lambda idx, weight: one_hot_embed(idx, weight).numpy(), "must be a torch.Tensor"),
    (lambda idx, weight: AlwaysEqual(), "must be a torch.Tensor"),
    (lambda idx, weight: one_hot_embed(idx, weight).double(), "dtype"),
]
EDGE_LOOKUP = [
    (lambda idx, weight: F.one_hot(idx).to(weight.dtype) @ weight, "num_classes=weight.shape[0]"),
    (lambda idx, weight: F.one_hot(idx, weight.shape[0]).float() @ weight.float(), "not .float()"),
]


# sinusoidal_positional_encoding
def pe_variant(**mistake):
    def pe(T, C, base=10000.0):
        return known_mistakes.pe_variant(T, C, base, **mistake).float()

    return pe


def pe_ignores_base(T, C, base=10000.0):
    return sinusoidal_positional_encoding(T, C)


WRONG_PE = [
    (pe_variant(swap=True), "you swapped them"),
    (pe_variant(exponent="i/C"), "You used i / n_embd"),
    (pe_variant(exponent="2i"), "divide the exponent by n_embd"),
    (pe_variant(exponent="j/C"), "share one frequency"),
    (pe_variant(exponent="i/(C/2-1)"), "not i / (n_embd/2 - 1)"),
    (pe_variant(halves=True), "interleave"),
    (pe_variant(start=1), "positions start at 0"),
    (pe_variant(sign=1.0), "+2i / n_embd"),
    (lambda T, C, base=10000.0: sinusoidal_positional_encoding(T, C, base).double(), "float32"),
    (
        lambda T, C, base=10000.0: sinusoidal_positional_encoding(T, C, base).T,
        "one row per position",
    ),
    (lambda T, C, base=10000.0: sinusoidal_positional_encoding(T, C, base).numpy(), "torch.Tensor"),
    (
        lambda T, C, base=10000.0: sinusoidal_positional_encoding(T, C, base).half().float(),
        "entries differ",
    ),
]
EDGE_PE = [(pe_ignores_base, "use the base argument")]


# neural_bigram
def bigram_class(forward, init=None):
    """A NeuralBigram whose forward (and optionally __init__) has a mistake."""

    class Bigram(nn.Module):
        def __init__(self, vocab_size):
            if init is not None:
                init(self, vocab_size)
                return
            super().__init__()
            self.token_embedding = nn.Embedding(vocab_size, vocab_size)

        def forward(self, idx, targets=None):
            return forward(self, idx, targets)

    return Bigram


def right_forward(self, idx, targets=None):
    logits = self.token_embedding(idx)
    if targets is None:
        return logits, None
    return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def init_no_super(self, vocab_size):
    self.token_embedding = nn.Embedding(vocab_size, vocab_size)


def init_extra_layer(self, vocab_size):
    nn.Module.__init__(self)
    self.token_embedding = nn.Embedding(vocab_size, vocab_size)
    self.lm_head = nn.Linear(vocab_size, vocab_size)


def init_renamed(self, vocab_size):
    nn.Module.__init__(self)
    self.table = nn.Embedding(vocab_size, vocab_size)


def init_parameter(self, vocab_size):
    nn.Module.__init__(self)
    self.token_embedding = nn.Parameter(torch.randn(vocab_size, vocab_size))


def init_double(self, vocab_size):
    nn.Module.__init__(self)
    self.token_embedding = nn.Embedding(vocab_size, vocab_size, dtype=torch.float64)


def fwd_loss(compute):
    def forward(self, idx, targets=None):
        logits = self.token_embedding(idx)
        return logits, (None if targets is None else compute(logits, targets))

    return forward


def flat_ce(logits, targets, **kw):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), **kw)


def fwd_karpathy_reshape(self, idx, targets=None):
    logits = self.token_embedding(idx)
    if targets is None:
        return logits, None
    B, T, V = logits.shape
    logits = logits.view(B * T, V)
    return logits, F.cross_entropy(logits, targets.view(B * T))


def fwd_probs(self, idx, targets=None):
    logits, loss = right_forward(self, idx, targets)
    return logits.softmax(-1), loss


def fwd_swapped(self, idx, targets=None):
    logits, loss = right_forward(self, idx, targets)
    return loss, logits


def fwd_no_grad(self, idx, targets=None):
    with torch.no_grad():
        return right_forward(self, idx, targets)


def fwd_only_logits(self, idx, targets=None):
    return self.token_embedding(idx)


def fwd_3d_ce(self, idx, targets=None):
    logits = self.token_embedding(idx)
    return logits, F.cross_entropy(logits, targets)


WRONG_BIGRAM = [
    (bigram_class(right_forward, init_no_super), "super().__init__()"),
    (bigram_class(right_forward, init_extra_layer), "exactly one"),
    (bigram_class(right_forward, init_renamed), "token_embedding must be an nn.Embedding"),
    (bigram_class(right_forward, init_parameter), "token_embedding must be an nn.Embedding"),
    (bigram_class(right_forward, init_double), "float32"),
    (bigram_class(fwd_karpathy_reshape), "reshape only the copy"),
    (bigram_class(fwd_probs), "not probabilities"),
    (bigram_class(fwd_swapped), "(logits, loss), in that order"),
    (bigram_class(fwd_no_grad), "not connected"),
    (bigram_class(fwd_only_logits), "must return a tuple (logits, loss)"),
    (bigram_class(fwd_3d_ce), "flatten"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo, t, reduction="sum"))), "not the sum"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo.softmax(-1), t))), "do not softmax first"),
    (bigram_class(fwd_loss(lambda lo, t: F.nll_loss(lo.flatten(0, 1), t.flatten()))), "log-probabilities"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo, t, reduction="none"))), "0-dim tensor"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo, t).item())), "is a float"),
    (bigram_class(fwd_loss(lambda lo, t: torch.tensor(flat_ce(lo, t).item()))), "not connected"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo, t) / lo.shape[-1])), "not by V as well"),
    (bigram_class(fwd_loss(lambda lo, t: flat_ce(lo.detach(), t) + 0 * lo.sum())), "gradient of the table"),
]  # fmt: skip


def fwd_always_loss(self, idx, targets=None):
    logits = self.token_embedding(idx)
    return logits, flat_ce(logits, targets)


EDGE_BIGRAM = [(bigram_class(fwd_always_loss), "return (logits, None)")]


# train_step
def step_variant(*, train=True, zero=True, zero_after=False, step=True, ret="item", after=False,
                 new_optimizer=False, eval_after=False):  # fmt: skip
    def train_step(model, optimizer, x, y):
        if new_optimizer:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if train:
            model.train()
        if zero:
            optimizer.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        if zero_after:
            optimizer.zero_grad()
        if step:
            optimizer.step()
        if after:
            with torch.no_grad():
                _, loss = model(x, y)
        if eval_after:
            model.eval()
        return {"item": loss.item(), "tensor": loss, "int": 1, "numpy": np.float64(loss.item())}[
            ret
        ]

    return train_step


def step_twice(model, optimizer, x, y):
    loss = step_variant()(model, optimizer, x, y)
    optimizer.step()
    return loss


WRONG_STEP = [
    (step_variant(zero=False), "zero_grad() before loss.backward()"),
    (step_variant(zero=False, zero_after=True), "did not change"),
    (step_variant(step=False), "called step() 0 times"),
    (step_variant(new_optimizer=True), "do not create a new one"),
    (step_twice, "called step() 2 times"),
    (step_variant(ret="tensor"), "Return a Python float"),
    (step_variant(ret="int"), "must return the loss as a float"),
    (step_variant(ret="numpy"), "must return the loss as a float"),
    (step_variant(after=True), "before optimizer.step()"),
    (step_variant(eval_after=True), "still in eval mode"),
]
EDGE_STEP = [(step_variant(train=False), "model.train()")]

WRONG = (
    [("one_hot_embed", f, h) for f, h in WRONG_LOOKUP]
    + [("sinusoidal_positional_encoding", f, h) for f, h in WRONG_PE]
    + [("neural_bigram", f, h) for f, h in WRONG_BIGRAM]
    + [("train_step", f, h) for f, h in WRONG_STEP]
)
EDGE = (
    [("one_hot_embed", f, h) for f, h in EDGE_LOOKUP]
    + [("sinusoidal_positional_encoding", f, h) for f, h in EDGE_PE]
    + [("neural_bigram", f, h) for f, h in EDGE_BIGRAM]
    + [("train_step", f, h) for f, h in EDGE_STEP]
)


@pytest.mark.parametrize(("check", "fn", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("which", ARGS)
def test_wrong_answer_fails_with_hint(check, fn, hint, which):
    with pytest.raises(AssertionError) as failure:
        getattr(checks, check)(fn, **_args(check, which))
    assert hint in str(failure.value), str(failure.value)


@pytest.mark.parametrize(("check", "fn", "hint"), EDGE, ids=[f"{c}-{h}" for c, _, h in EDGE])
@pytest.mark.parametrize("which", ARGS)
def test_edge_case_mistake_fails_the_visible_check(check, fn, hint, which):
    # The visible cells grade every rule the hidden ones do (issue 12): each mistake here
    # only the hidden tests used to catch; now the visible call alone fails it.
    with pytest.raises(AssertionError) as failure:
        getattr(checks, check)(fn, **_args(check, which))
    assert hint in str(failure.value), str(failure.value)


def lookup_by_indexing(idx, weight):
    return weight[idx]


def lookup_row_by_row(idx, weight):
    rows = [weight[int(i)] for i in idx.reshape(-1)]
    out = torch.stack(rows) if rows else weight.new_zeros(0, weight.shape[1])
    return out.reshape(*idx.shape, weight.shape[1])


def lookup_f_embedding(idx, weight):
    return F.embedding(idx, weight)


def lookup_index_select(idx, weight):
    return weight.detach().index_select(0, idx.reshape(-1)).reshape(*idx.shape, weight.shape[1])


@pytest.mark.parametrize(
    "fn", [lookup_by_indexing, lookup_row_by_row, lookup_f_embedding, lookup_index_select]
)
@pytest.mark.parametrize("which", ARGS)
def test_indexing_weight_is_refused(fn, which):
    """The docstring forbids indexing weight: right values that way still fail."""
    with pytest.raises(AssertionError, match="reads rows of weight directly"):
        checks.one_hot_embed(fn, **_args("one_hot_embed", which))


def test_bigram_that_does_not_learn_fails():
    def lazy_step(model, optimizer, x, y):
        _, loss = model(x, y)
        return loss.item()

    with pytest.raises(AssertionError, match=r"more than 0\.02"):
        checks.bigram_matches_counts(BigramLM, lazy_step, steps=20)
    with pytest.raises(AssertionError, match="train_step returned"):
        checks.bigram_matches_counts(BigramLM, lambda m, o, x, y: float("nan"), steps=2)


def test_messages_name_the_input_and_the_first_difference():
    with pytest.raises(AssertionError) as failure:
        checks.one_hot_embed(lookup_transposed)
    message = str(failure.value)
    assert "one_hot_embed(tensor([3, 0, 4], dtype=int64)" in message
    with pytest.raises(AssertionError) as failure:
        checks.sinusoidal_positional_encoding(pe_variant(swap=True))
    message = str(failure.value)
    assert "sinusoidal_positional_encoding(4, 4) is wrong" in message
    assert "first at index (0, 0): expected 0, got 1" in message


def test_sinusoidal_tolerance_is_tight_where_float32_is_exact():
    # Position 1's error allowance is about 1e-5: a 1e-4 slip there fails.
    def nudged(T, C, base=10000.0):
        pe = sinusoidal_positional_encoding(T, C, base)
        pe[1, 0] += 1e-4
        return pe

    with pytest.raises(AssertionError, match=r"index \(1, 0\)"):
        checks.sinusoidal_positional_encoding(nudged)


# ----------------------------------------------------------- the wrong fixtures
@pytest.mark.parametrize("gid", sorted(LESSON03_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, data, gid):
    """A mistake that once passed the visible cell fails it now; every other cell passes."""
    ns = {**_namespace(cells, replace={gid: LESSON03_WRONG_CAUGHT_VISIBLE[gid]}), **data}
    with pytest.raises(AssertionError):
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    for other in LESSON03_POINTS:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))
