"""What a training run is told (TrainConfig, cpu_recipe) and what it returns (TrainResult)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.gpt import GPT, GPTConfig
from ..tokenizer.base import Tokenizer

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "cpu_recipe"]


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI exposes each field as ``--name``."""

    data: str = "tinyshakespeare"  # a corpus name (gptcore.data) or a text file
    tokenizer: str = "char"  # char, gpt2, or a file saved by BPETokenizer.save
    out_dir: str = "runs/baby"
    preset: str = "baby"  # GPTConfig preset; fields below override it
    model: dict[str, Any] = field(default_factory=dict)  # e.g. {"n_layer": 4}
    batch_size: int = 32  # per process, per micro-batch
    grad_accum: int = 1
    max_iters: int = 2000  # optimizer steps in total
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # default: max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    checkpoint_interval: int | None = None  # default: eval_interval
    max_seconds: float | None = None  # stop (and checkpoint) after this wall time
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    compile: bool = False
    seed: int = 1337
    threads: int | None = None  # CPU threads; default: torch's choice
    progress: bool = True  # a tqdm bar
    log_file: str | None = "metrics.csv"  # .csv or .jsonl, inside out_dir; None to skip
    resume: bool = True  # continue from out_dir's latest checkpoint if there is one

    def __post_init__(self) -> None:
        positive = (
            "batch_size",
            "grad_accum",
            "max_iters",
            "eval_interval",
            "eval_iters",
            "log_interval",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters={self.warmup_iters} must be >= 0")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(
                f"need lr > 0 and 0 <= min_lr <= lr (got lr={self.lr}, min_lr={self.min_lr})"
            )
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip and weight_decay must be >= 0")
        if self.log_file and not self.log_file.endswith((".csv", ".jsonl")):
            raise ValueError(f"log_file={self.log_file!r} must end in .csv or .jsonl")
        GPTConfig.preset(self.preset, **{k: v for k, v in self.model.items() if k != "vocab_size"})

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig.preset(self.preset, **{**self.model, "vocab_size": vocab_size})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpu_recipe(**overrides: Any) -> TrainConfig:
    """The default CPU recipe: 3 minutes on 2 cores, character-level Tiny Shakespeare.

    The model has the shape of nanoGPT's CPU example (4 layers, 4 heads, 128
    wide, 64 characters of context); the recipe trains it with larger batches,
    a higher peak learning rate and a short warmup, and sizes the cosine decay to
    what 2 cores finish in 3 minutes. ``max_seconds`` stops a slower machine on
    time. Measured on the 2-core reference machine while it was also busy with
    other jobs: validation loss 1.88 after 190 s, where nanoGPT's recipe reached
    2.05 in the same run (its documented figure is about 1.88 after about 3
    minutes on an idle machine). ``benchmarks/bench_train.py recipe`` measures it.
    """
    base = dict(
        preset="baby-cpu",
        batch_size=32,
        max_iters=1400,
        lr=3e-3,
        min_lr=3e-4,
        warmup_iters=30,
        eval_interval=200,
        eval_iters=20,
        max_seconds=180.0,
        weight_decay=0.1,
        out_dir="runs/baby-cpu",
    )
    return TrainConfig(**{**base, **overrides})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What ``train`` returns: the trained model (the one passed in, if any) and its run."""

    model: GPT
    step: int
    history: list[dict[str, float]]  # one row per log/eval event
    val_loss: float | None
    out_dir: Path
    tokenizer: Tokenizer
