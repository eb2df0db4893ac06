"""RLHF: a policy-gradient stage that maximises reward minus a KL penalty.

Each step samples replies from the policy (``gptcore.sample.generate``, KV
cache), scores them with the reward model, and penalises drifting from the
SFT reference::

    R = reward_model(prompt + reply) - beta * (log pi(reply|prompt) - log ref(reply|prompt))

The bracket is a one-sample estimate of KL(pi || ref) for that reply. The
update is REINFORCE with a baseline: ``loss = -mean(A * log pi(reply|prompt))``
with advantage ``A = R - mean(R)`` over the batch (the baseline lowers the
variance without changing the expected gradient). With ``beta = 0`` nothing
holds the policy near the reference, and it drifts towards whatever the
reward model over-rates (reward hacking): the lesson shows it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..model.gpt import GPT
from ..sample import generate
from ..train import TrainConfig, TrainResult
from .batches import response_batch
from .chat import ChatFormat, Message
from .logprobs import sequence_logprob
from .reward import RewardModel, score

__all__ = [
    "RolloutStats",
    "kl_penalized_reward",
    "policy_gradient_loss",
    "rlhf",
    "rollout_source",
    "sample_replies",
]

PenalizedReward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def kl_penalized_reward(
    reward: torch.Tensor, logp_policy: torch.Tensor, logp_ref: torch.Tensor, beta: float
) -> torch.Tensor:
    """``reward - beta * (logp_policy - logp_ref)``, all (B,) -> (B,)."""
    return reward - beta * (logp_policy - logp_ref)


def policy_gradient_loss(logp_policy: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """REINFORCE: ``-mean(advantage * logp_policy)``; the advantage is a constant."""
    return -(advantage.detach() * logp_policy).mean()


def _pg_loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    return policy_gradient_loss(sequence_logprob(model, x, y), adv)


def sample_replies(
    model: GPT,
    chat: ChatFormat,
    prompts: Sequence[list[int]],
    generator: torch.Generator,
    *,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
) -> list[list[int]]:
    """One sampled reply per prompt (ids, ``<|end|>`` included if produced)."""
    return [
        generate(
            model,
            p,
            max_new_tokens,
            temperature=temperature,
            generator=generator,
            stop_tokens=(chat.end_id,),
        )
        for p in prompts
    ]


@dataclass
class RolloutStats:
    """What each training batch of replies scored (one entry per step)."""

    reward: list[float] = field(default_factory=list)  # mean reward-model score
    kl: list[float] = field(default_factory=list)  # mean log pi - log ref of the replies
    total: list[float] = field(default_factory=list)  # mean penalised reward


def rollout_source(
    policy: GPT,
    reference: GPT,
    reward_model: RewardModel,
    chat: ChatFormat,
    prompts: Sequence[list[Message]],
    beta: float,
    *,
    penalized: PenalizedReward = kl_penalized_reward,
    max_new_tokens: int = 12,
    stats: RolloutStats | None = None,
) -> Callable[[str, int, torch.Generator], tuple[torch.Tensor, ...]]:
    """A ``gptcore.train`` BatchSource of fresh rollouts ``(x, y, advantage)``."""
    rendered = [chat.render_prompt(p) for p in prompts]
    device = next(policy.parameters()).device

    @torch.no_grad()
    def batches(split: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        ix = torch.randint(len(rendered), (n,), generator=generator).tolist()
        chosen = [rendered[i] for i in ix]
        replies = sample_replies(policy, chat, chosen, generator, max_new_tokens=max_new_tokens)
        x, y = response_batch(chosen, replies, chat.end_id)
        x, y = x.to(device), y.to(device)
        was = policy.training
        policy.eval()
        logp_pol = sequence_logprob(policy, x, y)  # (n,)
        policy.train(was)
        logp_ref = sequence_logprob(reference, x, y)  # (n,)
        r = score(reward_model, [[*p, *a] for p, a in zip(chosen, replies, strict=True)], chat.end_id)
        total = penalized(r.to(device), logp_pol, logp_ref, beta)  # (n,)
        if stats is not None and split == "train":
            stats.reward.append(float(r.mean()))
            stats.kl.append(float((logp_pol - logp_ref).mean()))
            stats.total.append(float(total.mean()))
        return x, y, total - total.mean()

    return batches


def rlhf(
    sft_model: GPT,
    reward_model: RewardModel,
    chat: ChatFormat,
    prompts: Sequence[list[Message]],
    config: TrainConfig,
    *,
    beta: float = 0.1,
    penalized: PenalizedReward = kl_penalized_reward,
    max_new_tokens: int = 12,
    **kwargs: Any,
) -> tuple[TrainResult, RolloutStats]:
    """REINFORCE a copy of ``sft_model`` (the frozen reference) against ``reward_model``.

    ``beta >= 0``; 0 switches the KL penalty off. ``config.batch_size`` replies
    are sampled per step. Returns the run and the per-step rollout statistics.
    """
    from .sft import run_stage

    if beta < 0:
        raise ValueError(f"beta={beta} must be >= 0 (0 switches the KL penalty off)")
    reference = copy.deepcopy(sft_model).eval().requires_grad_(False)
    reward_model.eval().requires_grad_(False)
    policy = copy.deepcopy(sft_model)
    stats = RolloutStats()
    source = rollout_source(
        policy, reference, reward_model, chat, prompts, beta,
        penalized=penalized, max_new_tokens=max_new_tokens, stats=stats,
    )  # fmt: skip
    result = run_stage("rlhf", policy, chat, config, source, _pg_loss_fn, **kwargs)
    return result, stats

