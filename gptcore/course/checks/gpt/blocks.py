"""Lesson 5, the parts of a block: layer_norm, mlp, block."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.config import GPTConfig
from gptcore.model.gpt import MLP, Block, LayerNorm

from ..attention.common import refusing
from ..report import Mistakes, call, check, fail, passed
from ..tensors import generator, seeded
from .common import (
    build,
    check_names,
    compare,
    describe_config,
    load,
    output_tensor,
    perturb,
    random_config,
    run,
)

__all__ = ["block", "layer_norm", "mlp"]


# --------------------------------------------------------------------- LayerNorm
def _ln_mistakes(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> Mistakes:
    eps = 1e-5
    b0 = b if b is not None else torch.zeros_like(w)

    def affine(z: torch.Tensor) -> torch.Tensor:
        return z * w + b0

    def norm(dims: Any, correction: int = 0, eps_inside: bool = True, e: float = eps):
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, correction=correction)
        if eps_inside:
            return affine((x - mean) / torch.sqrt(var + e))
        return affine((x - mean) / (torch.sqrt(var) + e))

    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, correction=0)
    all_but_batch = tuple(range(1, x.ndim))
    return [
        ("use the biased variance: divide by C, not C - 1 (x.var(dim=-1, unbiased=False, "
         "keepdim=True), or ((x - mean) ** 2).mean(-1, keepdim=True)).", lambda: norm(-1, correction=1)),
        ("normalise each vector over its own channels: mean and variance over the last dim "
         "(dim=-1, keepdim=True), not over the batch.", lambda: norm(0)),
        ("normalise over the last dim (dim=-1), the channels, not over positions.", lambda: norm(1)),
        ("normalise each position separately, over dim=-1 only, not over the whole sequence.",
         lambda: norm(all_but_batch)),
        ("eps goes inside the square root: (x - mean) / sqrt(var + eps), not / (std + eps).",
         lambda: norm(-1, eps_inside=False)),
        ("add eps = 1e-5 to the variance before the square root; without it a constant vector "
         "divides 0 by 0.", lambda: norm(-1, e=0.0)),
        ("after normalising, scale by self.weight and shift by self.bias.",
         lambda: (x - mean) / torch.sqrt(var + eps)),
        ("normalise first, then scale by self.weight and add self.bias.",
         lambda: affine(x - mean) / torch.sqrt(var + eps)),
        ("divide by the standard deviation sqrt(var + eps), where var is the mean of the squared "
         "deviations.", lambda: affine((x - mean) / torch.sqrt(var.sqrt() + eps))),
        ("subtract the mean before dividing.", lambda: affine(x / torch.sqrt(var + eps))),
        ("divide by the square root of var + eps.", lambda: affine((x - mean) / (var + eps))),
    ]  # fmt: skip


_LN_REFUSED = (
    "LayerNorm called torch's layer norm (F.layer_norm, torch.layer_norm or nn.LayerNorm). This "
    "exercise is to build it from tensor operations: mean, variance, sqrt, then weight and bias."
)
_LAYER_NORMS = [(F, "layer_norm"), (torch, "layer_norm"), (nn.LayerNorm, "forward")]


def _ln_input(shape: tuple[int, ...], kind: str, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen)
    if kind == "normal":
        return 2.0 * x + 0.5
    if kind == "small":
        return 3e-3 * x
    if kind == "constant":
        return torch.full(shape, 1.5)
    return x + 7.0  # "offset"


@check()
def layer_norm(
    LayerNormClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 4,
) -> None:
    """Check ``LayerNorm(ndim, bias)`` against gptcore's: parameters, then outputs."""
    rng = random.Random(seed)
    inputs: list[tuple[int, bool, tuple[int, ...], str]] = [
        (16, True, (2, 5, 16), "normal"),
        (8, True, (3, 8), "normal"),
    ]
    inputs += [
        (c, True, (rng.randint(1, 4), rng.randint(1, 9), c), "normal")
        for c in (rng.choice([4, 8, 32, 64, 96]) for _ in range(cases))
    ]
    inputs += [
        (16, False, (2, 5, 16), "normal"),
        (32, True, (4, 6, 32), "small"),  # variance close to eps: where eps goes matters
        (8, True, (2, 3, 8), "constant"),  # variance 0: eps keeps it finite
        (1, True, (3, 4, 1), "normal"),  # one channel: every output is the bias
        (48, False, (1, 1, 48), "offset"),
        (64, True, (2, 2, 3, 64), "normal"),  # any number of leading dims
    ]
    with seeded(seed):
        gen = generator(seed)
        for ndim, bias, shape, kind in inputs:
            where = f"LayerNorm({ndim}, bias={bias})"
            ln = build(LayerNormClass, (ndim, bias), where)
            ref = LayerNorm(ndim, bias=bias)
            check_names(ln, ref, where, bias)
            state = ln.state_dict()
            if not torch.equal(state["weight"], torch.ones(ndim)) or (
                bias and not torch.equal(state["bias"], torch.zeros(ndim))
            ):
                fail(
                    f"{where} must start as the identity map: weight = torch.ones(ndim) and "
                    "bias = torch.zeros(ndim). Training moves them from there."
                )
            perturb(ref, gen)
            load(ln, ref.state_dict(), where)
            ln.eval()
            x = _ln_input(shape, kind, gen)
            where_x = f"{where} on x of shape {tuple(x.shape)}"
            with refusing(_LAYER_NORMS, _LN_REFUSED):  # the docstring's "not nn.LayerNorm"
                got = output_tensor(run(ln, x, where_x), f"the output of {where_x}", shape)
            with torch.no_grad():
                expected = ref(x)
            w, b = ref.weight.detach(), (ref.bias.detach() if ref.bias is not None else None)
            compare(got, expected, where_x, atol=1e-5, rtol=1e-4, mistakes=_ln_mistakes(x, w, b))
    passed("LayerNorm", len(inputs))


