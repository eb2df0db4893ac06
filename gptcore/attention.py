"""Masked multi-head self-attention, as in GPT-2.

Every position forms a query ("what am I looking for"), a key ("what do I
contain") and a value ("what do I pass on"). A position's output is the
average of all values, weighted by softmax(q . k / sqrt(head_size)) over the
positions it may see: with the causal mask, only itself and the past.

Two paths compute the same thing. The explicit one below builds the (T, T)
weight matrix and can return it, for teaching and plots. The default one calls
torch's fused ``scaled_dot_product_attention``, which never materialises that
matrix and picks flash or memory-efficient kernels on a GPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .model.gpt import GPTConfig

__all__ = ["CausalSelfAttention", "causal_mask", "merge_heads", "scaled_dot_product_attention", "split_heads"]


def causal_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(t, t) bool, True where query i may attend to key j, that is j <= i."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    return_weights: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v, explicitly.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv); mask broadcastable to
    (..., Tq, Tk), True = may attend. Returns out (..., Tq, dv) and, if asked,
    the weights (..., Tq, Tk), each row summing to 1 (before any dropout).
    """
    d = q.size(-1)
    # Without the 1/sqrt(d), dot products of d-dimensional random vectors grow
    # like sqrt(d) and the softmax saturates into a near one-hot with tiny gradients.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = dropped @ v  # (..., Tq, dv)
    return (out, weights) if return_weights else out


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, n_head, T, C // n_head): each head sees its own slice of channels."""
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_head, T, hs) -> (B, T, n_head * hs): the heads' outputs side by side."""
    b, h, t, hs = x.shape
    return x.transpose(1, 2).contiguous().view(b, t, h * hs)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection (GPT-2's c_attn)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(
                f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}; "
                "pick n_embd as a multiple of n_head"
            )
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> (B, T, C); with return_weights also the (B, n_head, T, T) weights."""
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = (split_heads(z, self.n_head) for z in (q, k, v))  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            y, weights = scaled_dot_product_attention(
                q, k, v, causal_mask(x.size(1), x.device), return_weights=True, dropout_p=p
            )
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=p, is_causal=True
            )  # (B, nh, T, hs)
        y = self.resid_dropout(self.c_proj(merge_heads(y)))  # (B, T, C)
        return (y, weights) if return_weights else y
