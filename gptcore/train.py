"""Training a GPT: the same ``train()`` from a notebook, the CLI, or torchrun.

The pieces are small and separate so the lessons can build each one:
``get_batch`` (random windows of the token stream), ``lr_at`` (linear warmup,
then cosine decay), ``optimization_step`` (gradient accumulation and clipping),
``estimate_loss`` (the evaluation loop) and ``configure_optimizer`` (AdamW with
weight decay on matrices only). ``train`` puts them together with devices,
mixed precision, logging, atomic checkpoints, exact resume and DDP.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .device import autocast_dtype, peak_flops, pick_device
from .model.gpt import GPT, GPTConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "configure_optimizer",
    "cpu_recipe",
    "estimate_loss",
    "get_batch",
    "load_run",
    "lr_at",
    "optimization_step",
    "prepare_data",
    "train",
    "train_step",
]


# --------------------------------------------------------------------- batches
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


# -------------------------------------------------------------------- schedule
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


# ------------------------------------------------------------------- optimizer
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


# ---------------------------------------------------------------------- steps
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
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    | Iterator[tuple[torch.Tensor, torch.Tensor]],
    grad_clip: float = 1.0,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> tuple[float, float]:
    """One optimizer update from several micro-batches (gradient accumulation).

    Each micro-batch's loss is divided by the number of micro-batches before
    ``backward``: gradients add up, so the update equals one step on the
    concatenated batch. Then the global gradient norm is clipped to
    ``grad_clip`` (0 disables), which caps the size of any single update.
    Returns (mean loss, gradient norm before clipping).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("optimization_step needs at least one (x, y) micro-batch")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        # Under DDP, gradients are averaged across processes only on the last micro-batch.
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast():
                _, loss = model(x, y)
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
    data: torch.Tensor | np.ndarray,
    batch_size: int,
    block_size: int,
    eval_iters: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> float:
    """Mean loss over ``eval_iters`` random batches, in eval mode (no dropout).

    One batch is a noisy estimate; averaging several gives a curve smooth
    enough to compare runs. The model is put back in training mode afterwards.
    """
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(eval_iters):
        x, y = get_batch(data, batch_size, block_size, generator)
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        losses.append(float(loss))
    model.train(was_training)
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------- config
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
    model: GPT
    step: int
    history: list[dict[str, float]]  # one row per log/eval event
    val_loss: float | None
    out_dir: Path
    tokenizer: Any


# ------------------------------------------------------------------------ data
def _load_tokenizer(spec: str, text: str, out_dir: Path) -> Any:
    from .tokenizer import BPETokenizer, CharTokenizer, gpt2

    saved_chars = out_dir / "tokenizer-chars.json"
    if spec == "char":
        if saved_chars.is_file():  # a resumed run must keep its vocabulary
            return CharTokenizer(json.loads(saved_chars.read_text(encoding="utf-8")))
        return CharTokenizer.from_text(text)
    if spec == "gpt2":
        return gpt2()
    if Path(spec).is_file():
        return BPETokenizer.load(spec)
    raise ValueError(
        f"tokenizer={spec!r}: use char, gpt2, or the path of a saved BPE tokenizer file"
    )


