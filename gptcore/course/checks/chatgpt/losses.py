"""The checks of lesson 8's losses and rewards: SFT's masked loss, the reward model's
pairwise loss, RLHF's KL-penalised reward, a response's log-probability, and DPO."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from gptcore.align import IGNORE_INDEX
from gptcore.align import dpo_loss as ref_dpo
from gptcore.align import kl_penalized_reward as ref_kl
from gptcore.align import masked_lm_loss as ref_masked
from gptcore.align.logprobs import token_logprobs
from gptcore.align.reward import bradley_terry_loss as ref_pairwise

from ..report import Mistakes, call, check, describe_call, fail, passed
from ..tensors import check_tensor, compare, generator

ATOL, RTOL = 1e-5, 1e-4  # float32 sums of a few hundred terms, in another order than gptcore's


def _run(
    fn: Callable[..., Any],
    name: str,
    args: tuple[Any, ...],
    expected: torch.Tensor,
    mistakes: Mistakes,
    *,
    shape_hint: str,
    differentiable: bool,
    arg_names: list[str],
) -> None:
    """One call of the learner's ``fn``: type, dtype, shape, gradient, then value."""
    where = describe_call(name, *args)
    got = call(fn, *args, name=name, where=where, arg_names=arg_names)
    checked = check_tensor(
        got, f"the result of {where}", shape=tuple(expected.shape), dtype=torch.float32,
        shape_hint=shape_hint, dtype_hint="compute in float32, the dtype of the inputs",
    )  # fmt: skip
    if differentiable and not got.requires_grad:
        fail(
            f"the result of {where} carries no gradient, so training cannot learn from it.",
            "compute it with torch operations on the inputs: no .item(), .detach(), .tolist(), "
            "numpy or torch.no_grad()",
        )
    compare(checked, expected, where, atol=ATOL, rtol=RTOL, mistakes=mistakes)


def _grad(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.clone().requires_grad_(True) for t in tensors)


# ------------------------------------------------------------ masked LM loss
def _lm_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = generator(seed)
    hand_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])  # (1, 3, 3)
    inputs = [
        (hand_logits, torch.tensor([[-1, 1, 2]])),  # the first target ignored
        (hand_logits, torch.tensor([[0, -1, -1]])),  # one target kept
        (torch.zeros(2, 2, 4), torch.tensor([[-1, 3], [-1, -1]])),  # a row with nothing kept
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        b, t, v = rng.randint(1, 4), rng.randint(2, 9), rng.randint(2, 12)
        targets = torch.randint(v, (b, t), generator=gen)
        drop = torch.rand(b, t, generator=gen) < rng.random()
        drop[0, -1] = False  # at least one kept target
        # Rows keep different numbers of targets: a mean of row means differs then.
        inputs.append((torch.randn(b, t, v, generator=gen) * 3, targets.masked_fill(drop, IGNORE_INDEX)))
    return inputs


@check()
def masked_lm_loss(
    masked_lm_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``masked_lm_loss(logits, targets)`` against ``gptcore.align.masked_lm_loss``."""
    from . import mistakes as known

    inputs = _lm_inputs(seed, cases)
    for logits, targets in inputs:
        (logits,) = _grad(logits)
        _run(
            masked_lm_loss, "masked_lm_loss", (logits, targets),
            ref_masked(logits, targets).detach(), known.masked_lm_mistakes(logits.detach(), targets),
            shape_hint="the loss is one number: a tensor of shape () (the mean over kept targets)",
            differentiable=True, arg_names=["logits", "targets"],
        )  # fmt: skip
    passed("masked_lm_loss", len(inputs))


# ------------------------------------------------------------- pairwise loss
def _pair_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = generator(seed)
    inputs = [
        (torch.tensor([1.0]), torch.tensor([1.0])),  # a tie: log 2
        (torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])),
        (torch.tensor([100.0, 0.0]), torch.tensor([0.0, 100.0])),  # far apart: log(sigmoid) fails
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        b, scale = rng.randint(1, 16), rng.choice((0.1, 1.0, 5.0))
        inputs.append((torch.randn(b, generator=gen) * scale, torch.randn(b, generator=gen) * scale))
    return inputs


@check()
def pairwise_loss(
    pairwise_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``pairwise_loss(r_chosen, r_rejected)`` against the Bradley-Terry loss."""
    from . import mistakes as known

    inputs = _pair_inputs(seed, cases)
    for rc, rr in inputs:
        rc, rr = _grad(rc, rr)
        _run(
            pairwise_loss, "pairwise_loss", (rc, rr), ref_pairwise(rc, rr).detach(),
            known.pairwise_mistakes(rc.detach(), rr.detach()),
            shape_hint="the loss is one number: the mean over pairs, a tensor of shape ()",
            differentiable=True, arg_names=["r_chosen", "r_rejected"],
        )  # fmt: skip
    passed("pairwise_loss", len(inputs))


# -------------------------------------------------------- KL-penalised reward
def _kl_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    gen = generator(seed)
    reward, lp, lr = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])
    inputs = [(reward, lp, lr, 0.5), (reward, lp, lr, 0.0), (reward, lp, lr, 2.0)]
    rng = random.Random(seed)
    for _ in range(cases):
        b = rng.randint(1, 16)
        lp = -torch.rand(b, generator=gen) * 20
        inputs.append((torch.randn(b, generator=gen), lp, lp - torch.randn(b, generator=gen),
                       rng.choice((0.05, 0.1, 0.3, 1.0))))  # fmt: skip
    return inputs


