"""The neural bigram: the smallest neural language model.

It predicts the next token from the current one only, like the count bigram
of lesson 2, but its probabilities come from parameters fitted by gradient
descent instead of from counts. With a full (V, V) table of logits it can
represent exactly the count model's distribution, so trained to convergence its
loss meets the count bigram's. With a narrower embedding (``n_embd < V``) each
token first becomes a short vector: tokens that are followed by similar things
end up with similar vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BigramLM"]


class BigramLM(nn.Module):
    """idx (B, T) -> logits (B, T, V) for the token after each position.

    ``n_embd=None``: a (V, V) logit table (one row per current token).
    ``n_embd=C``: embedding (V, C), then a linear layer (C -> V).
    """

    def __init__(self, vocab_size: int, n_embd: int | None = None) -> None:
        super().__init__()
        if vocab_size < 1 or (n_embd is not None and n_embd < 1):
            raise ValueError(f"vocab_size={vocab_size} and n_embd={n_embd} must be positive")
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd or vocab_size)
        self.lm_head = nn.Linear(n_embd, vocab_size) if n_embd else None

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V), and the mean cross-entropy in nats if targets (B, T) are given."""
        if idx.dtype != torch.long:
            raise ValueError(f"idx must be a LongTensor of token ids, got {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1}")
        x = self.token_embedding(idx)  # (B, T, C)
        logits = self.lm_head(x) if self.lm_head is not None else x  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