def prepare_data(
    config: TrainConfig, out_dir: Path, write: bool = True
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Tokenize the corpus once into out_dir/data/{train,val}.bin and memory-map them.

    With ``write=False`` (the other processes of a distributed run) the files
    written by the main process are only read.

    The split is gptcore.data.train_val_split's: the n-gram baselines of lesson 2
    are measured on exactly this validation text.
    """
    from .data import load_text, train_val_split

    text = load_text(config.data)
    tokenizer = _load_tokenizer(config.tokenizer, text, out_dir)
    vocab = getattr(tokenizer, "n_vocab", None) or tokenizer.vocab_size
    dtype = np.uint16 if vocab < 2**16 else np.uint32
    key = hashlib.sha256(f"{config.tokenizer}\0{len(text)}\0{text[:4096]}".encode()).hexdigest()[
        :12
    ]
    folder = out_dir / "data"
    paths = {s: folder / f"{s}-{key}.bin" for s in ("train", "val")}
    if write and not all(p.is_file() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        train_text, val_text = train_val_split(text)
        for split, part in (("train", train_text), ("val", val_text)):
            ids = np.asarray(tokenizer.encode(part), dtype=dtype)
            tmp = paths[split].with_suffix(".tmp")
            ids.tofile(tmp)
            os.replace(tmp, paths[split])
    if write and config.tokenizer == "char":
        (out_dir / "tokenizer-chars.json").write_text(
            json.dumps(list(tokenizer.chars)), encoding="utf-8"
        )
    arrays = [np.memmap(paths[s], dtype=dtype, mode="r") for s in ("train", "val")]
    return arrays[0], arrays[1], tokenizer


# ----------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> tuple[_Dist, torch.device]:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return _Dist(), pick_device(device_pref)
    import torch.distributed as dist

    d = _Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return d, device


# ----------------------------------------------------------------------- train
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
            fields = [
                "step",
                "loss",
                "val_loss",
                "lr",
                "grad_norm",
                "tokens_per_s",
                "mfu",
                "seconds",
            ]
            new = not self.path.exists()
            with self.path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)


def train(
    config: TrainConfig | None = None,
    *,
    model: nn.Module | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train (or resume) a GPT as described by ``config`` (fields may be passed as keywords).

    Re-running with the same ``out_dir`` continues from its latest checkpoint;
    on the CPU the continued run reproduces the uninterrupted one exactly.
    Under ``torchrun --nproc_per_node N`` each process trains on its share of
    every global batch with DistributedDataParallel.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    dist_info, device = _init_distributed(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~fp32 accuracy, much faster
        torch.backends.cudnn.allow_tf32 = True
    dtype = autocast_dtype(device, config.dtype)
    out_dir = Path(config.out_dir)
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier(dist_info)
    train_data, val_data, tokenizer = (
        prepare_data(config, out_dir) if dist_info.main else (None, None, None)
    )
    _barrier(dist_info)
    if not dist_info.main:
        train_data, val_data, tokenizer = prepare_data(config, out_dir, write=False)
    vocab = getattr(tokenizer, "n_vocab", None) or tokenizer.vocab_size

    torch.manual_seed(config.seed)
    gpt_config = config.model_config(vocab)
    if model is None:
        model = GPT(gpt_config)
    model.to(device)
    block_size = getattr(getattr(model, "config", None), "block_size", gpt_config.block_size)
    optimizer = configure_optimizer(
        model,
        config.lr,
        config.weight_decay,
        (config.beta1, config.beta2),
        fused=device.type == "cuda",
    )
    batch_gen = torch.Generator().manual_seed(config.seed)
    step, history = 0, []

    state = load_checkpoint(out_dir, model, map_location=device) if config.resume else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        batch_gen.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step = state["step"]
        history = state.get("history", [])
    last_good_step = step if state is not None else None

    raw_model = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    run_model = torch.compile(model) if config.compile else model

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    no_sync = model.no_sync if dist_info.world > 1 else None
    tokens_per_step = config.batch_size * config.grad_accum * dist_info.world * block_size
    flops_per_token = (
        raw_model.flops_per_token(block_size) if hasattr(raw_model, "flops_per_token") else None
    )
    peak = peak_flops(device, dtype) if dist_info.main and flops_per_token else None
    logger = _Logger(out_dir / config.log_file if config.log_file and dist_info.main else None)
    logger.rows = list(history)

    def checkpoint(at_step: int, val_loss: float | None) -> None:
        if not dist_info.main:
            return
        save_checkpoint(
            out_dir,
            raw_model,
            {
                "step": at_step,
                "optimizer": optimizer.state_dict(),
                "batch_rng": batch_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "train_config": config.to_dict(),
                "model_config": dataclasses.asdict(gpt_config),
                "val_loss": val_loss,
                "history": logger.rows,
            },
        )

    def evaluate(at_step: int) -> float:
        # A generator of its own, seeded by the step: evaluation never disturbs
        # the training batches, so resumed and uninterrupted runs stay identical.
        gen = torch.Generator().manual_seed(config.seed + 1_000_003 * (at_step + 1))
        return estimate_loss(
            raw_model,
            val_data,
            config.batch_size,
            block_size,
            config.eval_iters,
            gen,
            device,
            autocast,
        )

    bar = None
    if config.progress and dist_info.main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.max_iters, initial=step, desc="train", unit="step", dynamic_ncols=True
        )
    ckpt_every = config.checkpoint_interval or config.eval_interval
    start = time.perf_counter()
    val_loss = state.get("val_loss") if state else None
    window_t, window_steps = time.perf_counter(), 0
    try:
        while step < config.max_iters:
            lr = lr_at(
                step,
                lr=config.lr,
                min_lr=config.min_lr,
                warmup_iters=config.warmup_iters,
                decay_iters=config.decay_iters,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = []
            for _ in range(config.grad_accum):
                # Every process draws the same global batch and keeps its own slice, so N
                # processes see exactly the batch one process with N x batch_size would.
                x, y = get_batch(
                    train_data, config.batch_size * dist_info.world, block_size, batch_gen
                )
                sl = slice(
                    dist_info.rank * config.batch_size, (dist_info.rank + 1) * config.batch_size
                )
                micro.append(
                    (x[sl].to(device, non_blocking=True), y[sl].to(device, non_blocking=True))
                )
            loss, norm = optimization_step(
                run_model, optimizer, micro, config.grad_clip, autocast=autocast, no_sync=no_sync
            )
            if not math.isfinite(loss) or not math.isfinite(norm):
                where = (
                    f"checkpoint at step {last_good_step} kept in {out_dir}"
                    if last_good_step
                    else "no checkpoint was written yet"
                )
                raise TrainingDiverged(
                    f"loss became {loss} at step {step} (gradient norm {norm}); {where}. "
                    "Lower the learning rate (--lr), keep gradient clipping on (--grad_clip 1.0), "
                    "or lengthen the warmup (--warmup_iters)."
                )
            step += 1
            window_steps += 1
            row: dict[str, float] = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm}
            if step % config.log_interval == 0 or step == config.max_iters:
                dt = time.perf_counter() - window_t
                row["tokens_per_s"] = tokens_per_step * window_steps / dt
                if peak and flops_per_token:
                    row["mfu"] = row["tokens_per_s"] * flops_per_token / (peak * dist_info.world)
                window_t, window_steps = time.perf_counter(), 0
            out_of_time = (
                config.max_seconds is not None and time.perf_counter() - start >= config.max_seconds
            )
            if step % config.eval_interval == 0 or step == config.max_iters or out_of_time:
                val_loss = evaluate(step)
                row["val_loss"] = val_loss
            row["seconds"] = time.perf_counter() - start
            if len(row) > 5 or step % config.log_interval == 0:
                if dist_info.main:
                    logger.log(row)
                if callback is not None:
                    callback(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.4f}", **({"val": f"{val_loss:.4f}"} if "val_loss" in row else {})
                )
            if step % ckpt_every == 0 or step == config.max_iters or out_of_time:
                checkpoint(step, val_loss)
                last_good_step = step
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
    _barrier(dist_info)
    return TrainResult(raw_model, step, logger.rows, val_loss, out_dir, tokenizer)


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[GPT, Any, dict[str, Any]]:
    """The trained model (eval mode), its tokenizer and its saved state, from a run directory."""
    from .checkpoint import latest_checkpoint

    run = Path(run_dir)
    folder = latest_checkpoint(run)
    if folder is None:
        raise ValueError(f"{run} has no checkpoint; train first: gptcore train --out {run}")
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**state["model_config"]))
    load_checkpoint(run, model, map_location=device)
    spec = state["train_config"]["tokenizer"]
    if spec == "char":
        from .tokenizer import CharTokenizer

        tokenizer = CharTokenizer(
            json.loads((run / "tokenizer-chars.json").read_text(encoding="utf-8"))
        )
    else:
        tokenizer = _load_tokenizer(spec, "", run)
    return model.to(device).eval(), tokenizer, state


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
