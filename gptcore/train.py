"""Training: batches of token windows and the optimisation step.

The pieces are small and separate so the lessons can build each one and
plug it into the rest.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["get_batch", "train_step"]


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a 1-D token tensor: inputs x (B, T) and targets y (B, T).

    y is x shifted by one: y[b, t] is the token that follows x[b, t]. Window
    starts are drawn with ``torch.randint(len(data) - block_size, (batch_size,),
    generator=generator)``, so a seeded generator gives the same batches.
    """
    if data.ndim != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if len(data) <= block_size:
        raise ValueError(
            f"data has {len(data)} tokens; it needs more than block_size={block_size} for one window"
        )
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[ix[:, None] + offsets].long()  # (B, T)
    y = data[ix[:, None] + offsets + 1].long()  # (B, T)
    return x, y


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """One step of gradient descent on a batch; returns the loss before the update.

    The model's forward must return ``(logits, loss)`` when given targets.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
