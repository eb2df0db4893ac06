"""Lesson 5, the weights: count_params (and the formula it is checked against),
load_hf_weights, and hf_parity (the learner's GPT with GPT-2's weights gives GPT-2's logits)."""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.config import GPTConfig
from gptcore.model.gpt import GPT
from gptcore.model.hf import TRANSPOSED, hf_config

from ..report import Shown, call, check, diagnose, fail, passed, watching, wrong
from ..tensors import generator, seeded
from ..values import check_int, int_problem
from .common import build, check_tied, compare, describe_config, forward, output_tensor
from .model import PARTS

__all__ = ["CONV1D_WEIGHTS", "count_params", "hf_parity", "load_hf_weights", "reference_count"]

# HF's GPT-2 stores these four as Conv1D weights, (in, out): the transpose of nn.Linear's.
CONV1D_WEIGHTS = TRANSPOSED


# ---------------------------------------------------------------- count_params
def reference_count(config: GPTConfig) -> int:
    """GPT-2's parameter count by formula, tied embeddings counted once."""
    v, t, n, c = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    if config.bias:  # per block: c_attn 3C^2 + 3C, c_proj C^2 + C, c_fc 4C^2 + 4C, ...
        return v * c + t * c + n * (12 * c * c + 13 * c) + 2 * c
    return v * c + t * c + n * (12 * c * c + 2 * c) + c


def _count_mistakes(config: GPTConfig) -> list[tuple[str, int]]:
    """(hint, the count a function with that mistake gives)."""
    v, t, c = config.vocab_size, config.block_size, config.n_embd
    l = config.n_layer  # noqa: E741
    n = reference_count(config)
    lin_b = 1 if config.bias else 0  # a Linear layer's bias, per output unit
    ln = (1 + lin_b) * c  # the parameters of one LayerNorm
    replace = dataclasses.replace
    per_block = (n - reference_count(replace(config, n_layer=1))) // (l - 1) if l > 1 else 0
    return [
        ("lm_head is tied to wte: count that matrix once, not twice.", n + v * c),
        ("count the position embeddings too: block_size * n_embd.", n - t * c),
        ("with config.bias=False there are no biases anywhere: not in the Linear layers, and "
         "not in the LayerNorms.", reference_count(replace(config, bias=True))),
        ("with config.bias=True every Linear layer and every LayerNorm has a bias.",
         reference_count(replace(config, bias=False))),
        ("count the LayerNorms: two per block and the final one, each with a weight (and a bias "
         "when config.bias).", n - (2 * l + 1) * ln),
        ("count the final LayerNorm (ln_f).", n - ln),
        ("count both LayerNorms of each block (ln_1 and ln_2).", n - l * ln),
        ("the MLP's hidden layer has 4 * n_embd units: c_fc is n_embd -> 4 * n_embd, c_proj is "
         "4 * n_embd -> n_embd.", n - l * (6 * c * c + 3 * c * lin_b)),
        ("count the attention's output projection (attn.c_proj).", n - l * (c * c + c * lin_b)),
        ("c_attn computes queries, keys and values at once: n_embd -> 3 * n_embd.",
         n - l * (2 * c * c + 2 * c * lin_b)),
        ("lm_head has no bias.", n + v),
        ("count every one of the n_layer blocks.", n - (l - 1) * per_block if l > 1 else -1),
    ]  # fmt: skip


GPT3 = GPTConfig(block_size=2048, vocab_size=50257, n_layer=96, n_head=96, n_embd=12288)


def _count_configs(seed: int, cases: int) -> list[GPTConfig]:
    rng = random.Random(seed)
    configs = [GPTConfig.preset("test"), GPTConfig.preset("baby"), GPTConfig.preset("gpt2")]
    for _ in range(cases):
        configs.append(
            GPTConfig(
                block_size=rng.choice([8, 64, 256, 1024]),
                vocab_size=rng.choice([65, 1000, 50257]),
                n_layer=rng.randint(1, 12),
                n_head=1,
                n_embd=rng.choice([8, 64, 100, 384]),
            )
        )
    configs += [GPTConfig.preset("gpt2-medium"), GPT3]
    configs += [
        GPTConfig.preset("test", bias=False),
        GPTConfig.preset("gpt2", bias=False),
        GPTConfig.preset("gpt2-xl"),
        GPTConfig(block_size=1, vocab_size=1, n_layer=1, n_head=1, n_embd=1),
        GPTConfig(block_size=1, vocab_size=1, n_layer=1, n_head=1, n_embd=1, bias=False),
    ]
    configs += [
        GPTConfig(
            block_size=rng.choice([16, 128]),
            vocab_size=rng.choice([65, 50304]),
            n_layer=rng.randint(1, 8),
            n_head=2,
            n_embd=rng.choice([16, 128, 768]),
            bias=False,
        )
        for _ in range(cases)
    ]
    return configs