def _same_output(
    cls: Callable[..., nn.Module],
    ref_cls: Callable[[GPTConfig], nn.Module],
    config: GPTConfig,
    gen: torch.Generator,
    *,
    length: int,
    atol: float,
    mistakes: Callable[[Any, torch.Tensor], Mistakes],
    scale: float = 1.0,
) -> tuple[nn.Module, nn.Module, torch.Tensor, str]:
    """The learner's ``cls(config)``, loaded with gptcore's perturbed weights, gives the same
    output as gptcore's ``ref_cls(config)`` on x of shape (2, length, n_embd), in eval mode.

    Returns (module, reference, x, the module's description) for further checks.
    """
    where = f"{ref_cls.__name__}({describe_config(config)})"
    module = build(cls, (config,), where)
    ref = ref_cls(config)
    check_names(module, ref, where, config.bias)
    perturb(ref, gen, scale=scale)
    load(module, ref.state_dict(), where)
    module.eval()
    ref.eval()
    x = torch.randn((2, length, config.n_embd), generator=gen)
    where_x = f"{where} (in eval mode) on x of shape {tuple(x.shape)}"
    got = output_tensor(run(module, x, where_x), f"the output of {where_x}", tuple(x.shape))
    with torch.no_grad():
        expected = ref(x)
    compare(got, expected, where_x, atol=atol, rtol=1e-4, mistakes=mistakes(ref, x))
    return module, ref, x, where


# --------------------------------------------------------------------------- MLP
def _mlp_mistakes(ref: MLP, x: torch.Tensor) -> Mistakes:
    fc, proj = ref.c_fc, ref.c_proj
    return [
        ("GPT-2 uses the tanh approximation of GELU: nn.GELU(approximate='tanh'); the default "
         "nn.GELU() is the exact, erf-based one.", lambda: proj(F.gelu(fc(x)))),
        ("GPT-2's activation is GELU (tanh approximation), not ReLU.", lambda: proj(F.relu(fc(x)))),
        ("apply the GELU between c_fc and c_proj: without a nonlinearity two Linear layers "
         "collapse into one.", lambda: proj(fc(x))),
        ("apply GELU once, to the hidden layer only, not to the output of c_proj.",
         lambda: F.gelu(proj(F.gelu(fc(x), approximate="tanh")), approximate="tanh")),
        ("GELU's tanh approximation is 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), "
         "not tanh itself.", lambda: proj(torch.tanh(fc(x)))),
        ("the MLP returns only c_proj(gelu(c_fc(x))); the residual connection belongs to the Block.",
         lambda: x + proj(F.gelu(fc(x), approximate="tanh"))),
    ]  # fmt: skip


@check()
def mlp(
    MLPClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 2,
) -> None:
    """Check ``MLP(config)``: c_fc (C -> 4C), tanh-GELU, c_proj (4C -> C), dropout at the end."""
    rng = random.Random(seed)
    configs = [GPTConfig.preset("test")] + [random_config(rng) for _ in range(cases)]
    configs += [
        GPTConfig.preset("test", bias=False),
        GPTConfig.preset("test", n_embd=48, n_head=4, dropout=0.3),
        GPTConfig.preset("test", n_embd=4, n_head=1),
    ]
    with seeded(seed):
        gen = generator(seed)
        for config in configs:
            m, ref, x, where = _same_output(
                MLPClass, MLP, config, gen, length=rng.randint(1, 6), atol=1e-5,
                mistakes=_mlp_mistakes, scale=2.0,  # pre-activations of a few units: GELU's curve matters
            )  # fmt: skip
            if config.dropout > 0:
                _check_dropout(m, ref, x, where,
                               "apply dropout once, to the output of c_proj, with "
                               "nn.Dropout(config.dropout), as GPT-2 does.")  # fmt: skip
    passed("MLP", len(configs))


