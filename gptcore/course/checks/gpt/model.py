"""Lesson 5, the whole model: gpt (names, tying, initialisation, forward and loss), and
overfit_one_batch."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.config import GPTConfig
from gptcore.model.gpt import GPT

from ..report import Mistakes, call, check, drives, fail, passed, show, type_name
from ..tensors import generator, recognise, seeded
from .blocks import block, layer_norm, mlp
from .common import (
    build,
    check_names,
    check_tied,
    compare,
    describe_config,
    forward,
    load,
    output_tensor,
    perturb,
    random_config,
)

__all__ = ["gpt", "overfit_one_batch"]

# The earlier exercises a GPT is built from, each with its check: a GPT that fails
# because one of them is wrong is told which (report.check's ``uses``).
PARTS = {"LayerNorm": layer_norm, "MLP": mlp, "Block": block}


# ---------------------------------------------------------------- initialisation
def _expected_init(name: str, n_layer: int) -> tuple[str, float, str]:
    """(kind, value, what) for a parameter of a freshly built GPT-2."""
    is_ln = ".ln_" in name or name.startswith(("ln_", "transformer.ln_f"))
    if is_ln:
        return ("const", 1.0 if name.endswith("weight") else 0.0, "LayerNorm")
    if name.endswith("bias"):
        return ("const", 0.0, "bias")
    if name.endswith("c_proj.weight"):
        return ("normal", 0.02 / math.sqrt(2 * n_layer), "c_proj")
    return ("normal", 0.02, "weight")


def _init_hint(name: str, std: float, expected: float, n_layer: int, fan_in: int) -> str:
    def near(a: float, b: float) -> bool:
        return abs(a - b) <= 0.12 * b

    if name.endswith("c_proj.weight"):
        if near(std, 0.02):
            return (
                "you forgot the c_proj scaling at init: GPT-2 draws the weights of every c_proj "
                "(the layers that write into the residual stream) with std 0.02 / sqrt(2 * n_layer)."
            )
        if near(std, 0.02 / math.sqrt(n_layer)):
            return (
                "scale by 1 / sqrt(2 * n_layer), not 1 / sqrt(n_layer): each block adds to the "
                "residual stream twice, once from attention and once from the MLP."
            )
    if "wte" in name or "wpe" in name or name == "lm_head.weight":
        if near(std, 1.0):
            return (
                "nn.Embedding starts at N(0, 1); GPT-2 draws embeddings with std 0.02. Apply your "
                "init to the nn.Embedding modules too."
            )
    if near(std, 1 / math.sqrt(3 * fan_in)):
        return (
            "this is nn.Linear's default init; GPT-2 draws every Linear weight from "
            "N(0, 0.02). Visit every sub-module (for m in self.modules(), or self.apply(fn))."
        )
    if near(std, 0.02 / math.sqrt(2 * n_layer)):
        return "only the c_proj weights are scaled down; the other weights keep std 0.02."
    return f"expected std {expected:.4g}, measured {std:.4g}."


def _check_init(model: nn.Module, config: GPTConfig, where: str) -> None:
    for name, p in model.named_parameters():
        kind, value, what = _expected_init(name, config.n_layer)
        data = p.detach().double()
        if kind == "const":
            if not torch.equal(data, torch.full_like(data, value)):
                fail(
                    f"{where}: at initialisation {name} must be all {value:g}.",
                    "start every bias at zero (nn.init.zeros_); nn.Linear's default bias is random."
                    if what == "bias"
                    else "a LayerNorm starts with weight = 1 and bias = 0; leave it as built.",
                )
            continue
        std, mean = float(data.std()), float(data.mean())
        n = data.numel()
        if abs(std - value) > 0.1 * value or abs(mean) > 0.1 * value + 4 * value / math.sqrt(n):
            fan_in = p.shape[-1] if p.ndim == 2 else 1
            fail(
                f"{where}: at initialisation {name} has mean {mean:.4g} and std {std:.4g}; "
                f"GPT-2 draws it from N(0, {value:.4g}).",
                _init_hint(name, std, value, config.n_layer, fan_in),
            )


def _check_fresh(GPTClass: Callable[..., nn.Module], config: GPTConfig) -> None:
    """A freshly built GPT: GPT-2's names, tied weights, parameter count and initialisation."""
    where = f"GPT({describe_config(config)})"
    model = build(GPTClass, (config,), where)
    ref = GPT(config)
    check_names(model, ref, where, config.bias)
    check_tied(model, where)
    n_got = sum(p.numel() for p in model.parameters())
    if n_got != ref.num_params():
        fail(f"{where} has {n_got:,} parameters; GPT-2's layout has {ref.num_params():,}.")
    _check_init(model, config, where)