class _BuildWatch:
    """Records the parameters any module registers while it is on (see report.watching)."""

    gptcore_in_kernel = True

    def __init__(self) -> None:
        self.built: list[str] = []

    def _record(self, module: nn.Module, name: str, param: Any) -> None:
        self.built.append(name)

    def __enter__(self) -> _BuildWatch:
        self._hook = torch.nn.modules.module.register_module_parameter_registration_hook(
            self._record
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()

    def __getstate__(self) -> dict[str, Any]:
        return {"built": list(self.built)}  # (not the hook: each copy registers its own)


def _call_without_building(count: Callable[[GPTConfig], int], config: GPTConfig, where: str) -> Any:
    """``count(config)``, failing if it created model parameters on the way."""
    with watching(_BuildWatch()) as watch:
        got = call(count, config, name="count_params", where=where)
    built = watch.built
    if built:
        fail(
            f"{where} built model parameters. Count with a formula from the config instead: "
            "GPT-3's 175 billion parameters would need 700 GB of memory."
        )
    return got


@check()
def count_params(
    count: Callable[[GPTConfig], int],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``count_params(config) -> int`` against the formula, without building a model."""
    configs = _count_configs(seed, cases)
    for config in configs:
        where = f"count_params({describe_config(config)})"
        got = _call_without_building(count, config, where)
        if int_problem(got) and isinstance(got, torch.Tensor) and got.ndim == 0:
            fail(f"{where} returned a tensor ({got}); return a plain int, e.g. int(...).")
        if isinstance(got, float):
            fail(f"{where} returned a float ({got}); return an int (use // for division).")
        got = check_int(got, f"the result of {where}")
        expected = reference_count(config)
        if got != expected:
            mistakes = [(h, n) for h, n in _count_mistakes(config) if n != expected]
            wrong(
                where, Shown(f"{expected:,}"), Shown(f"{got:,} ({got - expected:+,})"),
                hint_text=diagnose(got, mistakes),
            )  # fmt: skip
    passed("count_params", len(configs))


# -------------------------------------------------------------- GPT-2 weights
def _hf_model(config: GPTConfig, seed: int) -> nn.Module:
    """A randomly initialised Hugging Face GPT2LMHeadModel, built offline and seeded,
    with every weight perturbed so that no LayerNorm is the identity and no bias is 0."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config(config))
    gen = generator(seed)
    with torch.no_grad():
        for p in hf.parameters():  # the tied lm_head is visited once
            # Weights large enough that the hidden units reach GELU's curved part.
            p.add_((0.1 if p.ndim == 1 else 0.15) * torch.randn(p.shape, generator=gen))
    return hf.eval()


_HF_CONFIGS = [GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=48)]
_HF_EDGE = [
    GPTConfig(block_size=20, vocab_size=211, n_layer=3, n_head=3, n_embd=36),
    GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=1, n_embd=8),
]
_LOAD_HINTS = {
    KeyError: "loop over your model's state_dict() keys and look each one up in "
    "hf_state_dict; skip lm_head.weight (tied to transformer.wte.weight), which a "
    "checkpoint may leave out, and ignore HF keys your model does not have.",
    RuntimeError: "HF's Conv1D stores its weight as (in, out), the transpose of "
    "nn.Linear's (out, in): copy hf_tensor.t() for attn.c_attn, attn.c_proj, "
    "mlp.c_fc and mlp.c_proj weights. Copy inside torch.no_grad().",
}


def _hf_state_dict(config: GPTConfig, variant: str, seed: int) -> OrderedDict[str, torch.Tensor]:
    """A tiny HF GPT-2's state dict, as a checkpoint of ``variant`` holds it."""
    sd = {k: v.detach().clone() for k, v in _hf_model(config, seed).state_dict().items()}
    t = config.block_size
    if variant == "old":  # older transformers versions saved the causal mask as buffers
        mask = torch.ones(t, t, dtype=torch.bool).tril().view(1, 1, t, t)
        for i in range(config.n_layer):
            sd[f"transformer.h.{i}.attn.bias"] = mask.clone()
            sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    elif variant == "no_head":  # a checkpoint may leave out the tied head
        sd.pop("lm_head.weight")
    return OrderedDict(sd)  # as HF's state_dict() returns it


def _wrong_value_hint(k: str, got: torch.Tensor, initial: torch.Tensor, hf: torch.Tensor) -> str:
    """Why ``got``, the learner's value of ``k``, is not HF's ``hf``."""
    if torch.equal(got, initial):
        return f"{k} was not loaded: it still holds its initial value."
    if k.endswith(CONV1D_WEIGHTS) and torch.equal(got, hf):
        return (
            f"{k} is a Conv1D weight in HF's GPT-2, stored (in, out): copy its transpose (.t()). "
            "attn.c_proj is square, so forgetting the transpose there gives no shape error."
        )
    square = got.ndim == 2 and got.shape[0] == got.shape[1]
    if not k.endswith(CONV1D_WEIGHTS) and square and torch.equal(got, hf.t()):
        return f"only the four Conv1D weights are transposed; copy {k} as it is."
    return ""


