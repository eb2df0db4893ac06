"""Token and position embeddings.

A token id becomes a vector by row lookup in a (vocab_size, n_embd) matrix,
which is exactly the product of a one-hot vector with that matrix, computed
without the multiplications. Attention has no notion of order, so each
position also gets a vector that is added to the token's: the original
Transformer used fixed sinusoids, GPT-2 learns one vector per position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "one_hot_embed",
    "sinusoidal_positional_encoding",
]


def one_hot_embed(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embed ids the slow, explicit way: one_hot(idx) @ weight.

    idx (...,) int64, weight (V, C) -> (..., C); equal to ``weight[idx]`` and to
    ``F.embedding(idx, weight)``, which skip the V-long one-hot vectors.
    """
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    one_hot = F.one_hot(idx.long(), num_classes=weight.shape[0]).to(weight.dtype)  # (..., V)
    return one_hot @ weight  # (..., C)


def sinusoidal_positional_encoding(
    block_size: int, n_embd: int, base: float = 10000.0
) -> torch.Tensor:
    """The fixed positional encoding of "Attention Is All You Need", shape (block_size, n_embd).

    PE[p, 2i] = sin(p / base^(2i / n_embd)), PE[p, 2i + 1] = cos(p / base^(2i / n_embd)).
    Each pair of dimensions is a clock at its own speed, from one turn every
    2*pi positions down to one every 2*pi*base, so nearby positions get similar
    vectors and a fixed offset is the same rotation at every position.
    """
    if block_size < 1 or n_embd < 2 or n_embd % 2:
        raise ValueError(
            f"block_size={block_size}, n_embd={n_embd}: need block_size >= 1 and an even n_embd >= 2 "
            "(dimensions come in sin/cos pairs)"
        )
    pos = torch.arange(block_size, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = torch.exp(
        -math.log(base) * torch.arange(0, n_embd, 2, dtype=torch.float64) / n_embd
    )  # (C/2,)
    angles = pos * inv_freq  # (T, C/2)
    pe = torch.empty(block_size, n_embd, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(torch.get_default_dtype())


def _check_length(t: int, block_size: int) -> None:
    if t > block_size:
        raise ValueError(
            f"sequence length {t} is longer than block_size={block_size}; "
            "crop the input to the last block_size tokens or use a model with a longer context"
        )


class LearnedPositionalEmbedding(nn.Module):
    """GPT-2's positions: one trained vector per position, (block_size, n_embd)."""

    def __init__(self, block_size: int, n_embd: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.weight = nn.Parameter(torch.randn(block_size, n_embd) * 0.02)

    def forward(self, t: int) -> torch.Tensor:
        """The vectors of positions 0..t-1, shape (t, n_embd)."""
        _check_length(t, self.block_size)
        return self.weight[:t]


class SinusoidalPositionalEncoding(nn.Module):
    """The fixed sinusoidal positions as a module (a buffer, not trained)."""

    def __init__(self, block_size: int, n_embd: int, base: float = 10000.0) -> None:
        super().__init__()
        self.block_size = block_size
        self.register_buffer(
            "pe", sinusoidal_positional_encoding(block_size, n_embd, base), persistent=False
        )

    def forward(self, t: int) -> torch.Tensor:
        """The encodings of positions 0..t-1, shape (t, n_embd)."""
        _check_length(t, self.block_size)
        return self.pe[:t]
