"""Lesson 3's checks of the neural bigram: the module itself, and trained for real.

``neural_bigram`` checks a learner's ``nn.Module`` against
``gptcore.model.BigramLM`` with the same table; ``bigram_matches_counts``
trains it on Tiny Shakespeare and compares it with the count bigram.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.data import load_text, train_val_split
from gptcore.model import BigramLM
from gptcore.ngram import NGramModel
from gptcore.tokenizer import CharTokenizer
from gptcore.train import get_batch

from ..report import call, check, describe_call, drives, fail, passed, show, type_name
from ..tensors import check_tensor, compare
from . import mistakes as known
from .training import train_step

__all__ = ["bigram_matches_counts", "neural_bigram"]


_SUPER_HINT = (
    "start __init__ with super().__init__(): nn.Module must set itself up before you can "
    "assign layers to self."
)


def _construct_hint(e: BaseException) -> str:
    return _SUPER_HINT if "Module.__init__" in str(e) else ""


def _forward_hint(with_targets: bool) -> Callable[[BaseException], str]:
    def hint(e: BaseException) -> str:
        text = str(e)
        if not with_targets and ("None" in text or isinstance(e, (TypeError, AttributeError))):
            return (
                "this call passes no targets (targets=None). Compute the loss only when targets "
                "are given; otherwise return (logits, None)."
            )
        if "Expected target size" in text or "Expected input batch_size" in text:
            return (
                "F.cross_entropy wants logits of shape (N, V) and targets of shape (N,): flatten "
                "with logits.view(B * T, V) and targets.view(B * T)."
            )
        if "view size is not compatible" in text:
            return "view() needs a contiguous tensor; use .reshape(), which copies when it must."
        if "not implemented for 'Float'" in text or "Long" in text:
            return "ids and targets are int64 (Long) tensors; pass them as they are."
        return ""

    return hint


def _bigram_specs(
    rng: random.Random, cases: int
) -> list[tuple[int, int, int, bool]]:
    specs = [(7, 2, 3, True), (65, 4, 16, True)]  # (vocab_size, B, T, with targets)
    specs += [
        (65, 4, 16, False),
        (5, 1, 1, True),
        (1, 2, 3, True),
        (3, 1, 1, False),
        (65, 1, 256, True),
    ]
    specs += [
        (rng.randint(2, 80), rng.randint(1, 6), rng.randint(1, 24), True) for _ in range(cases)
    ]
    return specs


def _new_bigram(cls: Callable[[int], nn.Module], V: int) -> nn.Module:
    """``cls(V)``, after checking it is the one-table bigram the exercise describes."""
    name = getattr(cls, "__name__", "model")
    model = call(cls, V, name=name, where=f"{name}({V})", error_hints=_construct_hint)
    if not isinstance(model, nn.Module):
        fail(f"{name}({V}) must be an nn.Module, but it is a {type_name(model)}: {show(model)}")
    emb = getattr(model, "token_embedding", None)
    if not isinstance(emb, nn.Embedding):
        fail(
            f"{name}({V}).token_embedding must be an nn.Embedding, but it is "
            f"{'missing' if emb is None else 'a ' + type_name(emb)}.",
            "in __init__, store the table as self.token_embedding = nn.Embedding(vocab_size, "
            "vocab_size).",
        )
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if params != {"token_embedding.weight": (V, V)}:
        fail(
            f"{name}({V}) has the parameters {params}, but a bigram needs exactly one: "
            f"token_embedding.weight of shape {(V, V)}, one row of next-token logits per token.",
            "nn.Embedding(vocab_size, vocab_size) and nothing else (no extra layers).",
        )
    if emb.weight.dtype != torch.float32:
        fail(f"{name}({V}).token_embedding must hold float32 weights, not {emb.weight.dtype}.")
    return model


def _logits_shape_hint(B: int, T: int, V: int) -> Callable[[tuple[int, ...]], str]:
    def hint(shape: tuple[int, ...]) -> str:
        if shape == ():
            return "forward returns (logits, loss), in that order."
        if shape == (B * T, V):
            return (
                "return the logits as (B, T, V), one row of V scores per position; reshape only "
                "the copy that you pass to F.cross_entropy."
            )
        return "row idx[b, t] of the table holds the V logits for position (b, t): self.token_embedding(idx)."

    return hint


_LOSS_SHAPE_HINT = (
    "the loss is one number, the mean over all B*T positions: a 0-dim tensor. "
    "F.cross_entropy's default reduction='mean' gives it."
)


def _check_bigram_case(
    cls: Callable[[int], nn.Module], V: int, B: int, T: int, with_targets: bool, seed: int
) -> None:
    name = getattr(cls, "__name__", "model")
    model = _new_bigram(cls, V)
    torch.manual_seed(seed)
    ref = BigramLM(V)
    with torch.no_grad():
        model.token_embedding.weight.copy_(ref.token_embedding.weight)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(V, (B, T), generator=gen)
    targets = torch.randint(V, (B, T), generator=gen)
    args = (idx, targets) if with_targets else (idx,)
    where = describe_call(f"{name}({V})", *args)
    result = call(model, *args, name=name, where=where, error_hints=_forward_hint(with_targets))
    if type(result) is not tuple or len(result) != 2:
        fail(
            f"{where} must return a tuple (logits, loss), but it returned a "
            f"{type_name(result)}: {show(result)}"
        )
    logits, loss = result
    ref_logits, ref_loss = ref(*args)
    expected = ref_logits.detach()
    got = check_tensor(
        logits,
        f"the logits returned by {where}",
        shape=(B, T, V),
        dtype=torch.float32,
        shape_hint=_logits_shape_hint(B, T, V),
        allow_subclass=True,
    )
    compare(got, expected, where, what="the logits", mistakes=known.logits_mistakes(expected))
    if not with_targets:
        if loss is not None:
            fail(f"{where} was called without targets, so its loss must be None, not {show(loss)}.")
        return
    if isinstance(loss, float):
        fail(
            f"the loss returned by {where} is a float. Return the tensor that F.cross_entropy "
            "gives: training calls loss.backward() on it, and a float has no gradient."
        )
    got_loss = check_tensor(
        loss,
        f"the loss returned by {where}",
        shape=(),
        dtype=torch.float32,
        shape_hint=_LOSS_SHAPE_HINT,
        allow_subclass=True,
    )
    if loss.grad_fn is None or not loss.requires_grad:
        fail(
            f"the loss returned by {where} is not connected to the table: backward() cannot reach "
            "token_embedding.weight.",
            "return the tensor that F.cross_entropy gives, not loss.item() or a new "
            "torch.tensor(...), and do not compute it under torch.no_grad().",
        )
    mistakes = known.loss_mistakes(expected, targets)
    compare(got_loss, ref_loss.detach(), where, what="the loss", mistakes=mistakes)
    loss.backward()
    ref_loss.backward()
    grad = model.token_embedding.weight.grad
    if grad is None:
        fail(f"after loss.backward(), the table of {where} has no gradient.")
    compare(
        grad.detach().as_subclass(torch.Tensor),
        ref.token_embedding.weight.grad,
        f"{where}, then loss.backward()",
        what="the gradient of the table",
    )


@check()
def neural_bigram(
    cls: Callable[[int], nn.Module],
    *,
    seed: int = 0,
    cases: int = 8,
) -> None:
    """Check a bigram module ``cls(vocab_size)`` against ``gptcore.model.BigramLM``.

    The module must hold exactly one parameter, ``token_embedding``, an
    ``nn.Embedding(vocab_size, vocab_size)``; the check copies BigramLM's
    seeded table into it. ``model(idx, targets)`` must return ``(logits,
    loss)``: logits (B, T, V) float32, loss a 0-dim float32 tensor (mean
    cross-entropy) through which gradients reach the table. The edge cases
    call ``model(idx)`` without targets, which must return ``(logits, None)``.
    """
    rng = random.Random(seed)
    specs = _bigram_specs(rng, cases)
    for case, (V, B, T, with_targets) in enumerate(specs):
        _check_bigram_case(cls, V, B, T, with_targets, seed * 1000 + case)
    passed("neural bigram", len(specs))


# ------------------------------------------------- the bigram, trained for real
def _count_bigram_val_loss(train: list[int], val: torch.Tensor, V: int, k: float) -> float:
    model = NGramModel(2, V, k=k).fit(train)
    probs = torch.stack(
        [model.next_token_probs([i]) for i in range(V)]
    )  # (V, V), rows: current token
    return float(-probs[val[:-1], val[1:]].log().mean())


@drives
def _train(
    step_fn: Callable[..., float],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: torch.Tensor,
    steps: int,
    batch_size: int,
    block_size: int,
    gen: torch.Generator,
) -> list[object]:
    """``steps`` calls of the learner's ``step_fn`` on batches of ``train``: what each
    returned, up to the first that is not a finite float."""
    losses: list[object] = []
    for _ in range(steps):
        x, y = get_batch(train, batch_size, block_size, gen)  # (B, T) each
        loss = step_fn(model, optimizer, x, y)
        losses.append(loss)
        if not isinstance(loss, float) or not math.isfinite(loss):
            break
    return losses


@check(uses={"NeuralBigram": neural_bigram, "train_step": train_step})
def bigram_matches_counts(
    cls: Callable[[int], nn.Module],
    step_fn: Callable[..., float],
    *,
    steps: int = 600,
    batch_size: int = 64,
    block_size: int = 64,
    lr: float = 0.1,
    k: float = 0.01,
    tolerance: float = 0.02,
    seed: int = 0,
) -> None:
    """Train ``cls(V)`` with ``step_fn`` on Tiny Shakespeare and compare with the count bigram.

    Characters, the standard split (``train_val_split``), AdamW(lr) and
    ``steps`` batches from ``get_batch``. The validation loss is the mean
    cross-entropy of the model's logits on every (current, next) pair of the
    validation text; it must come within ``tolerance`` nats of the add-k
    count bigram's loss on the same pairs.
    """
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    V = tok.vocab_size
    train_ids, val_ids = train_val_split(tok.encode(text))
    train, val = torch.tensor(train_ids), torch.tensor(val_ids)
    target = _count_bigram_val_loss(train_ids, val, V, k)

    torch.manual_seed(seed)
    name = getattr(cls, "__name__", "model")
    model = call(cls, V, name=name, where=f"{name}({V})", error_hints=_construct_hint)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = call(
        _train, step_fn, model, optimizer, train, steps, batch_size, block_size, gen,
        name="train_step", where=f"train_step, in a loop of {steps} steps",
    )  # fmt: skip
    if type(losses) is not list or len(losses) > steps:
        fail(f"the training loop came back with {show(losses)}, not a list of losses.")
    for step, loss in enumerate(losses):
        if not isinstance(loss, float) or not math.isfinite(loss):
            fail(
                f"train_step returned {show(loss)} at step {step}; run the train_step test above first."
            )
    if len(losses) != steps:
        fail(f"the training loop stopped after {len(losses)} of {steps} steps.")
    with torch.no_grad():
        logits, _ = model(val[None, :-1], val[None, 1:])
        if not isinstance(logits, torch.Tensor) or logits.shape != (1, len(val) - 1, V):
            fail(
                "the model's logits have the wrong type or shape; run the neural bigram test above first."
            )
        neural = float(F.cross_entropy(logits.reshape(-1, V).float(), val[1:]))
    gap = neural - target
    if abs(gap) > tolerance:
        fail(
            f"after {steps} steps your {name} has validation loss {neural:.4f} nats, but the count "
            f"bigram has {target:.4f}: {abs(gap):.4f} apart, more than {tolerance}.",
            "run the tests of NeuralBigram and train_step above; both must pass before this one can.",
        )
    print(
        f"✓ neural bigram after {steps} steps: validation loss {neural:.4f} nats; count bigram "
        f"{target:.4f}; difference {gap:+.4f} (allowed ±{tolerance})"
    )
