"""The learning-rate schedule: linear warmup, then cosine decay."""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Learning rate at ``step``: linear warmup to ``lr``, cosine decay to ``min_lr``.

    Warmup: (step + 1) / warmup_iters * lr for step < warmup_iters, so step 0
    already moves a little. Then a half cosine from lr at warmup_iters down to
    min_lr at decay_iters, and min_lr after that. Warmup keeps Adam's first,
    badly estimated steps small; the slow decay lets the model settle.
    """
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