@check()
def kl_penalized_reward(
    kl_penalized_reward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``kl_penalized_reward(reward, logp_policy, logp_ref, beta)`` against gptcore's."""
    from . import mistakes as known

    inputs = _kl_inputs(seed, cases)
    for reward, lp, lr, beta in inputs:
        _run(
            kl_penalized_reward, "kl_penalized_reward", (reward, lp, lr, beta),
            ref_kl(reward, lp, lr, beta), known.kl_mistakes(reward, lp, lr, beta),
            shape_hint="one penalised reward per reply: shape (B,), like reward; do not average",
            differentiable=False, arg_names=["reward", "logp_policy", "logp_ref", "beta"],
        )  # fmt: skip
    passed("kl_penalized_reward", len(inputs))


# ----------------------------------------------------------- response log-prob
def reference_response_logprob(logits: torch.Tensor, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """gptcore's sequence log-probability, for a batch without padding: (B,)."""
    targets = ids[:, 1:].clone()  # (B, T-1): position t predicts ids[:, t + 1]
    targets[:, : prompt_len - 1] = IGNORE_INDEX  # the prompt's tokens are not scored
    return token_logprobs(logits[:, :-1], targets).sum(-1)


def _logprob_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    gen = generator(seed)
    hand = torch.log(torch.tensor([[[0.5, 0.25, 0.25]] * 4]))  # (1, 4, 3): every step the same
    inputs = [
        (hand, torch.tensor([[0, 1, 0, 2]]), 2),  # log 0.5 + log 0.25
        (hand, torch.tensor([[2, 2, 2, 0]]), 1),  # prompt of one token
        (hand, torch.tensor([[0, 0, 0, 1]]), 3),  # a response of one token
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        b, t, v = rng.randint(1, 4), rng.randint(3, 10), rng.randint(2, 12)
        inputs.append((torch.randn(b, t, v, generator=gen) * 2, torch.randint(v, (b, t), generator=gen),
                       rng.randint(2, t - 1)))  # fmt: skip
    return inputs


@check()
def response_logprob(
    response_logprob: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``response_logprob(logits, ids, prompt_len)`` against gptcore's sequence log-prob."""
    from . import mistakes as known

    inputs = _logprob_inputs(seed, cases)
    for logits, ids, n in inputs:
        (logits,) = _grad(logits)
        _run(
            response_logprob, "response_logprob", (logits, ids, n),
            reference_response_logprob(logits, ids, n).detach(),
            known.logprob_mistakes(logits.detach(), ids, n),
            shape_hint="one log-probability per row: shape (B,), summed over the response's tokens",
            differentiable=True, arg_names=["logits", "ids", "prompt_len"],
        )  # fmt: skip
    passed("response_logprob", len(inputs))


# ------------------------------------------------------------------- DPO loss
def _dpo_inputs(seed: int, cases: int) -> list[tuple[torch.Tensor, ...] | Any]:
    gen = generator(seed)
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.5, -4.0]), torch.tensor([-2.0, -2.0])
    inputs: list[Any] = [(pc, pr, rc, rr, 0.5), (pc, pr, rc, rr, 2.0),
                         (pc, pr, pc, pr, 0.1),  # policy = reference: log 2 whatever the beta
                         (torch.tensor([-300.0, 0.0]), torch.tensor([0.0, -300.0]),
                          torch.tensor([0.0, -300.0]), torch.tensor([-300.0, 0.0]), 1.0)]  # fmt: skip
    # The last pairs' margins are -600 and 600: log(sigmoid(-600)) is -inf in float32.
    rng = random.Random(seed)
    for _ in range(cases):
        b = rng.randint(1, 16)
        pc, pr = -torch.rand(b, generator=gen) * 30, -torch.rand(b, generator=gen) * 30
        rc, rr = pc - torch.randn(b, generator=gen) * 3, pr - torch.randn(b, generator=gen) * 3
        inputs.append((pc, pr, rc, rr, rng.choice((0.1, 0.5, 1.0, 3.0))))
    return inputs


@check(uses={"pairwise_loss": pairwise_loss})
def dpo_loss(
    dpo_loss: Callable[..., torch.Tensor], *, seed: int = 0, cases: int = 20
) -> None:
    """Check ``dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``."""
    from . import mistakes as known

    inputs = _dpo_inputs(seed, cases)
    for pc, pr, rc, rr, beta in inputs:
        pc, pr = _grad(pc, pr)
        _run(
            dpo_loss, "dpo_loss", (pc, pr, rc, rr, beta), ref_dpo(pc, pr, rc, rr, beta).detach(),
            known.dpo_mistakes(pc.detach(), pr.detach(), rc, rr, beta),
            shape_hint="the loss is one number: the mean over pairs, a tensor of shape ()",
            differentiable=True,
            arg_names=["policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected", "beta"],
        )  # fmt: skip
    passed("dpo_loss", len(inputs))
