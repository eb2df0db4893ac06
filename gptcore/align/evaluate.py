"""Measuring a chat model on the task: well-formed, correct and preferred-style shares,
the reward model's mean score, and the KL from the reference, on sampled replies."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.gpt import GPT
from .batches import response_batch
from .chat import ChatFormat, Message
from .data import judge
from .logprobs import sequence_logprob
from .reward import RewardModel, score
from .rl import sample_replies

__all__ = ["evaluate_chat"]


@torch.no_grad()
def evaluate_chat(
    model: GPT,
    chat: ChatFormat,
    prompts: Sequence[list[Message]],
    *,
    reward_model: RewardModel | None = None,
    reference: GPT | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 12,
) -> dict[str, float]:
    """One sampled reply per prompt (seeded), measured with ``gptcore.align.data.judge``.

    Returns ``well_formed``, ``correct`` and ``preferred`` (shares in [0, 1]),
    plus ``reward`` (mean score) with a ``reward_model`` and ``kl`` (mean
    log pi - log ref of the replies, an estimate of KL(pi || ref)) with a ``reference``.
    """
    if not prompts:
        raise ValueError("evaluate_chat needs at least one prompt")
    rendered = [chat.render_prompt(p) for p in prompts]
    gen = torch.Generator().manual_seed(seed)
    replies = sample_replies(
        model, chat, rendered, gen, max_new_tokens=max_new_tokens, temperature=temperature
    )
    verdicts = [judge(p, *chat.decode_reply(r)) for p, r in zip(prompts, replies, strict=True)]
    n = len(verdicts)
    out = {
        "well_formed": sum(v.well_formed for v in verdicts) / n,
        "correct": sum(v.correct for v in verdicts) / n,
        "preferred": sum(v.preferred for v in verdicts) / n,
    }
    if reward_model is not None:
        rows = [[*p, *r] for p, r in zip(rendered, replies, strict=True)]
        out["reward"] = float(score(reward_model, rows, chat.end_id).mean())
    if reference is not None:
        device = next(model.parameters()).device
        nonempty = [(p, r) for p, r in zip(rendered, replies, strict=True) if r]
        x, y = response_batch([p for p, _ in nonempty], [r for _, r in nonempty], chat.end_id)
        was = model.training
        model.eval()
        kl = sequence_logprob(model, x.to(device), y.to(device)) - sequence_logprob(
            reference.eval(), x.to(device), y.to(device)
        )
        model.train(was)
        out["kl"] = float(kl.mean())
    return out
