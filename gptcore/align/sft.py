"""Supervised fine-tuning (SFT): next-token loss on the assistant's tokens only.

The demonstrations are whole conversations, but the model should learn to
*answer*, not to write the user's questions: the loss is the cross-entropy on
the targets the chat format's mask keeps (``sft_targets``), the rest are
``IGNORE_INDEX``. Training is ``gptcore.train.train`` itself (its optimizer,
schedule, checkpoints, resume and progress bar), fed with rendered
conversations through its ``batches`` seam and with this loss through its
``loss_fn`` seam.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..train import BatchSource, LossFn, TrainConfig, TrainResult, train
from .batches import pad, row_source
from .chat import IGNORE_INDEX, ChatFormat, sft_targets
from .run import save_stage

__all__ = ["align_config", "finetune", "masked_lm_loss", "run_stage", "sft_batches", "sft_loss_fn"]

MaskedLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# conversation -> (ids, loss mask): ChatFormat.render, or a learner's version of it.
Renderer = Callable[[Sequence[Mapping[str, str]]], tuple[list[int], list[int]]]


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against targets (B, T) over the
    positions whose target is not ``IGNORE_INDEX``: a scalar."""
    b, t, v = logits.shape
    return F.cross_entropy(
        logits.reshape(b * t, v).float(), targets.reshape(b * t), ignore_index=IGNORE_INDEX
    )


def sft_loss_fn(loss: MaskedLoss = masked_lm_loss) -> LossFn:
    """The ``gptcore.train`` loss for SFT: ``loss(model(x) logits, y)``. Pass a
    different ``loss`` (a learner's) to train with it."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, _ = model(x)  # (B, T, V)
        return loss(logits, y)

    return loss_fn


def sft_batches(
    chat: ChatFormat,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    block_size: int,
    render: Renderer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered conversations as x (N, T) and masked targets y (N, T), T <= block_size.

    ``render`` (default ``chat.render``) gives each conversation's ids and mask.
    """
    render = render or chat.render
    xs, ys = [], []
    for i, conv in enumerate(conversations):
        ids, mask = render(conv)
        if len(ids) - 1 > block_size:
            raise ValueError(
                f"conversation {i} has {len(ids)} tokens; the model reads {block_size} "
                "(shorten it or use a larger block_size)"
            )
        x, y = sft_targets(ids, mask)
        xs.append(x)
        ys.append(y)
    return pad(xs, chat.end_id), pad(ys, IGNORE_INDEX)


def align_config(out_dir: str, **overrides: Any) -> TrainConfig:
    """A small-run TrainConfig for the alignment stages (about a minute on a CPU)."""
    base: dict[str, Any] = dict(
        out_dir=out_dir,
        preset="test",
        batch_size=32,
        max_iters=300,
        lr=1e-3,
        min_lr=1e-4,
        warmup_iters=20,
        weight_decay=0.0,
        eval_interval=100,
        eval_iters=4,
        log_interval=10,
    )
    return TrainConfig(**{**base, **overrides})


def run_stage(
    stage: str,
    model: nn.Module,
    chat: ChatFormat,
    config: TrainConfig,
    batches: BatchSource,
    loss_fn: LossFn,
    **kwargs: Any,
) -> TrainResult:
    """One alignment stage: ``gptcore.train.train`` with the stage's batches and
    loss, and ``align.json`` in the run folder (see gptcore.align.run)."""
    spec = save_stage(config.out_dir, stage, chat.tokenizer)
    config = dataclasses.replace(config, tokenizer=spec)
    return train(config, model=model, batches=batches, loss_fn=loss_fn, tokenizer=chat.tokenizer, **kwargs)


def finetune(
    model: nn.Module,
    chat: ChatFormat,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    config: TrainConfig,
    *,
    loss: MaskedLoss = masked_lm_loss,
    render: Renderer | None = None,
    val_fraction: float = 0.1,
    **kwargs: Any,
) -> TrainResult:
    """SFT of ``model`` on ``conversations`` (each ends with an assistant turn),
    in place: ``result.model`` is ``model``, trained.

    ``model`` must read ``chat.vocab_size`` tokens (``grow_vocab`` a base
    model first). ``loss`` and ``render`` (ids and mask of a conversation)
    replace gptcore's. A ``val_fraction`` of the conversations is held out for
    the run's validation loss. ``kwargs`` go to ``gptcore.train.train`` (e.g. callback).
    """
    if model.config.vocab_size != chat.vocab_size:
        raise ValueError(
            f"the model reads {model.config.vocab_size} tokens, the chat format has "
            f"{chat.vocab_size}; use grow_vocab(model, chat.vocab_size) first"
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    order = list(range(len(conversations)))
    random.Random(config.seed).shuffle(order)
    n_val = int(len(order) * val_fraction)
    x, y = sft_batches(chat, conversations, model.config.block_size, render)
    val, tr = torch.tensor(order[:n_val], dtype=torch.long), torch.tensor(order[n_val:], dtype=torch.long)
    source = row_source((x[tr], y[tr]), (x[val], y[val]))
    return run_stage("sft", model, chat, config, source, sft_loss_fn(loss), **kwargs)