def _check_loaded(
    model: nn.Module,
    expected: dict[str, torch.Tensor],
    before: dict[str, torch.Tensor],
    sd: dict[str, torch.Tensor],
    snapshot: dict[str, torch.Tensor],
    where: str,
) -> None:
    """Every tensor of ``model`` holds HF's value (``expected``), in memory of its own."""
    got = model.state_dict()
    hf_ptrs = {v.untyped_storage().data_ptr() for v in sd.values()}
    for k, exp in expected.items():
        g = got[k]
        if torch.equal(g, exp):
            if g.untyped_storage().data_ptr() in hf_ptrs:
                fail(
                    f"{where}: {k} shares memory with the HF tensor. Copy the values into your "
                    "parameter (param.copy_(...)) so the two models stay independent."
                )
            continue
        hf = snapshot[k if k in snapshot else "transformer.wte.weight"]
        fail(
            f"{where}: {k} does not hold the value from hf_state_dict.",
            _wrong_value_hint(k, g, before[k], hf),
        )


@check()
def load_hf_weights(
    load: Callable[[nn.Module, dict[str, torch.Tensor]], Any],
    *,
    seed: int = 0,
) -> None:
    """Check ``load_hf_weights(model, hf_state_dict)`` on gptcore's GPT: every weight copied,
    the four Conv1D weights transposed, the input left alone, the tie kept."""
    variants = [(c, "plain") for c in _HF_CONFIGS]
    variants += [(_HF_EDGE[0], "old"), (_HF_EDGE[1], "no_head")]
    keys = {"old": " with extra .attn.bias buffers", "no_head": " without lm_head.weight"}
    with seeded(seed):
        for config, variant in variants:
            sd = _hf_state_dict(config, variant, seed)
            snapshot = {k: v.clone() for k, v in sd.items()}
            torch.manual_seed(seed + 1)
            model = GPT(config)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            expected = GPT.from_hf_state_dict(snapshot, config).state_dict()
            where = f"load_hf_weights(GPT({describe_config(config)}), hf_state_dict{keys.get(variant, '')})"
            # call passes an OrderedDict as it is (it copies only plain lists and dicts), so
            # the check sees whether the learner's model shares memory with HF's tensors.
            call(load, model, sd, name="load_hf_weights", where=where, error_hints=_LOAD_HINTS)
            for k, v in snapshot.items():
                if k not in sd or not torch.equal(sd[k], v):
                    fail(
                        f"{where} changed hf_state_dict[{k!r}]. Leave the input alone: transpose "
                        "a copy (hf_tensor.t() makes a new view) instead of assigning back."
                    )
            check_tied(model, where)
            _check_loaded(model, expected, before, sd, snapshot, where)
    passed("load_hf_weights", len(variants))


@check(uses={**PARTS, "load_hf_weights": load_hf_weights})
def hf_parity(
    GPTClass: Callable[..., nn.Module],
    load: Callable[[nn.Module, dict[str, torch.Tensor]], Any],
    *,
    seed: int = 0,
) -> None:
    """Your GPT with a random tiny HF GPT-2's weights gives HF's logits (max abs diff <= 1e-4)."""
    configs = list(_HF_CONFIGS) + list(_HF_EDGE)
    with seeded(seed):
        gen = generator(seed)
        for config in configs:
            hf = _hf_model(config, seed)
            where = f"GPT({describe_config(config)})"
            model = build(GPTClass, (config,), where)
            call(load, model, hf.state_dict(), name="load_hf_weights",
                 where=f"load_hf_weights({where}, hf.state_dict())")  # fmt: skip
            model.eval()
            for b, t in [(2, config.block_size), (1, max(1, config.block_size // 3))]:
                idx = torch.randint(config.vocab_size, (b, t), generator=gen)
                targets = torch.randint(config.vocab_size, (b, t + 1), generator=gen)[:, 1:]
                with torch.no_grad():
                    logits, loss = forward(model, (idx, targets), f"{where} with HF's weights")
                    expected = hf(idx).logits
                what = f"the logits of {where} with HF's weights, on idx of shape {(b, t)}"
                logits = output_tensor(logits, what, tuple(expected.shape))
                diff = float((logits - expected).abs().max())
                if not diff <= 1e-4:
                    fail(
                        f"{what} differ from HF's GPT2LMHeadModel by up to {diff:.3g} "
                        "(tolerance 1e-4).",
                        "run checks.gpt(GPT) and checks.load_hf_weights(load_hf_weights) first; "
                        "if both pass, compare layer by layer.",
                    )
                exp_loss = F.cross_entropy(expected.reshape(b * t, -1), targets.reshape(b * t))
                output_tensor(loss, f"the loss of {where}", ())
                compare(loss, exp_loss, f"the loss of {where} with HF's weights", atol=1e-4,
                        rtol=1e-4)  # fmt: skip
    passed("logits of your GPT against HF's GPT-2", len(configs))