# ------------------------------------------------------------- forward and loss
def _gpt_mistakes(ref: GPT, idx: torch.Tensor) -> Mistakes:
    tr = ref.transformer
    t = idx.shape[1]
    pos = torch.arange(t)

    def run(
        x: torch.Tensor,
        ln_f: bool = True,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        for blk in tr.h:
            x = blk(x)
        x = tr.ln_f(x) if ln_f else x
        return (head or ref.lm_head)(x)

    return [
        ("add the position embeddings: x = wte(idx) + wpe(pos), with pos = torch.arange(T).",
         lambda: run(tr.wte(idx))),
        ("apply the final LayerNorm (transformer.ln_f) after the last block, before lm_head.",
         lambda: run(tr.wte(idx) + tr.wpe(pos)[None], ln_f=False)),
        ("return the logits, before any softmax; F.cross_entropy applies log-softmax itself.",
         lambda: torch.softmax(run(tr.wte(idx) + tr.wpe(pos)), -1)),
        ("positions have their own table: wpe(pos), not wte(pos).",
         lambda: run(tr.wte(idx) + tr.wte(pos))),
        ("look up the positions 0..T-1 in wpe, not the token ids: pos = torch.arange(T).",
         lambda: run(tr.wte(idx) + tr.wpe(idx))),
        ("positions start at 0: torch.arange(T).", lambda: run(tr.wte(idx) + tr.wpe(pos + 1))),
        ("run the blocks: for block in self.transformer.h: x = block(x).",
         lambda: tr.ln_f(tr.wte(idx) + tr.wpe(pos)) @ tr.wte.weight.t()),
    ]  # fmt: skip


def _loss_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> Mistakes:
    b, t, v = logits.shape
    flat, tgt = logits.reshape(b * t, v), targets.reshape(b * t)
    return [
        ("the loss is the mean over all B * T positions, not the sum (F.cross_entropy's "
         "default reduction='mean').", lambda: F.cross_entropy(flat, tgt, reduction="sum")),
        ("F.cross_entropy takes logits; do not apply softmax first.",
         lambda: F.cross_entropy(torch.softmax(flat, -1), tgt)),
        ("F.nll_loss expects log-probabilities; use F.cross_entropy on the logits.",
         lambda: F.nll_loss(flat, tgt)),
        ("targets are already shifted (targets[:, t] is the token after idx[:, t]); do not "
         "shift them again.",
         lambda: F.cross_entropy(logits[:, :-1].reshape(-1, v), targets[:, 1:].reshape(-1))),
        ("the loss is the plain mean over all positions.", lambda: F.cross_entropy(flat, tgt) / t),
    ]  # fmt: skip


def _gpt_cases(rng: random.Random, cases: int):
    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    out = [(cfg, 2, 16), (cfg, 3, 5)]
    for _ in range(cases):
        c = random_config(rng)
        out.append((c, rng.randint(1, 3), rng.randint(2, c.block_size)))
    out += [
        (GPTConfig.preset("test", bias=False), 2, 16),
        (GPTConfig.preset("test", n_layer=3, dropout=0.1), 2, 11),
        (GPTConfig.preset("test", n_layer=1, vocab_size=7), 1, 1),
    ]
    return out


def _check_loss(model: nn.Module, ref: GPT, idx: torch.Tensor, targets: torch.Tensor, where_x: str):
    """The logits and loss of ``model(idx, targets)`` against gptcore's."""
    sliced = "" if targets.is_contiguous() else " (a non-contiguous slice, like idx[:, 1:])"
    logits, loss = forward(model, (idx, targets), f"{where_x}, with targets{sliced},")
    exp_logits, exp_loss = ref(idx, targets)
    output_tensor(logits, f"the logits of {where_x} with targets", tuple(exp_logits.shape))
    what = f"the loss of {where_x}"
    if isinstance(loss, float) or not isinstance(loss, torch.Tensor):
        fail(
            f"{what} must be a 0-dim tensor, but it is a {type_name(loss)}.",
            "return the tensor from F.cross_entropy, not loss.item(), so that loss.backward() "
            "works.",
        )
    output_tensor(loss, what, ())
    if not loss.requires_grad:
        fail(
            f"{what} does not require grad, so loss.backward() cannot train the model.",
            "compute it from the logits, without torch.no_grad() or .detach().",
        )
    compare(
        loss, exp_loss, what, atol=1e-4, rtol=1e-4,
        mistakes=_loss_mistakes(exp_logits.detach(), targets),
    )  # fmt: skip


def _check_forward(
    GPTClass: Callable[..., nn.Module], config: GPTConfig, b: int, t: int, gen: torch.Generator
) -> None:
    """gptcore's weights in the learner's GPT: the same logits, and the same loss."""
    where = f"GPT({describe_config(config)})"
    model = build(GPTClass, (config,), where)
    ref = GPT(config)
    check_names(model, ref, where, config.bias)
    check_tied(model, where)
    perturb(ref, gen, scale=0.5)
    load(model, ref.state_dict(), where)
    model.eval()
    ref.eval()
    idx = torch.randint(config.vocab_size, (b, t), generator=gen)
    # a slice, as in model(idx[:, :-1], idx[:, 1:]): not contiguous, so .view(B * T) fails
    targets = torch.randint(config.vocab_size, (b, t + 1), generator=gen)[:, 1:]
    where_x = f"{where} (in eval mode) on idx of shape {(b, t)}"
    with torch.no_grad():
        logits, loss = forward(model, (idx,), f"{where_x}, without targets,")
        exp_logits, _ = ref(idx)
    logits = output_tensor(logits, f"the logits of {where_x}", (b, t, config.vocab_size))
    if loss is not None:
        fail(f"{where_x} without targets must return loss = None, got {show(loss, 60)}.")
    compare(
        logits, exp_logits, f"the logits of {where_x}", atol=1e-4, rtol=1e-4,
        mistakes=_gpt_mistakes(ref, idx),
    )  # fmt: skip
    _check_loss(model, ref, idx, targets, where_x)
    if config.dropout > 0:
        _check_gpt_dropout(model, ref, idx, where)


def _check_gpt_dropout(model: nn.Module, ref: GPT, idx: torch.Tensor, where: str) -> None:
    model.train()
    ref.train()
    with torch.no_grad():
        torch.manual_seed(4321)
        got, _ = forward(model, (idx,), f"{where} in training mode")
        torch.manual_seed(4321)
        expected, _ = ref(idx)
    model.eval()
    ref.eval()
    where_x = f"the logits of {where} in training mode, seeded like gptcore's"
    got = output_tensor(got, where_x, tuple(expected.shape))
    compare(
        got, expected, where_x, atol=1e-4, rtol=1e-4,
        otherwise="apply self.transformer.drop once, to wte(idx) + wpe(pos), before the blocks "
        "(the blocks apply their own dropout).",
    )  # fmt: skip


@check(uses=PARTS)
def gpt(
    GPTClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 1,
) -> None:
    """Check ``GPT(config)``: names, tied weights, parameter count, initialisation,
    ``forward(idx, targets=None) -> (logits, loss)``."""
    rng = random.Random(seed)
    init_configs = [GPTConfig(block_size=64, vocab_size=512, n_layer=8, n_head=4, n_embd=64)]
    init_configs.append(
        GPTConfig(block_size=32, vocab_size=300, n_layer=2, n_head=2, n_embd=64)
    )
    with seeded(seed):
        for config in init_configs:
            _check_fresh(GPTClass, config)
        gen = generator(seed)
        forward_cases = _gpt_cases(rng, cases)
        for config, b, t in forward_cases:
            _check_forward(GPTClass, config, b, t, gen)
    passed("GPT", len(init_configs) + len(forward_cases))


# ------------------------------------------------------------- overfit one batch
def _check_gradients(model: nn.Module, where: str) -> None:
    for name, p in model.named_parameters():
        if p.grad is None or not torch.isfinite(p.grad).all():
            fail(
                f"{where}: after loss.backward(), {name} has "
                f"{'no gradient' if p.grad is None else 'a non-finite gradient'}.",
                "every parameter must take part in forward(), and nothing on the way to the "
                "loss may be detached or computed under no_grad.",
            )



def _check_fresh_loss(
    model: nn.Module, config: GPTConfig, logits: Any, loss: Any, y: torch.Tensor, where: str
) -> float:
    """A fresh model's loss: a 0-dim tensor, the mean cross-entropy of its own logits, and
    about ln(vocab_size), each failure with the hint of its own cause."""
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        fail(f"the loss of {where} must be a 0-dim tensor, got {type_name(loss)}")
    value = float(loss.detach())
    if isinstance(logits, torch.Tensor) and logits.shape == (*y.shape, config.vocab_size):
        flat = logits.detach().reshape(-1, config.vocab_size)
        own = float(F.cross_entropy(flat, y.reshape(-1)))
        if abs(value - own) > 1e-4 * max(1.0, abs(own)):
            known = recognise(loss.detach(), _loss_mistakes(logits.detach(), y), atol=1e-4, rtol=1e-4)
            fail(
                f"the loss of {where} is {value:.4f}, but the mean cross-entropy of its own "
                f"logits against the targets is {own:.4f}.",
                known or "loss = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T)), "
                "on the logits themselves.",
            )
    uniform = math.log(config.vocab_size)
    if abs(value - uniform) > 0.3:
        fail(
            f"a freshly built {where} has loss {value:.3f} on random tokens; a model that "
            f"knows nothing yet should be close to ln({config.vocab_size}) = {uniform:.3f}, "
            "since it spreads its probability evenly.",
            "a larger loss means the initial logits are too large and the model is confidently "
            "wrong: draw weights from N(0, 0.02) (embeddings too) and start biases at zero. Run "
            "checks.gpt(GPT) first."
            if value > uniform
            else "a loss below ln(vocab_size) before any training means the logits already "
            "depend on the targets: check the causal mask (run checks.gpt(GPT) first).",
        )
    return value


def _overfit_hint(model: nn.Module, config: GPTConfig, x: torch.Tensor, y: torch.Tensor) -> str:
    """Why a GPT that passed the first checks cannot learn one batch: unregistered layers
    first (the optimizer never sees them), then a loss that is not the logits' own."""
    with seeded(0):
        expected = sum(p.numel() for p in GPT(config).parameters())
    got = sum(p.numel() for p in model.parameters())
    if got < expected:
        return (
            f"model.parameters() holds {got:,} numbers, but GPT-2's layout has {expected:,}: "
            "some layers are not registered, so the optimizer never sees them. Keep sub-modules "
            "in nn.ModuleList / nn.ModuleDict (not Python lists or dicts)."
        )
    with torch.no_grad():
        logits, loss = model(x, y)
    own = F.cross_entropy(logits.reshape(-1, config.vocab_size), y.reshape(-1))
    if abs(float(loss) - float(own)) > 1e-3 * max(1.0, float(own)):
        known = recognise(loss, _loss_mistakes(logits, y), atol=1e-4, rtol=1e-4)
        return known or (
            f"the model's loss ({float(loss):.3f}) is not the cross-entropy of its own logits "
            f"({float(own):.3f}): loss = F.cross_entropy(logits.reshape(B * T, V), "
            "targets.reshape(B * T)), on the logits themselves."
        )
    return (
        "every parameter is registered, so the forward pass computes something other than "
        "GPT-2's: run checks.gpt(GPT) and fix what it reports (a missing residual connection, "
        "a LayerNorm in the wrong place or a detached tensor keep the loss from falling)."
    )


@drives
def _overfit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """``steps`` AdamW steps (lr 3e-3, no weight decay) of ``model`` on the batch (x, y),
    gptcore.train.train_step spelled out; the last loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    last = float("nan")
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        last = float(loss.detach())
    return last


@check(uses=PARTS)
def overfit_one_batch(
    GPTClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    steps: int = 60,
) -> None:
    """A fresh model's loss is about ln(vocab_size), every parameter gets a gradient, and
    ``steps`` AdamW steps on one batch drive the loss close to zero."""
    configs = [GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=64)]
    configs.append(GPTConfig(block_size=8, vocab_size=97, n_layer=3, n_head=2, n_embd=32))
    with seeded(seed):
        gen = generator(seed)
        for config in configs:
            where = f"GPT({describe_config(config)})"
            model = build(GPTClass, (config,), where)
            model.train()
            x = torch.randint(config.vocab_size, (4, config.block_size), generator=gen)
            y = torch.randint(config.vocab_size, (4, config.block_size), generator=gen)
            logits, loss = forward(model, (x, y), f"{where} on one batch")
            first = _check_fresh_loss(model, config, logits, loss, y, where)
            loss.backward()
            _check_gradients(model, where)
            last = call(_overfit, model, x, y, steps, name="your GPT",
                        where=f"{where}, trained {steps} steps on one batch")  # fmt: skip
            if not isinstance(last, float):
                fail(f"{where}'s loss after {steps} steps is {show(last)}, not a number.")
            if not last < 0.5:
                fail(
                    f"{where} did not overfit one batch: after {steps} AdamW steps (lr 3e-3) on "
                    f"the same 4 x {config.block_size} tokens its loss went from {first:.3f} to "
                    f"{last:.3f}; a correct GPT gets below 0.5.",
                    _overfit_hint(model, config, x, y),
                )
    passed("init loss and overfitting one batch", len(configs))
