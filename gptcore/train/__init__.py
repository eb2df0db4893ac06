"""Training a GPT: the same ``train()`` from a notebook, the CLI, or torchrun.

The pieces are small and separate so the lessons can build each one:
``get_batch`` (random windows of the token stream), ``lr_at`` (linear warmup,
then cosine decay), ``optimization_step`` (gradient accumulation and clipping),
``estimate_loss`` (the evaluation loop) and ``configure_optimizer`` (AdamW with
weight decay on matrices only). ``train`` puts them together with devices,
mixed precision, logging, atomic checkpoints, exact resume and DDP.

Modules: ``batches`` (get_batch), ``schedule`` (lr_at), ``optim`` (the
optimizer, one step, evaluation), ``config`` (TrainConfig, cpu_recipe,
TrainResult), ``run`` (a run folder's data and tokenizer; load_run),
``distributed`` (torchrun) and ``loop`` (train). Import from ``gptcore.train``.
"""

from .batches import get_batch
from .config import TrainConfig, TrainingDiverged, TrainResult, cpu_recipe
from .loop import BatchSource, train
from .optim import (
    LossFn,
    configure_optimizer,
    estimate_loss,
    model_loss,
    optimization_step,
    train_step,
)
from .run import load_run, prepare_data
from .schedule import lr_at

__all__ = [
    "BatchSource",
    "LossFn",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "configure_optimizer",
    "cpu_recipe",
    "estimate_loss",
    "get_batch",
    "load_run",
    "lr_at",
    "model_loss",
    "optimization_step",
    "prepare_data",
    "train",
    "train_step",
]
