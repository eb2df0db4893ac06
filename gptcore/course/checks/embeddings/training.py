"""Lesson 3's ``train_step`` check: one optimisation step, compared with gptcore's.

Two copies of a seeded model start from the same weights, optimizer state and
leftover gradients; the learner's ``train_step`` trains one copy and
``gptcore.train.train_step`` the other, on the same batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model import BigramLM
from gptcore.train import get_batch
from gptcore.train import train_step as reference_train_step

from ..report import call, check, fail, passed, show, type_name, watching
from ..tensors import compare
from .mistakes import ZERO_GRAD_HINT

__all__ = ["train_step"]


class _DropoutBigram(nn.Module):
    """A bigram with dropout between its embedding and output layer: train() and eval() differ."""

    def __init__(self, vocab_size: int, n_embd: int = 8, p: float = 0.5) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.dropout = nn.Dropout(p)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.dropout(self.token_embedding(idx)))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "SGD(lr=0.5)": lambda ps: torch.optim.SGD(ps, lr=0.5),
    "SGD(lr=0.1, momentum=0.9)": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "AdamW(lr=0.01)": lambda ps: torch.optim.AdamW(ps, lr=0.01),
}
_MODELS: dict[str, Callable[[], nn.Module]] = {
    "BigramLM(11)": lambda: BigramLM(11),
    "BigramLM(11, n_embd=6)": lambda: BigramLM(11, n_embd=6),
    "BigramLM(30, n_embd=4)": lambda: BigramLM(30, n_embd=4),
    "a bigram with dropout, in eval mode": lambda: _DropoutBigram(11),
}


def _setup(model_name: str, opt_name: str, seed: int):
    """A seeded model and optimizer, with leftover gradients from an earlier backward()."""
    torch.manual_seed(seed)
    model = _MODELS[model_name]()
    if "eval mode" in model_name:
        model.eval()
    optimizer = _OPTIMIZERS[opt_name](model.parameters())
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():  # stale gradients that zero_grad() must clear
        p.grad = torch.randn(p.shape, generator=gen)
    return model, optimizer


def _batches(model_name: str, seed: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    V = 30 if "30" in model_name else 11
    gen = torch.Generator().manual_seed(seed + 1)
    data = torch.randint(V, (200,), generator=gen)
    return [get_batch(data, 4, 8, gen) for _ in range(steps)]


def _variant_step(variant: str) -> Callable[..., float]:
    """train_step with one known mistake."""

    def step(model, optimizer, x, y):
        model.train()
        if variant != "no zero_grad":
            optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _replay(model_name, opt_name, seed, batches, k, last_step) -> nn.Module:
    """The model after k reference steps and then ``last_step``."""
    model, optimizer = _setup(model_name, opt_name, seed)
    for x, y in batches[:k]:
        torch.manual_seed(seed + 7)
        reference_train_step(model, optimizer, x, y)
    torch.manual_seed(seed + 7)
    last_step(model, optimizer, *batches[k])
    return model


def _train_cases(rng: random.Random, cases: int
) -> list[tuple[str, str]]:
    setups = [("BigramLM(11)", "SGD(lr=0.5)"), ("BigramLM(11, n_embd=6)", "AdamW(lr=0.01)")]
    setups += [
        ("a bigram with dropout, in eval mode", "AdamW(lr=0.01)"),
        ("a bigram with dropout, in eval mode", "SGD(lr=0.5)"),
        ("BigramLM(30, n_embd=4)", "SGD(lr=0.1, momentum=0.9)"),
    ]
    plain = [m for m in _MODELS if "eval" not in m]
    setups += [(rng.choice(plain), rng.choice(list(_OPTIMIZERS))) for _ in range(cases)]
    return setups


class _StepCount:
    """Counts the steps of one optimizer while on (see report.watching). Its copy goes to
    the learner's process with the optimizer's, so it counts the steps of that copy."""

    gptcore_in_kernel = True

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.steps = 0

    def _record(self, *_: object) -> None:
        self.steps += 1

    def __enter__(self) -> _StepCount:
        self._hook = self.optimizer.register_step_post_hook(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()

    def __getstate__(self) -> dict[str, object]:
        return {"optimizer": self.optimizer, "steps": self.steps}


def _check_train_case(
    fn: Callable[..., float], model_name: str, opt_name: str, s: int, steps: int
) -> int:
    mine, my_opt = _setup(model_name, opt_name, s)
    ref, ref_opt = _setup(model_name, opt_name, s)
    batches = _batches(model_name, s, steps)
    for k, (x, y) in enumerate(batches):
        where = (
            f"train_step(model, optimizer, x, y) at step {k + 1} of {steps} (model = "
            f"{model_name}, optimizer = {opt_name}, x and y of shape {tuple(x.shape)})"
        )
        before = {n: p.detach().clone() for n, p in mine.named_parameters()}
        torch.manual_seed(s + 7)  # the same dropout masks on both sides
        with watching(_StepCount(my_opt)) as stepped:
            got = call(fn, mine, my_opt, x, y, name="train_step", where=where)
        torch.manual_seed(s + 7)
        expected = reference_train_step(ref, ref_opt, x, y)
        _check_step_effects(mine, before, got, stepped.steps, where)
        _check_step_loss(ref, model_name, x, y, got, expected, where)
        no_zero_grad = _replay(model_name, opt_name, s, batches, k, _variant_step("no zero_grad"))
        forgot = dict(no_zero_grad.named_parameters())
        mine_params = dict(mine.named_parameters())
        for n, p in ref.named_parameters():
            compare(
                mine_params[n].detach().as_subclass(torch.Tensor),
                p.detach(),
                f"parameter {n} after {where}",
                mistakes={ZERO_GRAD_HINT: forgot[n].detach()},
            )
    return len(batches)


def _check_step_effects(
    model: nn.Module, before: dict[str, torch.Tensor], got: object, steps: int, where: str
) -> None:
    """Training mode, a float result, exactly one optimizer step, and parameters that moved."""
    if not model.training:
        fail(
            f"{where}: the model is still in eval mode after the step.",
            "call model.train() first. Layers such as dropout behave differently in training, "
            "and a model is often left in eval mode after measuring the validation loss.",
        )
    if isinstance(got, torch.Tensor):
        fail(
            f"{where} returned a {type_name(got)}: {show(got)}. Return a Python float, "
            "loss.item(): a tensor would keep the whole graph of this step alive."
        )
    if type(got) is not float:
        fail(f"{where} must return the loss as a float, not a {type_name(got)}: {show(got)}")
    if steps != 1:
        fail(
            f"{where} called step() {steps} times on the optimizer passed in; call "
            "optimizer.step() exactly once, after loss.backward().",
            "use the optimizer you are given; do not create a new one.",
        )
    if all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()):
        fail(
            f"{where} did not change the model's parameters.",
            "call optimizer.zero_grad() BEFORE loss.backward(): zeroing the gradients between "
            "backward() and step() throws them away.",
        )


def _check_step_loss(
    ref: nn.Module,
    model_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    got: float,
    expected: float,
    where: str,
) -> None:
    """The returned loss is the one before the update, the one backward() ran on."""
    if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-6):
        return
    hint_text = ""
    if "eval" not in model_name:
        with torch.no_grad():
            after = float(ref(x, y)[1])
        if math.isclose(got, after, rel_tol=1e-5, abs_tol=1e-6):
            hint_text = (
                "return the loss computed before optimizer.step(), the one that you called "
                "backward() on."
            )
    fail(f"{where} returned the loss {got!r}, but the loss on this batch is {expected!r}.", hint_text)


@check()
def train_step(
    fn: Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], float],
    *,
    seed: int = 0,
    cases: int = 3,
    steps: int = 3,
) -> None:
    """Check ``fn(model, optimizer, x, y) -> float`` against ``gptcore.train.train_step``.

    Two copies of a seeded model start from the same weights, optimizer state
    and leftover gradients (as if backward() had run before without a step);
    ``fn`` trains one copy and the reference the other, ``steps`` times on the
    same batches. After every step the returned loss (a Python float, the loss
    before the update) and all parameters must match. The edge cases hand over
    a model with dropout that was left in eval mode: ``fn`` must switch it back
    to training mode.
    """
    rng = random.Random(seed)
    total = 0
    for case, (model_name, opt_name) in enumerate(_train_cases(rng, cases)):
        total += _check_train_case(fn, model_name, opt_name, seed * 100 + case, steps)
    passed("train_step", total)
