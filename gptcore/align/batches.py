"""Batches for the alignment stages: padding, prompt + response rows, a BatchSource over rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..train import BatchSource
from .chat import IGNORE_INDEX

__all__ = ["pad", "response_batch", "row_source"]


def pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Rows of ids, right-padded with ``value`` to ``length`` (default: the longest): (B, T) int64."""
    if not rows:
        raise ValueError("pad needs at least one row")
    length = max(len(r) for r in rows) if length is None else length
    if any(len(r) > length for r in rows):
        raise ValueError(f"a row is longer than length={length}; shorten it or raise block_size")
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def response_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x (B, T) and targets y (B, T) that score each response after its prompt.

    x is prompt + response without its last token; y[t] is the token after
    x[t] where that token belongs to the response, else ``IGNORE_INDEX``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    xs, ys = [], []
    for p, r in zip(prompts, responses, strict=True):
        if not p or not r:
            raise ValueError("each prompt and each response needs at least one token")
        seq = [*p, *r]
        xs.append(seq[:-1])
        ys.append([IGNORE_INDEX] * (len(p) - 1) + list(r))
    return pad(xs, pad_id), pad(ys, IGNORE_INDEX)


def row_source(
    train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...] | None = None
) -> BatchSource:
    """A ``gptcore.train`` BatchSource drawing random rows (with replacement) of
    fixed tensors: ``split`` "train" reads ``train``, "val" reads ``val`` (or
    ``train`` if there is no held-out part)."""
    if not train or any(len(t) != len(train[0]) for t in train):
        raise ValueError("row_source needs tensors with the same number of rows")
    held = val if val is not None and len(val[0]) else train

    def batches(split: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        rows = train if split == "train" else held
        ix = torch.randint(len(rows[0]), (n,), generator=generator)  # (n,)
        return tuple(t[ix] for t in rows)

    return batches
