"""The reward model: a GPT backbone with a scalar head, trained on rankings.

InstructGPT's recipe: start from the SFT model, replace next-token logits by
one number read at the last token of prompt + reply (the causal attention
has let that position see everything before it), and train on pairs with
the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``: the
probability that the chosen reply wins is sigmoid of the reward difference.
Only differences matter, so rewards have no fixed zero.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model.gpt import GPT, GPTConfig
from ..train import LossFn, TrainConfig, TrainResult
from .batches import pad, row_source
from .chat import ChatFormat, Message
from .data import Preference

__all__ = [
    "RewardModel",
    "bradley_terry_loss",
    "pair_tensors",
    "pairwise_accuracy",
    "reward_loss_fn",
    "score",
    "train_reward_model",
]


class RewardModel(nn.Module):
    """``forward(idx (B, T), last (B,)) -> rewards (B,)``: the head read at
    position ``last[b]``, the index of row b's last real (non-pad) token."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_gpt(cls, gpt: GPT) -> RewardModel:
        """A reward model whose backbone starts as a copy of ``gpt`` (the SFT model)."""
        rm = cls(gpt.config)
        rm.backbone.load_state_dict(copy.deepcopy(gpt.state_dict()))
        return rm.to(gpt.lm_head.weight.device)

    def forward(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        h = self.backbone.hidden_states(idx)  # (B, T, C): the backbone's, before its LM head
        at = h[torch.arange(len(idx), device=idx.device), last]  # (B, C)
        return self.head(at).squeeze(-1).float()  # (B,)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_chosen - r_rejected)`` over pairs (B,) -> scalar."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def reward_loss_fn(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bradley_terry_loss,
) -> LossFn:
    """The ``gptcore.train`` loss for a batch of pairs ``(xc, lc, xr, lr)``."""

    def loss_fn(model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        xc, lc, xr, lr = batch
        return loss(model(xc, lc), model(xr, lr))

    return loss_fn


def _rows(chat: ChatFormat, prompt: list[Message], reply: str) -> list[int]:
    ids, _ = chat.render([*prompt, Message(role="assistant", content=reply)])
    return ids


def pair_tensors(
    chat: ChatFormat, pairs: Sequence[Preference]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen ids (N, T), their last index (N,), rejected ids (N, T), last index (N,)."""
    chosen = [_rows(chat, p.prompt, p.chosen) for p in pairs]
    rejected = [_rows(chat, p.prompt, p.rejected) for p in pairs]
    length = max(len(r) for r in chosen + rejected)
    last = [torch.tensor([len(r) - 1 for r in rows]) for rows in (chosen, rejected)]
    return pad(chosen, chat.end_id, length), last[0], pad(rejected, chat.end_id, length), last[1]


@torch.no_grad()
def score(model: RewardModel, rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Rewards (N,) of token rows of any lengths."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    last = torch.tensor([len(r) - 1 for r in rows], device=device)
    out = model(pad(rows, pad_id).to(device), last)
    model.train(was)
    return out


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, chat: ChatFormat, pairs: Sequence[Preference]) -> float:
    """The share of pairs whose chosen reply gets the higher reward."""
    if not pairs:
        raise ValueError("pairwise_accuracy needs at least one pair")
    rc = score(model, [_rows(chat, p.prompt, p.chosen) for p in pairs], chat.end_id)
    rr = score(model, [_rows(chat, p.prompt, p.rejected) for p in pairs], chat.end_id)
    return float((rc > rr).float().mean())


def train_reward_model(
    sft_model: GPT,
    chat: ChatFormat,
    pairs: Sequence[Preference],
    config: TrainConfig,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bradley_terry_loss,
    val_fraction: float = 0.1,
    **kwargs: Any,
) -> TrainResult:
    """Train a RewardModel started from ``sft_model`` on ``pairs`` (see finetune).

    ``result.model`` is the reward model; ``kwargs`` go to ``gptcore.train.train``.
    """
    from .sft import run_stage

    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)
    n_val = int(len(order) * val_fraction)
    tensors = pair_tensors(chat, pairs)
    val = torch.tensor(order[:n_val], dtype=torch.long)
    tr = torch.tensor(order[n_val:], dtype=torch.long)
    source = row_source(tuple(t[tr] for t in tensors), tuple(t[val] for t in tensors))
    model = RewardModel.from_gpt(sft_model)
    return run_stage("reward", model, chat, config, source, reward_loss_fn(loss), **kwargs)
