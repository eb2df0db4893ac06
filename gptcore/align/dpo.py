"""Direct Preference Optimization (Rafailov et al., 2023): preferences without RL.

DPO trains the policy pi directly on ranked pairs, against a frozen reference
(the SFT model)::

    loss = -log sigmoid(beta * ((log pi(y_c|x) - log ref(y_c|x))
                              - (log pi(y_r|x) - log ref(y_r|x))))

where each log-probability is summed over the *response's* tokens only (the
prompt is the same in both and is not the policy's output). ``beta`` plays
the KL penalty's part: small beta lets the policy move further from the
reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model.gpt import GPT
from ..train import LossFn, TrainConfig, TrainResult
from .batches import response_batch, row_source
from .chat import IGNORE_INDEX, ChatFormat
from .data import Preference
from .logprobs import sequence_logprob

__all__ = ["dpo_loss", "dpo_loss_fn", "dpo_tensors", "train_dpo"]

DpoLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The mean DPO loss over pairs; each argument is a (B,) sequence log-probability."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    return -F.logsigmoid(beta * margin).mean()


def dpo_loss_fn(beta: float, loss: DpoLoss = dpo_loss) -> LossFn:
    """The ``gptcore.train`` loss for a batch ``(xc, yc, xr, yr, ref_c, ref_r)``."""

    def loss_fn(model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        xc, yc, xr, yr, ref_c, ref_r = batch
        return loss(sequence_logprob(model, xc, yc), sequence_logprob(model, xr, yr), ref_c, ref_r, beta)

    return loss_fn


@torch.no_grad()
def dpo_tensors(
    reference: GPT, chat: ChatFormat, pairs: Sequence[Preference]
) -> tuple[torch.Tensor, ...]:
    """``(xc, yc, xr, yr, ref_c, ref_r)`` for every pair: response batches of the
    chosen and rejected replies, and their log-probabilities under ``reference``
    (computed once: the reference never changes)."""
    prompts = [chat.render_prompt(p.prompt) for p in pairs]

    def reply(text: str) -> list[int]:
        return [*chat.tokenizer.encode(text), chat.end_id]

    xc, yc = response_batch(prompts, [reply(p.chosen) for p in pairs], chat.end_id)
    xr, yr = response_batch(prompts, [reply(p.rejected) for p in pairs], chat.end_id)
    length = max(xc.shape[1], xr.shape[1])
    xc, yc, xr, yr = (F.pad(t, (0, length - t.shape[1]), value=v) for t, v in (
        (xc, chat.end_id), (yc, IGNORE_INDEX), (xr, chat.end_id), (yr, IGNORE_INDEX)))  # fmt: skip
    device = next(reference.parameters()).device
    was = reference.training
    reference.eval()
    ref_c = sequence_logprob(reference, xc.to(device), yc.to(device)).cpu()
    ref_r = sequence_logprob(reference, xr.to(device), yr.to(device)).cpu()
    reference.train(was)
    return xc, yc, xr, yr, ref_c, ref_r


def train_dpo(
    sft_model: GPT,
    chat: ChatFormat,
    pairs: Sequence[Preference],
    config: TrainConfig,
    *,
    beta: float = 0.1,
    loss: DpoLoss = dpo_loss,
    **kwargs: Any,
) -> TrainResult:
    """DPO of a copy of ``sft_model`` (which stays the reference) on ``pairs``."""
    from .sft import run_stage

    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0 (DPO's loss is flat at beta=0)")
    tensors = dpo_tensors(sft_model, chat, pairs)
    policy = copy.deepcopy(sft_model)
    return run_stage("dpo", policy, chat, config, row_source(tensors), dpo_loss_fn(beta, loss), **kwargs)
