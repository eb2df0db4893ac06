"""``train``: the pieces put together with devices, mixed precision, logging,
atomic checkpoints, exact resume and DDP.

One call builds a ``_Run`` (everything the loop touches), restores it from the
latest checkpoint if there is one, then steps it. The order of every random
draw (model init, batches, dropout, evaluation) is fixed here: a resumed run
repeats the uninterrupted one bit for bit on the CPU, and the tests hold it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..device import autocast_dtype, peak_flops
from ..model.gpt import GPT, GPTConfig
from ..tokenizer.base import Tokenizer
from .batches import get_batch
from .config import TrainConfig, TrainingDiverged, TrainResult
from .distributed import Dist, barrier, init_distributed
from .optim import LossFn, configure_optimizer, estimate_loss, optimization_step
from .run import prepare_data
from .schedule import lr_at

__all__ = ["BatchSource", "train"]

# Batches other than random windows of the run's token files:
# ``batches(split, batch_size, generator)`` with split "train" or "val" returns a
# tuple of tensors whose first dimension is the batch (what ``loss_fn`` takes).
# gptcore.align feeds rendered conversations, preference pairs and fresh samples
# of the policy through it; drawing only from ``generator`` keeps resume exact.
BatchSource = Callable[[str, int, torch.Generator], tuple[torch.Tensor, ...]]

_CSV_FIELDS = ["step", "loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "seconds"]


class _Logger:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        if self.path.suffix == ".jsonl":
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        else:
            new = not self.path.exists()
            with self.path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)


@dataclass
class _Run:
    """Everything one call of ``train`` works with; the loop changes step, val_loss and the RNGs."""

    config: TrainConfig
    dist: Dist
    device: torch.device
    dtype: torch.dtype
    out_dir: Path
    train_data: np.ndarray | None  # None with a batch source
    val_data: np.ndarray | None
    tokenizer: Tokenizer
    gpt_config: GPTConfig
    raw_model: nn.Module  # what is saved and returned
    run_model: nn.Module  # what is stepped: raw_model, maybe in DDP, maybe compiled
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None
    optimizer: torch.optim.Optimizer
    batch_gen: torch.Generator
    block_size: int
    logger: _Logger
    batch_source: BatchSource | None = None
    loss_fn: LossFn | None = None
    step: int = 0
    val_loss: float | None = None
    last_good_step: int | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def checkpoint(self, at_step: int, val_loss: float | None) -> None:
        if not self.dist.main:
            return
        cuda = self.device.type == "cuda"
        save_checkpoint(
            self.out_dir,
            self.raw_model,
            {
                "step": at_step,
                "optimizer": self.optimizer.state_dict(),
                "batch_rng": self.batch_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "train_config": self.config.to_dict(),
                "model_config": dataclasses.asdict(self.gpt_config),
                "val_loss": val_loss,
                "history": self.logger.rows,
            },
        )

    def evaluate(self, at_step: int) -> float:
        # A generator of its own, seeded by the step: evaluation never disturbs
        # the training batches, so resumed and uninterrupted runs stay identical.
        gen = torch.Generator().manual_seed(self.config.seed + 1_000_003 * (at_step + 1))
        c, source = self.config, self.batch_source
        return estimate_loss(
            self.raw_model,
            self.val_data,
            c.batch_size,
            self.block_size,
            c.eval_iters,
            gen,
            self.device,
            self.autocast,
            loss_fn=self.loss_fn,
            batch_fn=None if source is None else lambda n, g: source("val", n, g),
        )

    def micro_batches(self) -> list[tuple[torch.Tensor, ...]]:
        c, d = self.config, self.dist
        micro = []
        for _ in range(c.grad_accum):
            # Every process draws the same global batch and keeps its own slice, so N
            # processes see exactly the batch one process with N x batch_size would.
            n = c.batch_size * d.world
            if self.batch_source is None:
                batch = get_batch(self.train_data, n, self.block_size, self.batch_gen)
            else:
                batch = self.batch_source("train", n, self.batch_gen)
            sl = slice(d.rank * c.batch_size, (d.rank + 1) * c.batch_size)
            micro.append(tuple(t[sl].to(self.device, non_blocking=True) for t in batch))
        return micro

    def check_finite(self, loss: float, norm: float) -> None:
        if math.isfinite(loss) and math.isfinite(norm):
            return
        where = (
            f"checkpoint at step {self.last_good_step} kept in {self.out_dir}"
            if self.last_good_step
            else "no checkpoint was written yet"
        )
        raise TrainingDiverged(
            f"loss became {loss} at step {self.step} (gradient norm {norm}); {where}. "
            "Lower the learning rate (--lr), keep gradient clipping on (--grad_clip 1.0), "
            "or lengthen the warmup (--warmup_iters)."
        )


def _start(
    config: TrainConfig,
    model: nn.Module | None,
    batch_source: BatchSource | None = None,
    loss_fn: LossFn | None = None,
    tokenizer: Tokenizer | None = None,
) -> _Run:
    """Devices, data, model and optimizer, resumed from the latest checkpoint if any."""
    dist_info, device = init_distributed(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~fp32 accuracy, much faster
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(config.out_dir)
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier(dist_info)
    if batch_source is None:
        # The main process tokenizes and writes the data files; the others then read them.
        data = prepare_data(config, out_dir) if dist_info.main else (None, None, None)
        barrier(dist_info)
        if not dist_info.main:
            data = prepare_data(config, out_dir, write=False)
        train_data, val_data, tokenizer = data
    else:
        if tokenizer is None:
            raise ValueError("train(batches=...) needs tokenizer=: the one the batches were made with")
        train_data = val_data = None

    torch.manual_seed(config.seed)  # before the model: its initial weights are seeded
    # A model passed in keeps its own shape (a fine-tuned model is not the preset's).
    own = getattr(model, "config", None)
    gpt_config = own if isinstance(own, GPTConfig) else config.model_config(tokenizer.vocab_size)
    if model is None:
        model = GPT(gpt_config)
    model.to(device)
    optimizer = configure_optimizer(
        model,
        config.lr,
        config.weight_decay,
        (config.beta1, config.beta2),
        fused=device.type == "cuda",
    )
    run = _Run(
        config=config,
        dist=dist_info,
        device=device,
        dtype=autocast_dtype(device, config.dtype),
        out_dir=out_dir,
        train_data=train_data,
        val_data=val_data,
        tokenizer=tokenizer,
        gpt_config=gpt_config,
        raw_model=model,
        run_model=model,
        no_sync=None,
        optimizer=optimizer,
        batch_gen=torch.Generator().manual_seed(config.seed),
        block_size=getattr(getattr(model, "config", None), "block_size", gpt_config.block_size),
        logger=_Logger(out_dir / config.log_file if config.log_file and dist_info.main else None),
        batch_source=batch_source,
        loss_fn=loss_fn,
    )
    _resume(run)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        run.no_sync = model.no_sync
    run.run_model = torch.compile(model) if config.compile else model
    return run


def _resume(run: _Run) -> None:
    """Restore weights, optimizer, RNGs, step and history from out_dir's latest checkpoint."""
    if not run.config.resume:
        return
    state = load_checkpoint(run.out_dir, run.raw_model, map_location=run.device)
    if state is None:
        return
    run.optimizer.load_state_dict(state["optimizer"])
    run.batch_gen.set_state(state["batch_rng"])
    torch.set_rng_state(state["torch_rng"])
    if run.device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.step = run.last_good_step = state["step"]
    run.logger.rows = list(state.get("history", []))
    run.val_loss = state.get("val_loss")


