"""Checks for lesson 5 (the GPT stack): LayerNorm, MLP, Block, GPT, parameter count, GPT-2 weights.

Each module check builds the learner's module and gptcore's reference
(``gptcore.model.gpt``) with the same configuration, copies the reference's
seeded random weights into the learner's module with ``load_state_dict`` (so
the learner's module must use GPT-2's parameter names), runs both on the same
seeded inputs, and compares types, dtypes, shapes and values. ``cases`` adds
random configurations drawn from ``random.Random(seed)``; ``edge_cases=True``
adds the edges of the contract (no biases, dropout, a single position, a
single layer); the hidden tests use it.

On a wrong answer the message names the input, the size of the difference and,
where a known mistake reproduces the wrong output, which mistake it is (the
mistake is replayed with the reference's own sub-modules and weights).

Every check runs inside ``torch.random.fork_rng``, so it leaves the notebook's
random state as it found it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.gpt import GPT, MLP, Block, GPTConfig, LayerNorm

from . import call, check_int, fail, int_problem, passed, show, type_name

__all__ = [
    "block",
    "count_params",
    "gpt_model",
    "hf_parity",
    "hf_weights",
    "layer_norm",
    "mlp",
    "overfit_one_batch",
    "reference_count",
]

Mistake = tuple[Callable[[], torch.Tensor], str]
CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)


# ------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _rng(seed: int) -> Iterator[None]:
    """Seed torch for the check, and give the notebook its random state back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _cfg(config: GPTConfig) -> str:
    fields = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias")
    return "GPTConfig(" + ", ".join(f"{f}={getattr(config, f)}" for f in fields) + ")"


def _hint(text: str) -> str:
    return f"\nHint: {text}" if text else ""


_INIT_HINTS = {
    AttributeError: "call super().__init__() first, before you assign any parameter or sub-module.",
    TypeError: "check the constructor's arguments against the docstring.",
}


def _build(cls: Any, args: tuple[Any, ...], where: str) -> nn.Module:
    """The learner's module ``cls(*args)``, checked to be an nn.Module."""
    module = call(cls, *args, name=where, where=where, error_hints=_INIT_HINTS)
    if not isinstance(module, nn.Module):
        fail(
            f"{where} must give an nn.Module, but it gave a {type_name(module)}. "
            "Declare the class as `class Name(nn.Module):` and call super().__init__()."
        )
    return module


def _key_hints(missing: list[str], unexpected: list[str], bias: bool) -> str:
    hints = []
    flat = ("wte.", "wpe.", "h.", "ln_f.")
    if any(k.startswith("transformer.") for k in missing) and any(
        k.startswith(flat) for k in unexpected
    ):
        hints.append(
            "put wte, wpe, drop, h and ln_f inside self.transformer = nn.ModuleDict(...), "
            "as GPT-2 does, so the names read transformer.wte.weight and so on."
        )
    elif any(k.startswith("transformer.h.") for k in missing) and not any(
        ".h.0." in k or k.startswith("h.0.") for k in unexpected
    ):
        hints.append(
            "keep the blocks in an nn.ModuleList (transformer.h); in a plain Python list "
            "PyTorch does not see their parameters."
        )
    if "lm_head.bias" in unexpected:
        hints.append("lm_head has no bias: nn.Linear(n_embd, vocab_size, bias=False).")

    def biases(keys: list[str]) -> bool:
        return any(k.endswith(".bias") or k == "bias" for k in keys)

    if not bias and biases(unexpected) and not biases(missing):
        hints.append(
            "with bias=False there are no biases at all: Linear layers get bias=False and "
            "LayerNorm sets self.bias = None."
        )
    if bias and biases(missing) and not biases(unexpected):
        hints.append("with bias=True every Linear layer and every LayerNorm has a bias.")
    return "\n  ".join(hints)


