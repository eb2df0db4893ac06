"""One optimizer update: AdamW with decay on matrices, plain and accumulated steps, evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .batches import get_batch

__all__ = ["LossFn", "configure_optimizer", "estimate_loss", "optimization_step", "train_step"]

# A loss other than the model's own next-token loss: ``loss_fn(model, *batch)``
# returns a scalar tensor. gptcore.align plugs in the masked SFT loss, the
# reward model's pairwise loss, the DPO loss and the policy-gradient loss here,
# so every training stage shares one optimizer step and one training loop.
LossFn = Callable[..., torch.Tensor]


def model_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: the model's own, ``model(x, y) -> (logits, loss)``."""
    _, loss = model(x, y)
    return loss


def configure_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (2-D+) only.

    Decay pulls weights towards zero. That regularises the matmul and embedding
    weights, but biases and LayerNorm gains are few, and shrinking a gain
    towards 0 would fight the normalisation, so they are not decayed.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if fused is None:
        fused = all(p.is_cuda for p in params.values())
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """The simplest step: zero the gradients, forward, backward, update.

    Returns the batch loss before the update. The model's forward must return
    ``(logits, loss)`` when given targets.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def optimization_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, ...]] | Iterator[tuple[torch.Tensor, ...]],
    grad_clip: float = 1.0,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> tuple[float, float]:
    """One optimizer update from several micro-batches (gradient accumulation).

    Each micro-batch's loss is divided by the number of micro-batches before
    ``backward``: gradients add up, so the update equals one step on the
    concatenated batch. Then the global gradient norm is clipped to
    ``grad_clip`` (0 disables), which caps the size of any single update.
    Returns (mean loss, gradient norm before clipping).

    A micro-batch is ``(x, y)`` for the model's own loss, or any tuple of
    tensors that ``loss_fn(model, *batch)`` takes.
    """
    loss_fn = loss_fn or model_loss
    batches = list(batches)
    if not batches:
        raise ValueError("optimization_step needs at least one (x, y) micro-batch")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        # Under DDP, gradients are averaged across processes only on the last micro-batch.
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast():
                loss = loss_fn(model, *batch)
            (loss / len(batches)).backward()
        total += float(loss.detach())
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
    optimizer.step()
    return total / len(batches), norm


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    data: torch.Tensor | np.ndarray | None,
    batch_size: int,
    block_size: int,
    eval_iters: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    *,
    loss_fn: LossFn | None = None,
    batch_fn: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]] | None = None,
) -> float:
    """Mean loss over ``eval_iters`` random batches, in eval mode (no dropout).

    One batch is a noisy estimate; averaging several gives a curve smooth
    enough to compare runs. The model is put back in training mode afterwards.
    ``batch_fn(batch_size, generator)`` replaces the random windows of ``data``
    (which may then be None) and ``loss_fn(model, *batch)`` the model's own
    loss (see optimization_step).
    """
    loss_fn = loss_fn or model_loss
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(eval_iters):
        if batch_fn is None:
            assert data is not None, "estimate_loss needs data or batch_fn"
            batch: tuple[torch.Tensor, ...] = get_batch(data, batch_size, block_size, generator)
        else:
            batch = batch_fn(batch_size, generator)
        with autocast():
            loss = loss_fn(model, *(t.to(device) for t in batch))
        losses.append(float(loss))
    model.train(was_training)
    return sum(losses) / len(losses)