def train(
    config: TrainConfig | None = None,
    *,
    model: nn.Module | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    batches: BatchSource | None = None,
    loss_fn: LossFn | None = None,
    tokenizer: Tokenizer | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train (or resume) a GPT as described by ``config`` (fields may be passed as keywords).

    Re-running with the same ``out_dir`` continues from its latest checkpoint;
    on the CPU the continued run reproduces the uninterrupted one exactly.
    Under ``torchrun --nproc_per_node N`` each process trains on its share of
    every global batch with DistributedDataParallel.

    Fine-tuning plugs in here rather than writing a second loop: ``batches``
    (a ``BatchSource``) replaces the corpus windows, ``loss_fn(model, *batch)``
    the model's own loss, and ``tokenizer`` is the one the batches use (then
    ``config.data`` and ``config.tokenizer`` are not read).
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    run = _start(config, model, batches, loss_fn, tokenizer)
    bar = None
    if config.progress and run.dist.main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.max_iters, initial=run.step, desc="train", unit="step", dynamic_ncols=True
        )
    try:
        _loop(run, callback, bar)
    finally:
        if bar is not None:
            bar.close()
    barrier(run.dist)
    return TrainResult(
        run.raw_model, run.step, run.logger.rows, run.val_loss, run.out_dir, run.tokenizer
    )


def _loop(run: _Run, callback: Callable[[dict[str, float]], None] | None, bar: Any) -> None:
    """Optimizer steps until max_iters or max_seconds, logging, evaluating and checkpointing."""
    c = run.config
    tokens_per_step = c.batch_size * c.grad_accum * run.dist.world * run.block_size
    raw = run.raw_model
    flops_per_token = raw.flops_per_token(run.block_size) if hasattr(raw, "flops_per_token") else None
    peak = peak_flops(run.device, run.dtype) if run.dist.main and flops_per_token else None
    ckpt_every = c.checkpoint_interval or c.eval_interval
    start = time.perf_counter()
    window_t, window_steps = time.perf_counter(), 0
    while run.step < c.max_iters:
        lr = lr_at(
            run.step, lr=c.lr, min_lr=c.min_lr, warmup_iters=c.warmup_iters, decay_iters=c.decay_iters
        )
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss, norm = optimization_step(
            run.run_model,
            run.optimizer,
            run.micro_batches(),
            c.grad_clip,
            autocast=run.autocast,
            no_sync=run.no_sync,
            loss_fn=run.loss_fn,
        )
        run.check_finite(loss, norm)
        run.step += 1
        step, window_steps = run.step, window_steps + 1
        row: dict[str, float] = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm}
        if step % c.log_interval == 0 or step == c.max_iters:
            row["tokens_per_s"] = tokens_per_step * window_steps / (time.perf_counter() - window_t)
            if peak and flops_per_token:
                row["mfu"] = row["tokens_per_s"] * flops_per_token / (peak * run.dist.world)
            window_t, window_steps = time.perf_counter(), 0
        out_of_time = c.max_seconds is not None and time.perf_counter() - start >= c.max_seconds
        if step % c.eval_interval == 0 or step == c.max_iters or out_of_time:
            run.val_loss = row["val_loss"] = run.evaluate(step)
        row["seconds"] = time.perf_counter() - start
        if len(row) > 5 or step % c.log_interval == 0:
            if run.dist.main:
                run.logger.log(row)
            if callback is not None:
                callback(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.4f}", **({"val": f"{run.val_loss:.4f}"} if "val_loss" in row else {})
            )
        if step % ckpt_every == 0 or step == c.max_iters or out_of_time:
            run.checkpoint(step, run.val_loss)
            run.last_good_step = step
        if out_of_time:
            break