def _check_dropout(module: nn.Module, ref: nn.Module, x: torch.Tensor, where: str, hint: str) -> None:
    """In training mode, with the same seed, dropout must drop the same units as GPT-2's."""
    module.train()
    ref.train()
    with torch.no_grad():
        torch.manual_seed(1234)
        got = call(module, x, name=type(module).__name__, where=f"{where} in training mode")
        torch.manual_seed(1234)
        expected = ref(x)
    module.eval()
    ref.eval()
    p = next((m.p for m in ref.modules() if isinstance(m, nn.Dropout)), 0.0)
    where_x = f"{where} in training mode (dropout={p}), seeded like gptcore's"
    got = output_tensor(got, f"the output of {where_x}", tuple(expected.shape))
    compare(got, expected, where_x, atol=1e-5, rtol=1e-4, otherwise=hint)


# ------------------------------------------------------------------------- Block
def _block_mistakes(ref: Block, x: torch.Tensor) -> Mistakes:
    """Wrong wirings of a block, each replayed with gptcore's sub-modules and weights."""
    ln_1, attn, ln_2, mlp_ = ref.ln_1, ref.attn, ref.ln_2, ref.mlp

    def post_ln() -> torch.Tensor:
        h = ln_1(x + attn(x))
        return ln_2(h + mlp_(h))

    def no_residual() -> torch.Tensor:
        return mlp_(ln_2(attn(ln_1(x))))

    def only_attn_residual() -> torch.Tensor:
        h = x + attn(ln_1(x))
        return mlp_(ln_2(h))

    def only_mlp_residual() -> torch.Tensor:
        h = attn(ln_1(x))
        return h + mlp_(ln_2(h))

    def normed_residual() -> torch.Tensor:
        h = ln_1(x)
        h = h + attn(h)
        g = ln_2(h)
        return g + mlp_(g)

    def same_ln() -> torch.Tensor:
        h = x + attn(ln_1(x))
        return h + mlp_(ln_1(h))

    def mlp_first() -> torch.Tensor:
        h = x + mlp_(ln_2(x))
        return h + attn(ln_1(h))

    def parallel() -> torch.Tensor:
        return x + attn(ln_1(x)) + mlp_(ln_2(x))

    def no_ln() -> torch.Tensor:
        h = x + attn(x)
        return h + mlp_(h)

    def final_ln() -> torch.Tensor:
        h = x + attn(ln_1(x))
        return ln_2(h + mlp_(h))

    return [
        ("this is post-LN (the original Transformer: LayerNorm after each residual add). "
         "GPT-2 is pre-LN: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).", post_ln),
        ("you forgot the residual connections: add each sub-layer's output to its input, "
         "x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).", no_residual),
        ("the MLP needs its own residual connection: x = x + mlp(ln_2(x)).", only_attn_residual),
        ("the attention needs its own residual connection: x = x + attn(ln_1(x)).", only_mlp_residual),
        ("the residual stream itself is never normalised: add attn(ln_1(x)) to x, not to "
         "ln_1(x).", normed_residual),
        ("the MLP reads ln_2(x); ln_1 belongs to the attention.", same_ln),
        ("attention comes first (communicate), then the MLP (compute).", mlp_first),
        ("the MLP reads the stream after the attention has been added: two sequential steps, "
         "not two parallel branches of the same input.", parallel),
        ("normalise the input of each sub-layer: attn(ln_1(x)) and mlp(ln_2(x)).", no_ln),
        ("pre-LN normalises only the sub-layers' inputs; the block's output is the "
         "un-normalised residual stream.", final_ln),
    ]  # fmt: skip


@check(uses={"LayerNorm": layer_norm, "MLP": mlp})
def block(
    BlockClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 2,
) -> None:
    """Check ``Block(config)``: pre-LN, x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    rng = random.Random(seed)
    configs = [GPTConfig.preset("test")] + [random_config(rng) for _ in range(cases)]
    lengths = [9] + [rng.randint(2, c.block_size) for c in configs[1:]]
    configs += [
        GPTConfig.preset("test", bias=False),
        GPTConfig.preset("test", n_embd=24, n_head=3, dropout=0.2),
        GPTConfig.preset("test"),
    ]
    lengths += [16, 7, 1]
    with seeded(seed):
        gen = generator(seed)
        for config, t in zip(configs, lengths):
            _same_output(BlockClass, Block, config, gen, length=t, atol=1e-4, mistakes=_block_mistakes)
    passed("Block", len(configs))