def _check_names(module: nn.Module, ref: nn.Module, where: str, bias: bool = True) -> None:
    """Same parameter names and shapes as gptcore's module, all of them nn.Parameters."""
    got, expected = module.state_dict(), ref.state_dict()
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    for k in missing:
        value = _attribute(module, k)
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            fail(
                f"{where}: {k} is a plain tensor, so PyTorch does not register it: it is not in "
                "state_dict() and an optimizer would never train it."
                + _hint("wrap it: self.weight = nn.Parameter(torch.ones(ndim)).")
            )
    if missing or unexpected:
        fail(
            f"{where} does not have GPT-2's parameter names, so GPT-2's weights cannot be "
            "loaded into it.\n"
            f"  expected: {show(list(expected), 400)}\n"
            f"  missing:    {show(missing, 300)}\n"
            f"  unexpected: {show(unexpected, 300)}"
            + _hint(
                _key_hints(missing, unexpected, bias)
                or "name the attributes exactly as the docstring says."
            )
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            hint = ""
            if tuple(got[k].shape) == tuple(v.shape)[::-1]:
                hint = "nn.Linear(in_features, out_features) stores its weight as (out, in)."
            elif k.endswith(("c_fc.weight", "c_fc.bias", "mlp.c_proj.weight")):
                hint = "the MLP's hidden layer has 4 * n_embd units."
            fail(
                f"{where}: {k} has shape {tuple(got[k].shape)}, but GPT-2's has {tuple(v.shape)}."
                + _hint(hint)
            )
        if got[k].dtype != torch.float32:
            fail(f"{where}: {k} has dtype {got[k].dtype}; create parameters as float32.")
    params = {name for name, _ in module.named_parameters(remove_duplicate=False)}
    ref_params = {name for name, _ in ref.named_parameters(remove_duplicate=False)}
    for k in sorted(ref_params - params):
        fail(
            f"{where}: {k} is not an nn.Parameter, so an optimizer would never train it."
            + _hint("wrap it: self.weight = nn.Parameter(torch.ones(ndim)).")
        )


def _attribute(module: nn.Module, key: str) -> Any:
    """``module.a.b.c`` for the key "a.b.c", or None."""
    obj: Any = module
    for part in key.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            return None
    return obj


def _load(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state)
    except Exception as e:
        fail(f"load_state_dict into {where} failed: {type(e).__name__}: {e}")


def _check_tensor(
    got: Any, where: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        extra = " Return one tensor, not a tuple." if isinstance(got, tuple) else ""
        fail(f"{where} must return a torch.Tensor, but it returned a {type_name(got)}.{extra}")
    if type(got) not in (torch.Tensor, nn.Parameter):
        fail(f"{where} must return a plain torch.Tensor, but it returned a {type_name(got)}.")
    if tuple(got.shape) != tuple(shape):
        fail(f"{where} returned shape {tuple(got.shape)}; expected {tuple(shape)}.")
    if got.dtype != dtype:
        fail(
            f"{where} returned dtype {got.dtype}; expected {dtype}. Avoid converting, and build "
            "new tensors with the input's dtype."
        )
    return got


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(
        torch.allclose(
            a.detach().double(), b.detach().double(), atol=atol, rtol=rtol, equal_nan=True
        )
    )


def _diagnose(got: torch.Tensor, mistakes: list[Mistake], atol: float, rtol: float) -> str:
    """The hints of the known mistakes whose replay gives ``got``, or ""."""
    hints = []
    for compute, hint in mistakes:
        try:
            with torch.no_grad():
                alt = compute()
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
        if _close(got, alt, atol, rtol) and hint not in hints:
            hints.append(hint)
    return "\n  or: ".join(hints)


def _compare(
    got: torch.Tensor,
    expected: torch.Tensor,
    where: str,
    *,
    atol: float,
    rtol: float,
    mistakes: list[Mistake] | None = None,
    otherwise: str = "",
) -> None:
    if _close(got, expected, atol, rtol):
        return
    got_d, exp_d = got.detach().double(), expected.detach().double()
    if torch.isnan(got_d).any():
        where_nan = tuple(torch.nonzero(torch.isnan(got_d))[0].tolist())
        head = f"{where} contains NaN (first at index {where_nan})."
    else:
        diff = (got_d - exp_d).abs()
        i = tuple(int(j) for j in torch.unravel_index(diff.argmax(), diff.shape))
        head = (
            f"{where} differs from gptcore's reference: the largest difference is "
            f"{float(diff.max()):.3g} at index {i} (expected {float(exp_d[i]):.6g}, got "
            f"{float(got_d[i]):.6g}; tolerance {atol:g} + {rtol:g} * |expected|)."
        )
    fail(head + _hint(_diagnose(got, mistakes or [], atol, rtol) or otherwise))


def _run(module: nn.Module, x: torch.Tensor, where: str, name: str) -> Any:
    """``module(x)``, failing if the module changed its input in place."""
    before = x.clone()
    hints = {RuntimeError: "check the shapes in forward(); print them as you go."}
    with torch.no_grad():
        out = call(module, x, name=name, where=where, error_hints=hints)
    if not torch.equal(x, before):
        fail(
            f"{where} changed its input tensor in place. Write x = x + ... instead of x += ..., "
            "since the caller (and autograd) still needs the original."
        )
    return out


def _perturb(module: nn.Module, gen: torch.Generator, scale: float = 1.0) -> None:
    """Random, seeded weights that make every parameter matter: LayerNorm gains away from 1,
    non-zero biases, and matrices large enough that GELU's curve shows."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.2 * scale * noise)
            elif p.ndim == 1:  # LayerNorm gain
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(noise * scale / math.sqrt(p.shape[-1]))


# --------------------------------------------------------------------- LayerNorm
def _ln_mistakes(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> list[Mistake]:
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
        (lambda: norm(-1, correction=1), "use the biased variance: divide by C, not C - 1 "
         "(x.var(dim=-1, unbiased=False, keepdim=True), or ((x - mean) ** 2).mean(-1, keepdim=True))."),
        (lambda: norm(0), "normalise each vector over its own channels: mean and variance over "
         "the last dim (dim=-1, keepdim=True), not over the batch."),
        (lambda: norm(1), "normalise over the last dim (dim=-1), the channels, not over positions."),
        (lambda: norm(all_but_batch), "normalise each position separately, over dim=-1 only, "
         "not over the whole sequence."),
        (lambda: norm(-1, eps_inside=False), "eps goes inside the square root: "
         "(x - mean) / sqrt(var + eps), not / (std + eps)."),
        (lambda: norm(-1, e=0.0), "add eps = 1e-5 to the variance before the square root; "
         "without it a constant vector divides 0 by 0."),
        (lambda: (x - mean) / torch.sqrt(var + eps), "after normalising, scale by self.weight "
         "and shift by self.bias."),
        (lambda: affine(x - mean) / torch.sqrt(var + eps), "normalise first, then scale by "
         "self.weight and add self.bias."),
        (lambda: affine((x - mean) / torch.sqrt(var.sqrt() + eps)), "divide by the standard "
         "deviation sqrt(var + eps), where var is the mean of the squared deviations."),
        (lambda: affine(x / torch.sqrt(var + eps)), "subtract the mean before dividing."),
        (lambda: affine((x - mean) / (var + eps)), "divide by the square root of var + eps."),
    ]  # fmt: skip


def layer_norm(
    LayerNormClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 4,
    edge_cases: bool = False,
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
    if edge_cases:
        inputs += [
            (16, False, (2, 5, 16), "normal"),
            (32, True, (4, 6, 32), "small"),  # variance close to eps: where eps goes matters
            (8, True, (2, 3, 8), "constant"),  # variance 0: eps keeps it finite
            (1, True, (3, 4, 1), "normal"),  # one channel: every output is the bias
            (48, False, (1, 1, 48), "offset"),
            (64, True, (2, 2, 3, 64), "normal"),  # any number of leading dims
        ]
    with _rng(seed):
        gen = torch.Generator().manual_seed(seed)
        for ndim, bias, shape, kind in inputs:
            where = f"LayerNorm({ndim}, bias={bias})"
            ln = _build(LayerNormClass, (ndim, bias), where)
            ref = LayerNorm(ndim, bias=bias)
            _check_names(ln, ref, where, bias)
            state = ln.state_dict()
            if not torch.equal(state["weight"], torch.ones(ndim)) or (
                bias and not torch.equal(state["bias"], torch.zeros(ndim))
            ):
                fail(
                    f"{where} must start as the identity map: weight = torch.ones(ndim) and "
                    "bias = torch.zeros(ndim). Training moves them from there."
                )
            _perturb(ref, gen)
            _load(ln, ref.state_dict(), where)
            ln.eval()
            x = torch.randn(shape, generator=gen)
            if kind == "normal":
                x = 2.0 * x + 0.5
            elif kind == "small":
                x = 3e-3 * x
            elif kind == "constant":
                x = torch.full(shape, 1.5)
            elif kind == "offset":
                x = x + 7.0
            where_x = f"{where} on x of shape {tuple(x.shape)}"
            got = _check_tensor(_run(ln, x, where_x, "LayerNorm"), where_x, shape)
            with torch.no_grad():
                expected = ref(x)
            w, b = ref.weight.detach(), (ref.bias.detach() if ref.bias is not None else None)
            _compare(got, expected, where_x, atol=1e-5, rtol=1e-4, mistakes=_ln_mistakes(x, w, b))
    passed("LayerNorm", len(inputs))


# --------------------------------------------------------------------------- MLP
def _mlp_mistakes(ref: MLP, x: torch.Tensor) -> list[Mistake]:
    fc, proj = ref.c_fc, ref.c_proj
    return [
        (lambda: proj(F.gelu(fc(x))), "GPT-2 uses the tanh approximation of GELU: "
         "nn.GELU(approximate='tanh'); the default nn.GELU() is the exact, erf-based one."),
        (lambda: proj(F.relu(fc(x))), "GPT-2's activation is GELU (tanh approximation), not ReLU."),
        (lambda: proj(fc(x)), "apply the GELU between c_fc and c_proj: without a nonlinearity "
         "two Linear layers collapse into one."),
        (lambda: F.gelu(proj(F.gelu(fc(x), approximate="tanh")), approximate="tanh"),
         "apply GELU once, to the hidden layer only, not to the output of c_proj."),
        (lambda: proj(torch.tanh(fc(x))), "GELU's tanh approximation is "
         "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), not tanh itself."),
        (lambda: x + proj(F.gelu(fc(x), approximate="tanh")), "the MLP returns only "
         "c_proj(gelu(c_fc(x))); the residual connection belongs to the Block."),
    ]  # fmt: skip


def _random_config(rng: random.Random, **overrides: Any) -> GPTConfig:
    n_head = rng.choice([1, 2, 3, 4])
    base = dict(
        block_size=rng.choice([8, 12, 16]),
        vocab_size=rng.choice([11, 32, 65]),
        n_layer=rng.choice([1, 2]),
        n_head=n_head,
        n_embd=n_head * rng.choice([4, 8, 12]),
    )
    return GPTConfig(**{**base, **overrides})


def mlp(
    MLPClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 2,
    edge_cases: bool = False,
) -> None:
    """Check ``MLP(config)``: c_fc (C -> 4C), tanh-GELU, c_proj (4C -> C), dropout at the end."""
    rng = random.Random(seed)
    configs = [GPTConfig.preset("test")] + [_random_config(rng) for _ in range(cases)]
    if edge_cases:
        configs += [
            GPTConfig.preset("test", bias=False),
            GPTConfig.preset("test", n_embd=48, n_head=4, dropout=0.3),
            GPTConfig.preset("test", n_embd=4, n_head=1),
        ]
    with _rng(seed):
        gen = torch.Generator().manual_seed(seed)
        for config in configs:
            where = f"MLP({_cfg(config)})"
            m = _build(MLPClass, (config,), where)
            ref = MLP(config)
            _check_names(m, ref, where, config.bias)
            _perturb(ref, gen, scale=2.0)  # pre-activations of a few units: GELU's curve matters
            _load(m, ref.state_dict(), where)
            m.eval()
            ref.eval()
            c = config.n_embd
            x = torch.randn((2, rng.randint(1, 6), c), generator=gen)
            where_x = f"{where} (in eval mode) on x of shape {tuple(x.shape)}"
            got = _check_tensor(_run(m, x, where_x, "MLP"), where_x, tuple(x.shape))
            with torch.no_grad():
                expected = ref(x)
            _compare(got, expected, where_x, atol=1e-5, rtol=1e-4, mistakes=_mlp_mistakes(ref, x))
            if config.dropout > 0:
                _check_dropout(m, ref, x, where, "MLP",
                               "apply dropout once, to the output of c_proj, with "
                               "nn.Dropout(config.dropout), as GPT-2 does.")  # fmt: skip
    passed("MLP", len(configs))


def _check_dropout(
    module: nn.Module, ref: nn.Module, x: torch.Tensor, where: str, name: str, hint: str
) -> None:
    """In training mode, with the same seed, dropout must drop the same units as GPT-2's."""
    module.train()
    ref.train()
    with torch.no_grad():
        torch.manual_seed(1234)
        got = call(module, x, name=name, where=f"{where} in training mode")
        torch.manual_seed(1234)
        expected = ref(x)
    module.eval()
    ref.eval()
    where_x = f"{where} in training mode (dropout={_dropout_p(ref)}), seeded like gptcore's"
    got = _check_tensor(got, where_x, tuple(expected.shape))
    _compare(got, expected, where_x, atol=1e-5, rtol=1e-4, otherwise=hint)


def _dropout_p(module: nn.Module) -> float:
    return next((m.p for m in module.modules() if isinstance(m, nn.Dropout)), 0.0)


# ------------------------------------------------------------------------- Block
def _block_mistakes(ref: Block, x: torch.Tensor) -> list[Mistake]:
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
        (post_ln, "this is post-LN (the original Transformer: LayerNorm after each residual add). "
         "GPT-2 is pre-LN: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))."),
        (no_residual, "you forgot the residual connections: add each sub-layer's output to its "
         "input, x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))."),
        (only_attn_residual, "the MLP needs its own residual connection: x = x + mlp(ln_2(x))."),
        (only_mlp_residual, "the attention needs its own residual connection: x = x + attn(ln_1(x))."),
        (normed_residual, "the residual stream itself is never normalised: add attn(ln_1(x)) to "
         "x, not to ln_1(x)."),
        (same_ln, "the MLP reads ln_2(x); ln_1 belongs to the attention."),
        (mlp_first, "attention comes first (communicate), then the MLP (compute)."),
        (parallel, "the MLP reads the stream after the attention has been added: two "
         "sequential steps, not two parallel branches of the same input."),
        (no_ln, "normalise the input of each sub-layer: attn(ln_1(x)) and mlp(ln_2(x))."),
        (final_ln, "pre-LN normalises only the sub-layers' inputs; the block's output is the "
         "un-normalised residual stream."),
    ]  # fmt: skip


def block(
    BlockClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 2,
    edge_cases: bool = False,
) -> None:
    """Check ``Block(config)``: pre-LN, x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    rng = random.Random(seed)
    configs = [GPTConfig.preset("test")] + [_random_config(rng) for _ in range(cases)]
    lengths = [9] + [rng.randint(2, c.block_size) for c in configs[1:]]
    if edge_cases:
        configs += [
            GPTConfig.preset("test", bias=False),
            GPTConfig.preset("test", n_embd=24, n_head=3, dropout=0.2),
            GPTConfig.preset("test"),
        ]
        lengths += [16, 7, 1]
    with _rng(seed):
        gen = torch.Generator().manual_seed(seed)
        for config, t in zip(configs, lengths):
            where = f"Block({_cfg(config)})"
            blk = _build(BlockClass, (config,), where)
            ref = Block(config)
            _check_names(blk, ref, where, config.bias)
            _perturb(ref, gen)
            _load(blk, ref.state_dict(), where)
            blk.eval()
            ref.eval()
            x = torch.randn((2, t, config.n_embd), generator=gen)
            where_x = f"{where} (in eval mode) on x of shape {tuple(x.shape)}"
            got = _check_tensor(_run(blk, x, where_x, "Block"), where_x, tuple(x.shape))
            with torch.no_grad():
                expected = ref(x)
            _compare(got, expected, where_x, atol=1e-4, rtol=1e-4, mistakes=_block_mistakes(ref, x))
    passed("Block", len(configs))


# --------------------------------------------------------------------------- GPT
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
                hint = (
                    "start every bias at zero (nn.init.zeros_); nn.Linear's default bias is random."
                    if what == "bias"
                    else "a LayerNorm starts with weight = 1 and bias = 0; leave it as built."
                )
                fail(f"{where}: at initialisation {name} must be all {value:g}.{_hint(hint)}")
            continue
        std, mean = float(data.std()), float(data.mean())
        n = data.numel()
        if abs(std - value) > 0.1 * value or abs(mean) > 0.1 * value + 4 * value / math.sqrt(n):
            fan_in = p.shape[-1] if p.ndim == 2 else 1
            fail(
                f"{where}: at initialisation {name} has mean {mean:.4g} and std {std:.4g}; "
                f"GPT-2 draws it from N(0, {value:.4g}).{_hint(_init_hint(name, std, value, config.n_layer, fan_in))}"
            )


def _gpt_mistakes(ref: GPT, idx: torch.Tensor) -> list[Mistake]:
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
        (lambda: run(tr.wte(idx)), "add the position embeddings: x = wte(idx) + wpe(pos), "
         "with pos = torch.arange(T)."),
        (lambda: run(tr.wte(idx) + tr.wpe(pos)[None], ln_f=False), "apply the final LayerNorm "
         "(transformer.ln_f) after the last block, before lm_head."),
        (lambda: torch.softmax(run(tr.wte(idx) + tr.wpe(pos)), -1), "return the logits, before "
         "any softmax; F.cross_entropy applies log-softmax itself."),
        (lambda: run(tr.wte(idx) + tr.wte(pos)), "positions have their own table: wpe(pos), not "
         "wte(pos)."),
        (lambda: run(tr.wte(idx) + tr.wpe(idx)), "look up the positions 0..T-1 in wpe, not the "
         "token ids: pos = torch.arange(T)."),
        (lambda: run(tr.wte(idx) + tr.wpe(pos + 1)), "positions start at 0: torch.arange(T)."),
        (lambda: tr.ln_f(tr.wte(idx) + tr.wpe(pos)) @ tr.wte.weight.t(), "run the blocks: "
         "for block in self.transformer.h: x = block(x)."),
    ]  # fmt: skip


def _loss_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> list[Mistake]:
    b, t, v = logits.shape
    flat, tgt = logits.reshape(b * t, v), targets.reshape(b * t)
    return [
        (lambda: F.cross_entropy(flat, tgt, reduction="sum"), "the loss is the mean over all "
         "B * T positions, not the sum (F.cross_entropy's default reduction='mean')."),
        (lambda: F.cross_entropy(torch.softmax(flat, -1), tgt), "F.cross_entropy takes logits; "
         "do not apply softmax first."),
        (lambda: F.nll_loss(flat, tgt), "F.nll_loss expects log-probabilities; use "
         "F.cross_entropy on the logits."),
        (lambda: F.cross_entropy(logits[:, :-1].reshape(-1, v), targets[:, 1:].reshape(-1)),
         "targets are already shifted (targets[:, t] is the token after idx[:, t]); do not "
         "shift them again."),
        (lambda: F.cross_entropy(flat, tgt) / t, "the loss is the plain mean over all positions."),
    ]  # fmt: skip


def _forward(model: nn.Module, args: tuple[Any, ...], where: str) -> tuple[Any, Any]:
    hints = {
        RuntimeError: "check the shapes in forward(); F.cross_entropy wants logits (B*T, V) and "
        "targets (B*T,): flatten both with .view / .reshape.",
        IndexError: "position ids must be torch.arange(T), each below block_size.",
    }
    out = call(model, *args, name="forward", where=where, error_hints=hints)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(
            f"{where} must return a pair (logits, loss), but it returned "
            + (
                f"one tensor of shape {tuple(out.shape)}."
                if isinstance(out, torch.Tensor)
                else f"a {type_name(out)}: {show(out, 80)}."
            )
            + _hint("return logits, loss, with loss = None when targets is None.")
        )
    return out


def _gpt_cases(rng: random.Random, cases: int, edge_cases: bool):
    cfg = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    out = [(cfg, 2, 16), (cfg, 3, 5)]
    for _ in range(cases):
        c = _random_config(rng)
        out.append((c, rng.randint(1, 3), rng.randint(2, c.block_size)))
    if edge_cases:
        out += [
            (GPTConfig.preset("test", bias=False), 2, 16),
            (GPTConfig.preset("test", n_layer=3, dropout=0.1), 2, 11),
            (GPTConfig.preset("test", n_layer=1, vocab_size=7), 1, 1),
        ]
    return out


def gpt_model(
    GPTClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    cases: int = 1,
    edge_cases: bool = False,
) -> None:
    """Check ``GPT(config)``: names, tied weights, parameter count, initialisation,
    ``forward(idx, targets=None) -> (logits, loss)``."""
    rng = random.Random(seed)
    init_configs = [GPTConfig(block_size=64, vocab_size=512, n_layer=8, n_head=4, n_embd=64)]
    if edge_cases:
        init_configs.append(
            GPTConfig(block_size=32, vocab_size=300, n_layer=2, n_head=2, n_embd=64)
        )
    with _rng(seed):
        for config in init_configs:
            where = f"GPT({_cfg(config)})"
            model = _build(GPTClass, (config,), where)
            ref = GPT(config)
            _check_names(model, ref, where, config.bias)
            _check_tied(model, where)
            n_got = sum(p.numel() for p in model.parameters())
            if n_got != ref.num_params():
                fail(f"{where} has {n_got:,} parameters; GPT-2's layout has {ref.num_params():,}.")
            _check_init(model, config, where)
        gen = torch.Generator().manual_seed(seed)
        cases_ = _gpt_cases(rng, cases, edge_cases)
        for config, b, t in cases_:
            where = f"GPT({_cfg(config)})"
            model = _build(GPTClass, (config,), where)
            ref = GPT(config)
            _check_names(model, ref, where, config.bias)
            _check_tied(model, where)
            _perturb(ref, gen, scale=0.5)
            _load(model, ref.state_dict(), where)
            model.eval()
            ref.eval()
            idx = torch.randint(config.vocab_size, (b, t), generator=gen)
            targets = torch.randint(config.vocab_size, (b, t), generator=gen)
            where_x = f"{where} (in eval mode) on idx of shape {(b, t)}"
            with torch.no_grad():
                logits, loss = _forward(model, (idx,), f"{where_x}, without targets,")
                exp_logits, _ = ref(idx)
            shape = (b, t, config.vocab_size)
            logits = _check_tensor(logits, f"the logits of {where_x}", shape)
            if loss is not None:
                fail(f"{where_x} without targets must return loss = None, got {show(loss, 60)}.")
            _compare(
                logits, exp_logits, f"the logits of {where_x}", atol=1e-4, rtol=1e-4,
                mistakes=_gpt_mistakes(ref, idx),
            )  # fmt: skip
            logits, loss = _forward(model, (idx, targets), f"{where_x}, with targets,")
            exp_logits, exp_loss = ref(idx, targets)
            _check_tensor(logits, f"the logits of {where_x} with targets", shape)
            what = f"the loss of {where_x}"
            if isinstance(loss, float) or not isinstance(loss, torch.Tensor):
                fail(
                    f"{what} must be a 0-dim tensor, but it is a {type_name(loss)}."
                    + _hint("return the tensor from F.cross_entropy, not loss.item(), so that "
                            "loss.backward() works.")
                )  # fmt: skip
            _check_tensor(loss, what, ())
            if not loss.requires_grad:
                fail(
                    f"{what} does not require grad, so loss.backward() cannot train the model."
                    + _hint("compute it from the logits, without torch.no_grad() or .detach().")
                )
            _compare(
                loss, exp_loss, what, atol=1e-4, rtol=1e-4,
                mistakes=_loss_mistakes(exp_logits.detach(), targets),
            )  # fmt: skip
            if config.dropout > 0:
                _check_gpt_dropout(model, ref, idx, where)
    passed("GPT", len(init_configs) + len(cases_))


def _check_tied(model: nn.Module, where: str) -> None:
    try:
        wte = model.transformer.wte.weight
        head = model.lm_head.weight
    except AttributeError as e:
        fail(f"{where}: {e}")
    if wte is not head:
        fail(
            f"{where}: the weights are not tied. GPT-2 uses one matrix both to embed tokens and "
            "to turn the last hidden states into logits."
            + _hint("after creating both, set self.transformer.wte.weight = self.lm_head.weight.")
        )


def _check_gpt_dropout(model: nn.Module, ref: GPT, idx: torch.Tensor, where: str) -> None:
    model.train()
    ref.train()
    with torch.no_grad():
        torch.manual_seed(4321)
        got, _ = _forward(model, (idx,), f"{where} in training mode")
        torch.manual_seed(4321)
        expected, _ = ref(idx)
    model.eval()
    ref.eval()
    where_x = f"the logits of {where} in training mode, seeded like gptcore's"
    got = _check_tensor(got, where_x, tuple(expected.shape))
    _compare(
        got, expected, where_x, atol=1e-4, rtol=1e-4,
        otherwise="apply self.transformer.drop once, to wte(idx) + wpe(pos), before the blocks "
        "(the blocks apply their own dropout).",
    )  # fmt: skip


# ------------------------------------------------------------- overfit one batch
def overfit_one_batch(
    GPTClass: Callable[..., nn.Module],
    *,
    seed: int = 0,
    steps: int = 60,
    edge_cases: bool = False,
) -> None:
    """A fresh model's loss is about ln(vocab_size), every parameter gets a gradient, and
    ``steps`` AdamW steps on one batch drive the loss close to zero."""
    configs = [GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=64)]
    if edge_cases:
        configs.append(GPTConfig(block_size=8, vocab_size=97, n_layer=3, n_head=2, n_embd=32))
    with _rng(seed):
        gen = torch.Generator().manual_seed(seed)
        for config in configs:
            where = f"GPT({_cfg(config)})"
            model = _build(GPTClass, (config,), where)
            model.train()
            x = torch.randint(config.vocab_size, (4, config.block_size), generator=gen)
            y = torch.randint(config.vocab_size, (4, config.block_size), generator=gen)
            _, loss = _forward(model, (x, y), f"{where} on one batch")
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                fail(f"the loss of {where} must be a 0-dim tensor, got {type_name(loss)}")
            uniform = math.log(config.vocab_size)
            if abs(float(loss.detach()) - uniform) > 0.3:
                fail(
                    f"a freshly built {where} has loss {float(loss.detach()):.3f} on random tokens; a model "
                    f"that knows nothing yet should be close to ln({config.vocab_size}) = "
                    f"{uniform:.3f}, since it spreads its probability evenly."
                    + _hint("a much larger loss means the initial logits are too large and the "
                            "model is confidently wrong: draw weights from N(0, 0.02) (embeddings "
                            "too) and start biases at zero. Run checks.gpt_model(GPT) first.")
                )  # fmt: skip
            loss.backward()
            for name, p in model.named_parameters():
                if p.grad is None or not torch.isfinite(p.grad).all():
                    fail(
                        f"{where}: after loss.backward(), {name} has "
                        f"{'no gradient' if p.grad is None else 'a non-finite gradient'}."
                        + _hint("every parameter must take part in forward(), and nothing on the "
                                "way to the loss may be detached or computed under no_grad.")
                    )  # fmt: skip
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
            first = last = float(loss.detach())
            for _ in range(steps):  # gptcore.train.train_step, spelled out
                optimizer.zero_grad(set_to_none=True)
                _, loss = model(x, y)
                loss.backward()
                optimizer.step()
                last = float(loss.detach())
            if not last < 0.5:
                fail(
                    f"{where} did not overfit one batch: after {steps} AdamW steps (lr 3e-3) on "
                    f"the same 4 x {config.block_size} tokens its loss went from {first:.3f} to "
                    f"{last:.3f}; a correct GPT gets below 0.5."
                    + _hint("check that the model's parameters are registered (nn.ModuleList, "
                            "nn.ModuleDict) so the optimizer sees them.")
                )  # fmt: skip
    passed("init loss and overfitting one batch", len(configs))


# ---------------------------------------------------------------- count_params
def reference_count(config: GPTConfig) -> int:
    """GPT-2's parameter count by formula, tied embeddings counted once."""
    v, t, n, c = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    if config.bias:  # per block: c_attn 3C^2 + 3C, c_proj C^2 + C, c_fc 4C^2 + 4C, ...
        return v * c + t * c + n * (12 * c * c + 13 * c) + 2 * c
    return v * c + t * c + n * (12 * c * c + 2 * c) + c


def _count_mistakes(config: GPTConfig) -> list[tuple[int, str]]:
    v, t, c = config.vocab_size, config.block_size, config.n_embd
    l = config.n_layer  # noqa: E741
    n = reference_count(config)
    lin_b = 1 if config.bias else 0  # a Linear layer's bias, per output unit
    ln = (1 + lin_b) * c  # the parameters of one LayerNorm
    per_block = (n - reference_count(_replace(config, n_layer=1))) // (l - 1) if l > 1 else 0
    return [
        (n + v * c, "lm_head is tied to wte: count that matrix once, not twice."),
        (n - t * c, "count the position embeddings too: block_size * n_embd."),
        (reference_count(_replace(config, bias=True)), "with config.bias=False there are no "
         "biases anywhere: not in the Linear layers, and not in the LayerNorms."),
        (reference_count(_replace(config, bias=False)), "with config.bias=True every Linear "
         "layer and every LayerNorm has a bias."),
        (n - (2 * l + 1) * ln, "count the LayerNorms: two per block and the final one, each "
         "with a weight (and a bias when config.bias)."),
        (n - ln, "count the final LayerNorm (ln_f)."),
        (n - l * ln, "count both LayerNorms of each block (ln_1 and ln_2)."),
        (n - l * (6 * c * c + 3 * c * lin_b), "the MLP's hidden layer has 4 * n_embd units: "
         "c_fc is n_embd -> 4 * n_embd, c_proj is 4 * n_embd -> n_embd."),
        (n - l * (c * c + c * lin_b), "count the attention's output projection (attn.c_proj)."),
        (n - l * (2 * c * c + 2 * c * lin_b), "c_attn computes queries, keys and values at once: "
         "n_embd -> 3 * n_embd."),
        (n + v, "lm_head has no bias."),
        (n - (l - 1) * per_block if l > 1 else -1, "count every one of the n_layer blocks."),
    ]  # fmt: skip


def _replace(config: GPTConfig, **changes: Any) -> GPTConfig:
    return dataclasses.replace(config, **changes)


GPT3 = GPTConfig(block_size=2048, vocab_size=50257, n_layer=96, n_head=96, n_embd=12288)


def count_params(
    count: Callable[[GPTConfig], int],
    *,
    seed: int = 0,
    cases: int = 10,
    edge_cases: bool = False,
) -> None:
    """Check ``count_params(config) -> int`` against the formula, without building a model."""
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
    if edge_cases:
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
    for config in configs:
        where = f"count_params({_cfg(config)})"
        built: list[str] = []

        def record(module: nn.Module, name: str, param: Any, built: list[str] = built) -> None:
            built.append(name)

        hook = torch.nn.modules.module.register_module_parameter_registration_hook(record)
        try:
            got = call(count, config, name="count_params", where=where)
        finally:
            hook.remove()
        if built:
            fail(
                f"{where} built model parameters. Count with a formula from the config instead: "
                "GPT-3's 175 billion parameters would need 700 GB of memory."
            )
        if int_problem(got) and isinstance(got, torch.Tensor) and got.ndim == 0:
            fail(f"{where} returned a tensor ({got}); return a plain int, e.g. int(...).")
        if isinstance(got, float):
            fail(f"{where} returned a float ({got}); return an int (use // for division).")
        got = check_int(got, f"the result of {where}")
        expected = reference_count(config)
        if got != expected:
            hints = [h for n, h in _count_mistakes(config) if n == got and n != expected]
            fail(
                f"{where} is wrong.\n  expected: {expected:,}\n  got:      {got:,} "
                f"({got - expected:+,})" + _hint("\n  or: ".join(dict.fromkeys(hints)))
            )
    passed("count_params", len(configs))


# -------------------------------------------------------------- GPT-2 weights
def _hf_model(config: GPTConfig, seed: int) -> nn.Module:
    """A randomly initialised Hugging Face GPT2LMHeadModel, built offline and seeded,
    with every weight perturbed so that no LayerNorm is the identity and no bias is 0."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config)
    gen = torch.Generator().manual_seed(seed)
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


def hf_weights(
    load: Callable[[nn.Module, dict[str, torch.Tensor]], Any],
    *,
    seed: int = 0,
    edge_cases: bool = False,
) -> None:
    """Check ``load_hf_weights(model, hf_state_dict)`` on gptcore's GPT: every weight copied,
    the four Conv1D weights transposed, the input left alone, the tie kept."""
    variants = [(c, "plain") for c in _HF_CONFIGS]
    if edge_cases:
        variants += [(_HF_EDGE[0], "old"), (_HF_EDGE[1], "no_head")]
    with _rng(seed):
        for config, variant in variants:
            hf = _hf_model(config, seed)
            sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
            t = config.block_size
            if variant == "old":  # older transformers versions saved the causal mask as buffers
                mask = torch.ones(t, t, dtype=torch.bool).tril().view(1, 1, t, t)
                for i in range(config.n_layer):
                    sd[f"transformer.h.{i}.attn.bias"] = mask.clone()
                    sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
            elif variant == "no_head":  # a checkpoint may leave out the tied head
                sd.pop("lm_head.weight")
            sd = OrderedDict(sd)  # as HF's state_dict() returns it
            snapshot = {k: v.clone() for k, v in sd.items()}
            torch.manual_seed(seed + 1)
            model = GPT(config)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            expected = GPT.from_hf_state_dict(snapshot, config).state_dict()
            keys = "with extra .attn.bias buffers" if variant == "old" else (
                "without lm_head.weight" if variant == "no_head" else ""
            )  # fmt: skip
            where = (
                f"load_hf_weights(GPT({_cfg(config)}), hf_state_dict{' ' + keys if keys else ''})"
            )
            hints = {
                KeyError: "loop over your model's state_dict() keys and look each one up in "
                "hf_state_dict; skip lm_head.weight (tied to transformer.wte.weight), which a "
                "checkpoint may leave out, and ignore HF keys your model does not have.",
                RuntimeError: "HF's Conv1D stores its weight as (in, out), the transpose of "
                "nn.Linear's (out, in): copy hf_tensor.t() for attn.c_attn, attn.c_proj, "
                "mlp.c_fc and mlp.c_proj weights. Copy inside torch.no_grad().",
            }
            call(load, model, sd, name="load_hf_weights", where=where, error_hints=hints)
            for k, v in snapshot.items():
                if k not in sd or not torch.equal(sd[k], v):
                    fail(
                        f"{where} changed hf_state_dict[{k!r}]. Leave the input alone: transpose "
                        "a copy (hf_tensor.t() makes a new view) instead of assigning back."
                    )
            _check_tied(model, where)
            got = model.state_dict()
            hf_ptrs = {v.untyped_storage().data_ptr() for v in sd.values()}
            for k, exp in expected.items():
                g = got[k]
                if torch.equal(g, exp):
                    if g.untyped_storage().data_ptr() in hf_ptrs:
                        fail(
                            f"{where}: {k} shares memory with the HF tensor. Copy the values "
                            "into your parameter (param.copy_(...)) so the two models stay "
                            "independent."
                        )
                    continue
                hf_key = k if k in snapshot else "transformer.wte.weight"
                hint = ""
                if torch.equal(g, before[k]):
                    hint = f"{k} was not loaded: it still holds its initial value."
                elif k.endswith(CONV1D_WEIGHTS) and torch.equal(g, snapshot[hf_key]):
                    hint = (
                        f"{k} is a Conv1D weight in HF's GPT-2, stored (in, out): copy "
                        "its transpose (.t()). attn.c_proj is square, so forgetting the "
                        "transpose there gives no shape error."
                    )
                elif (
                    not k.endswith(CONV1D_WEIGHTS)
                    and g.ndim == 2
                    and g.shape[0] == g.shape[1]
                    and torch.equal(g, snapshot[hf_key].t())
                ):
                    hint = f"only the four Conv1D weights are transposed; copy {k} as it is."
                fail(f"{where}: {k} does not hold the value from hf_state_dict." + _hint(hint))
    passed("load_hf_weights", len(variants))


def hf_parity(
    GPTClass: Callable[..., nn.Module],
    load: Callable[[nn.Module, dict[str, torch.Tensor]], Any],
    *,
    seed: int = 0,
    edge_cases: bool = False,
) -> None:
    """Your GPT with a random tiny HF GPT-2's weights gives HF's logits (max abs diff <= 1e-4)."""
    configs = list(_HF_CONFIGS) + (list(_HF_EDGE) if edge_cases else [])
    with _rng(seed):
        gen = torch.Generator().manual_seed(seed)
        for config in configs:
            hf = _hf_model(config, seed)
            where = f"GPT({_cfg(config)})"
            model = _build(GPTClass, (config,), where)
            call(load, model, hf.state_dict(), name="load_hf_weights",
                 where=f"load_hf_weights({where}, hf.state_dict())")  # fmt: skip
            model.eval()
            for b, t in [(2, config.block_size), (1, max(1, config.block_size // 3))]:
                idx = torch.randint(config.vocab_size, (b, t), generator=gen)
                targets = torch.randint(config.vocab_size, (b, t), generator=gen)
                with torch.no_grad():
                    logits, loss = _forward(model, (idx, targets), f"{where} with HF's weights")
                    expected = hf(idx).logits
                what = f"the logits of {where} with HF's weights, on idx of shape {(b, t)}"
                logits = _check_tensor(logits, what, tuple(expected.shape))
                diff = float((logits - expected).abs().max())
                if not diff <= 1e-4:
                    fail(
                        f"{what} differ from HF's GPT2LMHeadModel by up to {diff:.3g} "
                        "(tolerance 1e-4)."
                        + _hint("run checks.gpt_model(GPT) and checks.hf_weights(load_hf_weights) "
                                "first; if both pass, compare layer by layer.")
                    )  # fmt: skip
                exp_loss = F.cross_entropy(expected.reshape(b * t, -1), targets.reshape(b * t))
                _check_tensor(loss, f"the loss of {where}", ())
                _compare(loss, exp_loss, f"the loss of {where} with HF's weights", atol=1e-4,
                         rtol=1e-4)  # fmt: skip
    passed("logits of your GPT against HF's GPT-2", len(configs))
