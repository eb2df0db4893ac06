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
    from .config import GPTConfig

__all__ = [
    "CausalSelfAttention",
    "KVCache",
    "attention_scores",
    "causal_mask",
    "merge_heads",
    "offset_causal_mask",
    "scaled_dot_product_attention",
    "split_heads",
    "stable_softmax",
]


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scaled dot products: q (..., Tq, d), k (..., Tk, d) -> (..., Tq, Tk).

    Entry [..., i, j] is q_i . k_j / sqrt(d): how well query i matches key j.
    """
    # Without the 1/sqrt(d), dot products of d-dimensional random vectors grow
    # like sqrt(d) and the softmax saturates into a near one-hot with tiny gradients.
    return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., Tq, Tk)


def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax along ``dim``, without overflow: exp(x - max) / sum(exp(x - max)).

    Same shape and dtype as x. An entry of -inf gets weight 0; a slice that is
    all -inf has no softmax and gives nan, as torch.softmax does.
    """
    # softmax(x - c) == softmax(x) for any constant c. With c the max, every
    # exponent is <= 0, so exp never overflows and the largest term is exactly 1.
    # The max is a constant for the gradient too, so it is detached.
    z = x - x.amax(dim=dim, keepdim=True).detach()  # same shape as x, max 0 along dim
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


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
    scores = attention_scores(q, k)  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)  # (..., Tq, Tk)
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
        self.c_attn = nn.Linear(
            config.n_embd, 3 * config.n_embd, bias=config.bias
        )  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False, cache: KVCache | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> (B, T, C); with return_weights also the (B, n_head, T, T_keys) weights.

        With a ``cache``, x holds only the new positions: their keys and values
        are appended to the cache and the queries attend to every cached position.
        """
        t = x.size(1)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = (split_heads(z, self.n_head) for z in (q, k, v))  # (B, nh, T, hs)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.update(k, v)  # (B, nh, start + T, hs)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            mask = offset_causal_mask(start, t, x.device)  # (T, start + T)
            y, weights = scaled_dot_product_attention(
                q, k, v, mask, return_weights=True, dropout_p=p
            )
        elif start == 0:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=p, is_causal=True
            )  # (B, nh, T, hs)
        elif t == 1:
            # One new query may see every cached position: no mask at all.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, 1, hs)
        else:
            mask = offset_causal_mask(start, t, x.device)  # (T, start + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = self.resid_dropout(self.c_proj(merge_heads(y)))  # (B, T, C)
        return (y, weights) if return_weights else y


def offset_causal_mask(
    start: int, t: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(t, start + t) bool: new query i (at position start + i) may see keys 0..start + i.

    With start = 0 this is ``causal_mask(t)``.
    """
    rows = torch.arange(start, start + t, device=device)[:, None]  # (t, 1)
    cols = torch.arange(start + t, device=device)[None, :]  # (1, start + t)
    return cols <= rows


class KVCache:
    """The keys and values of one attention layer for the positions seen so far.

    Generation feeds one new token per step; without a cache every step would
    recompute the keys and values of the whole prefix, though they never change
    (a position only attends to the past). The buffers are allocated once, at
    the longest length the model can see, and filled left to right.
    """

    def __init__(
        self,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, n_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (B, nh, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.size(2)

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, nh, T_new, hs) keys and values; return all cached ones, (B, nh, length, hs)."""
        end = self.length + k_new.size(2)
        if end > self.max_len:
            raise ValueError(
                f"the KV cache holds {self.max_len} positions; {end} do not fit. "
                "Past block_size the context must slide, which invalidates the cache: recompute."
            )
        self.k[:, :, self.length : end] = k_new
        self.v[:, :, self.length : end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        self.length = 0
