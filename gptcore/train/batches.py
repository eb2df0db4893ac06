"""Batches: random windows of a token stream, inputs and next-token targets."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["get_batch"]


def get_batch(
    data: torch.Tensor | np.ndarray,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a 1-D token sequence: inputs x (B, T) and targets y (B, T).

    y is x shifted by one: y[b, t] is the token that follows x[b, t]. Window
    starts are ``torch.randint(len(data) - block_size, (batch_size,),
    generator=generator)``, so a seeded generator gives the same batches.
    ``data`` may be a tensor or a NumPy array, including a memory map of a
    token file far larger than RAM: only the sampled windows are read.
    """
    if data.ndim != 1:
        raise ValueError(f"data must be 1-D token ids, got shape {tuple(data.shape)}")
    if len(data) <= block_size:
        raise ValueError(
            f"data has {len(data)} tokens; it needs more than block_size={block_size} for one window"
        )
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    if isinstance(data, np.ndarray):
        rows = np.stack([data[i : i + block_size + 1] for i in ix.tolist()]).astype(np.int64)
        window = torch.from_numpy(rows)  # (B, T + 1)
    else:
        window = data[ix[:, None] + torch.arange(block_size + 1)].long()  # (B, T + 1)
    # Contiguous copies, not strided views of window: model code may call .view() on them.
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()
