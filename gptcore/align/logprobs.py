"""Log-probabilities of responses under a model.

DPO and RLHF both score a *response* given a prompt: log pi(response | prompt)
= the sum of log-probabilities of the response's tokens only. The prompt's
tokens are inputs, never scored. A batch (gptcore.align.batches.response_batch)
holds ``IGNORE_INDEX`` targets at every prompt and padding position, so one
masked sum gives the sequence log-probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .chat import IGNORE_INDEX

__all__ = ["sequence_logprob", "token_logprobs"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[b, t]) under logits (B, T, V) -> (B, T) float32; 0 where ignored."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must agree on (B, T)"
        )
    keep = targets != IGNORE_INDEX  # (B, T)
    safe = targets.masked_fill(~keep, 0)  # (B, T) a valid index everywhere
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * keep


def sequence_logprob(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of the response tokens' log-probabilities, (B,), for a ``response_batch``."""
    logits, _ = model(x)  # (B, T, V)
    return token_logprobs(logits, y).sum(-1)  # (B,)
